"""One meaning per flag across the subcommands (issue 19), each with its old spelling's warning where it changed:
``--shared`` a per-step value and ``--set`` a folded constant, one ``--dim`` grammar, ``--json`` on every
subcommand that reports, usage errors as ``rnnrt COMMAND: error:``, an ``.onnx`` given for a config named as
such, and ``export-triton --dim`` that leaves nothing behind when it fails."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rnnrt
from rnnrt.cli import build_parser, main
from rnnrt.errors import ConfigError
from tests.models import MODELS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_yaml(tmp_path) -> Path:
    return MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnrt {argv[0]}: error: "), err
    assert "Traceback" not in err
    return err


# --- --shared (per-step value) and --set (folded constant) ---------------------------------------------------


@pytest.mark.parametrize("argv", [["bench", "m.yaml"], ["verify", "m.yaml"], ["serve", "m.yaml"],
                                  ["export-triton", "m.yaml", "-o", "repo"]])
def test_shared_is_one_grammar_for_a_per_step_value(argv):
    args = build_parser().parse_args(argv + ["--shared", "sr=16000", "--shared", "w=[1, 2.5]"])
    assert args.shared == [("sr", 16000), ("w", [1, 2.5])]
    assert not hasattr(args, "_deprecated")


@pytest.mark.parametrize("command", ["bench", "verify"])
def test_set_in_bench_and_verify_is_a_deprecated_spelling_of_shared(command):
    args = build_parser().parse_args([command, "m.yaml", "--set", "sr=16000", "--shared", "x=1", "--set", "y=2"])
    assert args.shared == [("sr", 16000), ("x", 1), ("y", 2)]
    assert [old for old, _ in args._deprecated] == ["--set"]
    assert "--shared" in args._deprecated[0][1]


def test_set_in_convert_folds_a_constant_and_convert_has_no_shared(capsys):
    args = build_parser().parse_args(["convert", "m.onnx", "--set", "sr=16000"])
    assert args.set_values == ["sr=16000"] and not hasattr(args, "_deprecated")
    err = _error(["convert", "m.onnx", "--shared", "sr=16000"], capsys)
    assert "unrecognized arguments: --shared sr=16000" in err


@pytest.mark.parametrize("value", ["sr", "sr=", "=1", "sr=abc", "sr={\"a\": 1}"])
def test_shared_value_must_be_a_json_number_or_list(value, capsys):
    err = _error(["bench", "m.yaml", "--shared", value], capsys)
    assert "argument --shared" in err and "NAME=VALUE" in err


def test_verify_set_warns_on_stderr_and_holds_the_input_like_shared(model_yaml, tmp_path):
    """The old spelling works for one release: same report as --shared, and a warning on stderr naming --shared."""
    reports = {}
    for flag in ("--set", "--shared"):
        proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", "verify", str(model_yaml), "--backends",
                               "onnxruntime,onnxruntime:opt=disable", "--streams", "2", "--steps", "3",
                               flag, "data=0.25", "--json", "-"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        deprecated = "rnnrt verify --set is deprecated; use --shared" in proc.stderr
        assert deprecated == (flag == "--set"), proc.stderr
        reports[flag] = json.loads(proc.stdout)
    assert reports["--set"]["comparisons"] == reports["--shared"]["comparisons"]


def test_bench_shared_value_is_fed_every_step(model_yaml, monkeypatch, capsys, caplog):
    from rnnrt.runtime.session import Session

    seen = []
    real = Session.step
    monkeypatch.setattr(Session, "step", lambda self, feeds, **kw: seen.append(feeds["data"].copy()) or real(self, feeds, **kw))
    with caplog.at_level(logging.WARNING, logger="rnnrt"):
        assert main(["bench", str(model_yaml), "--streams", "2", "--steps", "2", "--warmup", "0", "--rounds", "1",
                     "--threads", "1", "--set", "data=0.5"]) == 0
    assert len(seen) == 2 and all((x == 0.5).all() and x.shape == (1, 2, 5) for x in seen)
    assert "rnnrt bench --set is deprecated; use --shared" in caplog.text
    err = _error(["bench", str(model_yaml), "--streams", "2", "--shared", "nope=1"], capsys)
    assert "--shared nope | Names no input" in err


# --- one --dim grammar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["bench", "verify"])
def test_dim_range_is_refused_by_name_where_one_size_runs(command, model_yaml, capsys):
    extra = ["--streams", "2"] if command == "bench" else []
    err = _error([command, str(model_yaml), *extra, "--dim", "chunk=1:512:1024"], capsys)
    assert f"--dim 'chunk=1:512:1024' | Is a range; `rnnrt {command}` runs one size" in err
    assert "--dim chunk=N" in err


def test_build_dim_takes_one_size_or_a_range():
    from rnnrt.build.api import dim_range
    from rnnrt.cli.args import parse_dims

    dims = parse_dims(["T=8", "chunk=1:16:256", "U=2:4"], "build", ranges=True)
    assert {n: dim_range(v, f"--dim {n}") for n, v in dims.items()} == {"T": (8, 8, 8), "chunk": (1, 16, 256),
                                                                         "U": (2, 2, 4)}
    with pytest.raises(ConfigError, match=r"--dim 'T' \| Is not NAME=N or NAME=MIN:OPT:MAX"):
        parse_dims(["T"], "build", ranges=True)
    assert parse_dims(["T=8"], "bench", ranges=False) == {"T": 8}


def test_build_dim_and_export_triton_dim_share_the_grammar():
    parser = build_parser()
    for argv in (["build", "m.yaml"], ["export-triton", "m.yaml", "-o", "repo"]):
        assert parser.parse_args(argv + ["--dim", "T=8", "--dim", "U=1:2:3"]).dim == ["T=8", "U=1:2:3"]


# --- --json on every subcommand that reports -----------------------------------------------------------------


def test_inspect_json(model_yaml, tmp_path, capsys):
    assert main(["inspect", str(model_yaml), "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "rnnrt.inspect/1" and data["kind"] == "config"
    assert [t["name"] for t in data["inputs"]] == ["data", "cont"] and data["continuation"]["input"] == "cont"
    assert len(data["state"]) == 2 and data["nodes"] == sum(data["ops"].values()) > 0
    out = tmp_path / "inspect.json"
    assert main(["inspect", str(model_yaml), "--json", str(out)]) == 0
    assert "Continuation" in capsys.readouterr().out  # the text is still printed
    assert json.loads(out.read_text()) == data


def test_bench_json(model_yaml, capsys):
    assert main(["bench", str(model_yaml), "--streams", "3", "--steps", "2", "--warmup", "0", "--rounds", "2",
                 "--threads", "1", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "rnnrt.bench/1" and data["batch"] == 3 and data["steps"] == 2
    assert len(data["round_medians_us"]) == 2 and 0 < data["p10_us"] <= data["p99_us"]


def test_json_target_is_checked_before_any_work(model_yaml, tmp_path, capsys):
    for argv in (["inspect", str(model_yaml)], ["bench", str(model_yaml), "--streams", "2"],
                 ["verify", str(model_yaml)], ["build", str(model_yaml)]):
        err = _error(argv + ["--json", str(tmp_path / "missing" / "r.json")], capsys)
        assert "--json" in err and "does not exist" in err
    assert not (tmp_path / "m" / "model.plan").exists()


def test_build_json(model_yaml, tmp_path, capsys):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed")
    out = tmp_path / "build.json"
    assert main(["build", str(model_yaml), "--trt-module", "tensorrt_rtx", "--batch-profile", "1:2:4",
                 "--json", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["schema"] == "rnnrt.build/1" and data["profile"] == [1, 2, 4] and data["flavour"] == "tensorrt_rtx"
    assert Path(data["plan"]).is_file() and {b["name"] for b in data["bindings"]} >= {"data"}


# --- usage errors as `rnnrt COMMAND: error:` --------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["run", "m.yaml", "--feed", "f.npz", "--bogus"], "unrecognized arguments: --bogus"),
    (["bench", "m.yaml", "--streams", "x"], "argument --streams: 'x' is not an integer"),
    (["verify"], "the following arguments are required: config"),
    (["inspect", "a", "b"], "unrecognized arguments: b"),
])
def test_usage_errors_name_the_subcommand(argv, message, capsys):
    err = _error(argv, capsys)
    assert err.splitlines()[0] == f"rnnrt {argv[0]}: error: {message}"
    assert err.splitlines()[1].startswith(f"usage: rnnrt {argv[0]} ")


def test_usage_error_is_printed_as_readme_shows_it():
    readme = (REPO / "README.md").read_text()
    m = re.search(r"```console\n\$ (rnnrt [^\n]+)\n(rnnrt [^\n]+: error: [^\n]+)\n", readme)
    assert m, "README's Command line section shows a bad flag's message"
    proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", *m.group(1).split()[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.splitlines()[0] == m.group(2)


# --- an .onnx where a model config is expected -------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["bench", "{x}", "--streams", "2"], ["run", "{x}", "--feed", "f.npz", "-o", "o.npz"],
                                  ["verify", "{x}"], ["inspect", "{x}"], ["export-triton", "{x}", "-o", "repo"],
                                  ["build", "{x}"]])
def test_an_onnx_model_given_for_a_config_is_named_as_such(argv, model_yaml, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    onnx_path = str(model_yaml.with_suffix(".onnx"))
    before = _tree(tmp_path)
    err = _error([a.replace("{x}", onnx_path) for a in argv], capsys)
    assert f"{onnx_path!r} | Is an ONNX model, not an rnnrt model config" in err and "rnnrt convert" in err
    assert "UTF-8" not in err
    assert _tree(tmp_path) == before


def test_load_and_serve_name_an_onnx_model(model_yaml, capsys):
    with pytest.raises(ConfigError, match="Is an ONNX model, not an rnnrt model config.\nNote: Run `rnnrt convert"):
        rnnrt.load(model_yaml.with_suffix(".onnx"))
    from rnnrt.serve.server import serve

    with pytest.raises(ConfigError, match="Is an ONNX model"):
        serve([model_yaml.with_suffix(".onnx")], tritonserver="/nonexistent/tritonserver")


# --- export-triton: --dim, nothing left behind, --trt-module in its hint ------------------------------------------


def test_export_triton_failure_leaves_no_repository(model_yaml, tmp_path, monkeypatch):
    from rnnrt.serve import triton
    from rnnrt.serve.triton import export

    def broken(*args, **kwargs):  # the last file of the entry: everything else is written by then
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_to_text", broken)
    repo = tmp_path / "new" / "repo"
    with pytest.raises(OSError):
        triton.export_triton(model_yaml, repo, engine="onnx", name="lm")
    assert not (tmp_path / "new").exists()
    # An existing repository keeps what it had: no half-written model, no staging folder.
    (tmp_path / "kept" / "other").mkdir(parents=True)
    with pytest.raises(OSError):
        triton.export_triton(model_yaml, tmp_path / "kept", engine="onnx", name="lm")
    assert _tree(tmp_path / "kept") == {"other"}


def test_export_triton_replaces_one_version_and_keeps_the_others(model_yaml, tmp_path):
    from rnnrt.serve.triton import export_triton

    export_triton(model_yaml, tmp_path / "repo", engine="onnx", name="lm", version=1)
    export_triton(model_yaml, tmp_path / "repo", engine="onnx", name="lm", version=2)
    export_triton(model_yaml, tmp_path / "repo", engine="onnx", name="lm", version=2)
    assert _tree(tmp_path / "repo") == {"lm", "lm/config.pbtxt", "lm/1", "lm/1/model.onnx", "lm/2", "lm/2/model.onnx"}


def test_export_triton_dim_is_checked_before_writing(model_yaml, tmp_path, capsys):
    err = _error(["export-triton", str(model_yaml), "-o", str(tmp_path / "repo"), "--engine", "onnx",
                  "--dim", "chunk=0:1:2"], capsys)
    assert "--dim chunk '0:1:2' | Is not a valid range" in err
    assert not (tmp_path / "repo").exists()


def test_export_triton_plan_passes_dim_and_names_trt_module(model_yaml, tmp_path, monkeypatch, caplog, capsys):
    """The default engine rebuilds the plan around Triton's layout: --dim reaches that build, and a TensorRT-RTX plan
    gets a hint that names the real flag; the failing build leaves no repository."""
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed")
    from rnnrt.build import builder  # (`import rnnrt.build.builder` would reach the function rnnrt.build)

    assert main(["build", str(model_yaml), "--trt-module", "tensorrt_rtx", "--batch-profile", "1:2:4"]) == 0
    seen = {}

    def refuse(model, options, **kwargs):
        seen["dims"] = dict(options.dims)
        raise rnnrt.BuildError("refused in the test")

    monkeypatch.setattr(builder, "plan_from_onnx", refuse)
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="rnnrt"):
        err = _error(["export-triton", str(model_yaml), "-o", str(tmp_path / "repo"), "--dim", "chunk=512"], capsys)
    assert "refused in the test" in err and seen["dims"] == {"chunk": (512, 512, 512)}
    assert "Rebuild with --trt-module tensorrt for Triton" in caplog.text
    assert not (tmp_path / "repo").exists()
