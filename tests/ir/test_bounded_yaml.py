"""Hostile YAML and the files a config names: every YAML loader of rnnrt refuses them with a ConfigError.

The three loaders (model config, import config, ONNX override) read through rnnrt.ir.files.read_yaml;
each case runs against all three.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from rnnrt.importers.options import load_import_config
from rnnrt.ir.config import load_config
from rnnrt.errors import ConfigError
from rnnrt.importers.onnx.override import apply_override, load_override
from rnnrt.ir import files
from tests.models import MODELS

REPO = Path(__file__).resolve().parents[2]

LOADERS = {
    "config": (load_config, "Config"),
    "import config": (load_import_config, "Import config"),
    "override": (load_override, "Override"),
}


def _alias_bomb(levels: int = 9, fan: int = 9) -> str:
    """The 'billion laughs': level k is a list of `fan` aliases of level k-1 (fan**levels leaves, ~1 KB)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, levels):
        lines.append(f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * fan)}]")
    lines.append(f"source: *a{levels - 1}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("loader", list(LOADERS))
def test_alias_bomb_is_refused_quickly(tmp_path: Path, loader: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    assert path.stat().st_size < 2000
    load, what = LOADERS[loader]
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"{what} '.*bomb.yaml' \| Expands to more than {files.MAX_YAML_NODES} nodes"):
        load(path)
    assert time.perf_counter() - start < 5


def test_aliases_within_the_budget_still_load(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text("base: &b {x: 1}\nuse: [*b, *b]\n")
    assert files.read_yaml(path) == {"base": {"x": 1}, "use": [{"x": 1}, {"x": 1}]}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_recursive_alias_is_refused(tmp_path: Path, loader: str) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("source: &a [1, *a]\n")
    load, what = LOADERS[loader]
    with pytest.raises(ConfigError, match=rf"{what} '.*loop.yaml' \| Has an alias that refers to itself"):
        load(path)


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_20000_deep_is_a_config_error(tmp_path: Path, loader: str, style: str) -> None:
    path = tmp_path / "deep.yaml"
    depth = 20_000
    if style == "flow":
        path.write_text("source: " + "[" * depth + "]" * depth + "\n")
    else:
        path.write_text("- " * depth + "x\n")  # compact block sequences: a list of a list of ...
    load, what = LOADERS[loader]
    with pytest.raises(ConfigError, match=rf"{what} '.*deep.yaml' \| Nests deeper than {files.MAX_YAML_DEPTH} levels"):
        load(path)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_non_utf8_yaml_names_the_file_and_byte(tmp_path: Path, loader: str) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# config\nsource: {author: Jos\xe9}\n".encode("latin-1"))
    load, what = LOADERS[loader]
    with pytest.raises(ConfigError, match=rf"{what} '.*latin1.yaml' \| Is not UTF-8 text \(byte 29, line 2"):
        load(path)


def test_utf8_with_bom_and_non_ascii_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffsource: {author: José}\n".encode("utf-8"))
    assert files.read_yaml(path) == {"source": {"author": "José"}}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_yaml_path_that_is_a_device_or_folder(tmp_path: Path, loader: str) -> None:
    load, what = LOADERS[loader]
    with pytest.raises(ConfigError, match=rf"{what} '/dev/zero' \| Is a device, not a regular file"):
        load("/dev/zero")
    with pytest.raises(ConfigError, match=rf"{what} '.*' \| Is a folder, not a regular file"):
        load(tmp_path)


def test_oversized_yaml_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:  # sparse: no disk is spent
        f.truncate(files.MAX_YAML_BYTES + 1)
    with pytest.raises(ConfigError, match=rf"Config '.*huge.yaml' \| Is {files.MAX_YAML_BYTES + 1} bytes, more than"):
        load_config(path)


def _point_model_at(cfg_path: Path, target: str) -> None:
    data = yaml.safe_load(cfg_path.read_text())
    data["model"] = target
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_model_dev_zero_is_refused(lstm_yaml: Path) -> None:
    _point_model_at(lstm_yaml, "/dev/zero")
    with pytest.raises(ConfigError, match=r"Model '/dev/zero' \| Is a device, not a regular file"):
        load_config(lstm_yaml)


def _in_thread(fn, timeout: float) -> BaseException | None:
    """Runs fn in a daemon thread; returns what it raised, fails the test if it is still running."""
    box: list = []

    def run() -> None:
        try:
            fn()
            box.append(None)
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            box.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the call blocked (it opened a FIFO nobody writes)"
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_model_fifo_does_not_hang(lstm_yaml: Path) -> None:
    fifo = lstm_yaml.parent / "model.fifo"
    os.mkfifo(fifo)
    _point_model_at(lstm_yaml, "model.fifo")
    err = _in_thread(lambda: load_config(lstm_yaml), timeout=20)
    assert isinstance(err, ConfigError) and "model.fifo' | Is a FIFO, not a regular file" in str(err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_yaml_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    err = _in_thread(lambda: load_override(fifo), timeout=20)
    assert isinstance(err, ConfigError) and "cfg.yaml' | Is a FIFO, not a regular file" in str(err)


def test_override_file_goes_through_the_same_reader(tmp_path: Path) -> None:
    # apply_override reads its file with read_yaml: a bad file fails before the model is looked at.

    step = MODELS["lstm_t1"]().step
    bad = tmp_path / "ov.yaml"
    bad.write_bytes(b"state: \xff\n")
    with pytest.raises(ConfigError, match=r"Override '.*ov.yaml' \| Is not UTF-8"):
        apply_override(step, bad)


@pytest.mark.parametrize("args", [["inspect", "{cfg}"], ["convert", "--config", "{cfg}"]])
def test_cli_reports_bomb_without_traceback(tmp_path: Path, args: list[str]) -> None:
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_alias_bomb())
    proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", *[a.format(cfg=cfg) for a in args]], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(proc.stdout) + len(proc.stderr) < 10_000
    assert "bomb.yaml' | Expands to more than" in proc.stderr
