"""The Python API of the three command-line steps: ``rnnrt.convert``, ``rnnrt.build`` and ``rnnrt.verify`` are
documented functions, imported explicitly by ``rnnrt`` without slowing ``import rnnrt``, and the CLI calls them."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import rnnrt
from rnnrt.cli import main
from rnnrt.errors import ConfigError
from tests.models import MODELS
from tests.test_cli import PROTOTXT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_yaml(tmp_path) -> Path:
    return MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")


@pytest.mark.parametrize("name", ["convert", "build", "verify"])
def test_functions_are_documented(name):
    fn = getattr(rnnrt, name)
    assert callable(fn) and name in rnnrt.__all__
    doc = inspect.getdoc(fn)
    for section in ("Args:", "Returns:", "Raises:", "Example::"):
        assert section in doc, (name, section)
    for param in inspect.signature(fn).parameters:
        assert f"{param} (" in doc, (name, param)


def test_import_rnnrt_stays_light():
    code = ("import sys, rnnrt; print(callable(rnnrt.convert), callable(rnnrt.build), callable(rnnrt.verify)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnx', 'pydantic', 'yaml') "
            "or m == 'rnnrt.build.builder'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["True True True", "[]"], proc.stdout + proc.stderr


def test_build_is_the_function_and_its_modules_stay_reachable():
    from rnnrt.build.builder import BuildOptions, parse_range
    from rnnrt.build.inspect import inspect_plan

    assert parse_range("4") == (4, 4, 4) and BuildOptions().precision == "fp32" and callable(inspect_plan)
    assert rnnrt.build is sys.modules["rnnrt.build.api"].build  # `rnnrt.build(...)`, not the subpackage
    assert not hasattr(sys.modules["rnnrt.build"], "__getattr__")  # no compatibility look-ups left


def test_convert_writes_the_config_and_model(tmp_path):
    (tmp_path / "net.prototxt").write_text(PROTOTXT)
    done = rnnrt.convert(tmp_path / "net.prototxt", output=tmp_path / "out", name="tiny", seed=3)
    assert done.config == tmp_path / "out" / "tiny.yaml" and done.model == tmp_path / "out" / "tiny.onnx"
    assert done.config.is_file() and done.model.is_file()
    assert [s.input for s in done.step_graph.states] == ["lstm1.h0", "lstm1.c0"]
    with rnnrt.load(done.config, backend="onnxruntime") as session:
        assert session.batch_size == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="../x"), r"--name '../x' \| Is not a plain name"),
    (dict(seed=-1), r"seed -1 \| Is negative"),
    (dict(batch="sometimes"), r"convert options \| Invalid: batch"),
])
def test_convert_refuses_bad_options_before_writing(kwargs, match, tmp_path):
    (tmp_path / "net.prototxt").write_text(PROTOTXT)
    with pytest.raises(ConfigError, match=match):
        rnnrt.convert(tmp_path / "net.prototxt", output=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_build_checks_before_building(model_yaml, tmp_path):
    with pytest.raises(ConfigError, match=r"--dim T '1:2:99999999999' \| MAX 99999999999 is too large"):
        rnnrt.build(model_yaml, dims={"T": "1:2:99999999999"})
    with pytest.raises(ConfigError, match=r"--batch-profile '8:4:64' \| Is not a valid range"):
        rnnrt.build(model_yaml, batch_profile="8:4:64")
    with pytest.raises(ConfigError, match=r"-o/--output .* \| Is a directory"):
        rnnrt.build(model_yaml, tmp_path)
    assert not model_yaml.with_suffix(".plan").exists()


def test_build_writes_a_plan(model_yaml):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed")
    result = rnnrt.build(model_yaml, trt_module="tensorrt_rtx", batch_profile=(1, 2, 4), runtime_cache=True)
    assert result.plan_path == model_yaml.with_suffix(".plan") and result.plan_path.is_file()
    assert result.profile == (1, 2, 4) and result.manifest.runtime_cache == "model.plan.cache"


def test_verify_compares_two_backends(model_yaml):
    report = rnnrt.verify(model_yaml, "onnxruntime,onnxruntime:opt=disable", steps=4, streams=2,
                          resets=[(2, None)], shared={"data": 0.5})
    assert report.passed and report.to_json()["feed"]["steps"] == 4
    with pytest.raises(ConfigError, match="Is a folder"):
        rnnrt.verify(model_yaml.parent, "onnxruntime")


def test_the_cli_calls_the_functions(model_yaml, tmp_path, monkeypatch, capsys):
    from rnnrt.build import api as build_api  # `rnnrt.build` itself is the function
    from rnnrt.importers import api as convert_api
    from rnnrt.runtime import verify_api

    calls = []

    def record(name):
        def fn(*args, **kwargs):
            calls.append((name, args, kwargs))
            raise ConfigError("recorded")
        return fn

    monkeypatch.setattr(convert_api, "convert", record("convert"))
    monkeypatch.setattr(build_api, "build", record("build"))
    monkeypatch.setattr(verify_api, "verify", record("verify"))
    (tmp_path / "net.prototxt").write_text(PROTOTXT)
    assert main(["convert", str(tmp_path / "net.prototxt"), "-o", str(tmp_path / "o"), "--seed", "2"]) == 2
    assert main(["build", str(model_yaml), "--dim", "T=1:2:4", "--runtime-cache"]) == 2
    assert main(["verify", str(model_yaml), "--shared", "sr=16000", "--dim", "T=8", "--reset-at", "3"]) == 2
    assert [c[0] for c in calls] == ["convert", "build", "verify"]
    assert calls[0][1] == (str(tmp_path / "net.prototxt"), None, str(tmp_path / "o")) and calls[0][2]["seed"] == 2
    assert calls[1][2]["dims"] == {"T": "1:2:4"} and calls[1][2]["runtime_cache"] is True
    assert calls[2][2]["shared"] == {"sr": 16000} and calls[2][2]["dims"] == {"T": 8}
    assert calls[2][2]["resets"] == [(3, None)]
