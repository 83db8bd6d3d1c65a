"""Tests of rnnrt.build: step graphs -> TensorRT plans, built with TensorRT-RTX on CPU.

TensorRT-RTX's builder runs without a GPU, so every graph rnnrt emits is proven to be a valid TensorRT
network here; executing the engines needs a GPU and is not tested in this file.

Set RNNRT_BUILD_TIMES=path.json to record the build time of every golden/realworld engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from rnnrt import trt_compat
from rnnrt.build.builder import BuildOptions, parse_range, plan_from_config, plan_from_onnx
from rnnrt.build.inspect import inspect_plan
from rnnrt.errors import BuildError, ConfigError, EngineError, ModelImportError
from tests.conftest import GOLDEN, REALWORLD, edit_yaml, golden_cases, realworld_loadable
from tests.build.graphs import STATE_IN, STATE_OUT, lstm_model

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed (pip install tensorrt-rtx)")

RTX = BuildOptions(trt_module="tensorrt_rtx")
AXES = {"data": 1, "cont": 1, "lstm1.h0": 0, "lstm1.c0": 0}


def _opts(**kw) -> BuildOptions:
    return BuildOptions(trt_module="tensorrt_rtx", **kw)


def _bindings(result) -> dict:
    return {b.name: b for b in result.bindings}


# ---------------------------------------------------------------------------------------------------
# Hand-built step graphs (see tests/importers/onnx/test_precision.py for the drawings)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize(
    "shape", [dict(), dict(batch="batch"), dict(scan=True, T=8), dict(scan=True, T=8, batch="batch")],
    ids=["cell", "cell-dyn", "scan", "scan-dyn"],
)
def test_hand_built_graphs_build(precision, shape):
    model = lstm_model(head=3, **shape)
    dynamic = shape.get("batch") == "batch"
    options = _opts(precision=precision, batch=(1, 8, 64) if dynamic else None)
    result = plan_from_onnx(model, options, batch_axes=AXES, state_inputs=STATE_IN, state_outputs=STATE_OUT)
    assert len(result.plan) > 1000
    assert result.flavour == "tensorrt_rtx" and result.version == trt.__version__
    b = _bindings(result)
    # Bindings stay fp32 whatever the compute precision (casts at the graph boundary).
    assert {x.dtype for x in b.values()} == {"float32"}
    assert set(b) == {"data", "cont", "lstm1.h0", "lstm1.c0", "prob", "lstm1.hT", "lstm1.cT"}
    if dynamic:
        assert result.profile == (1, 8, 64)
        assert b["lstm1.h0"].shape == (-1, 7)
        assert b["lstm1.h0"].profile == ((1, 7), (8, 7), (64, 7))
        assert b["data"].profile[2] == (shape.get("T", 1), 64, 5)
    else:
        assert result.profile == (1, 1, 1)
        assert b["data"].profile is None
    # The network is inspectable without a GPU; reduced precision shows in its layers.
    reduced = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}[precision]
    outs = " ".join(o for layer in result.layers for o in layer.outputs)
    assert (reduced in outs) if reduced else ("float16" not in outs)
    assert result.engine_layers, "the builder logs its engine layers"
    if precision != "fp32":
        onnx.checker.check_model(result.model, full_check=True)


def test_io_dtype_fp16_makes_fp16_bindings():
    result = plan_from_onnx(
        lstm_model(), _opts(precision="fp16", io_dtype="float16"), state_inputs=STATE_IN, state_outputs=STATE_OUT
    )
    b = _bindings(result)
    assert b["data"].dtype == b["lstm1"].dtype == "float16"
    assert b["lstm1.h0"].dtype == b["lstm1.cT"].dtype == "float32"


def test_state_dtype_fp16_makes_fp16_state():
    result = plan_from_onnx(
        lstm_model(), _opts(precision="fp16", state_dtype="float16"), state_inputs=STATE_IN, state_outputs=STATE_OUT
    )
    b = _bindings(result)
    assert b["lstm1.h0"].dtype == b["lstm1.cT"].dtype == "float16"
    assert b["data"].dtype == "float32"


# Graph with an op TensorRT has no importer for:
#
#   x(2,3) -> Relu ("ok_node") -> r -> NotARealOp ("bad_node") -> y
def _unsupported_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok_node"), helper.make_node("NotARealOp", ["r"], ["y"], name="bad_node")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_parser_rejection_names_node_op_and_message(caplog):
    with caplog.at_level(logging.ERROR, logger="rnnrt.trt"):
        with pytest.raises(BuildError, match=r"ONNX node 'bad_node' \(op 'NotARealOp', node #1\) \| TensorRT's ONNX parser rejected it: .*Plugin not found.*\n.*no importer for op 'NotARealOp'"):
            plan_from_onnx(_unsupported_model(), RTX)
    # TensorRT's own log went through the one Python logger.
    assert any(r.name == "rnnrt.trt" for r in caplog.records)


def test_one_logger_per_process():
    assert trt_compat.get_logger(trt) is trt_compat.get_logger(trt)


def test_dynamic_dim_without_range_is_an_error():
    model = lstm_model(scan=True, T=4)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "time"
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "time"
    with pytest.raises(BuildError, match=r"Input 'data' \| Dim 0 \('time'\) is dynamic and has no range"):
        plan_from_onnx(model, RTX, batch_axes=AXES)
    result = plan_from_onnx(model, _opts(dims={"time": (1, 4, 16)}), batch_axes=AXES)
    assert _bindings(result)["data"].profile == ((1, 1, 5), (4, 1, 5), (16, 1, 5))


def test_batch_range_on_static_graph_is_an_error():
    with pytest.raises(BuildError, match=r"--batch 1:8:64 \| The step graph has a static batch of 1"):
        plan_from_onnx(lstm_model(), _opts(batch=(1, 8, 64)), batch_axes=AXES)


def test_dynamic_batch_defaults_to_1_1_64():
    result = plan_from_onnx(lstm_model(batch="batch"), RTX, batch_axes=AXES)
    assert result.profile == (1, 1, 64)


def test_rtx_targets():
    result = plan_from_onnx(lstm_model(), _opts(targets=("sm80", "8.6")))
    assert len(result.plan) > 1000
    with pytest.raises(BuildError, match=r"(?s)Target 'sm90' \| Is not a compute capability .*Hopper"):
        plan_from_onnx(lstm_model(), _opts(targets=("sm90",)))


def test_timing_cache_is_ignored_by_rtx(tmp_path, caplog):
    # Timing caches are no-ops in TensorRT-RTX (deprecated since 1.2); rnnrt says so instead of
    # writing an empty file. With the `tensorrt` flavour the cache is read and written.
    cache = tmp_path / "timing.cache"
    with caplog.at_level(logging.WARNING, logger="rnnrt.build"):
        plan_from_onnx(lstm_model(), _opts(timing_cache=str(cache)))
    assert not cache.exists()
    assert "Timing cache" in caplog.text and "no-op in TensorRT-RTX" in caplog.text


@pytest.mark.parametrize("text,expected", [("4", (4, 4, 4)), ("1:64", (1, 1, 64)), ("1:8:64", (1, 8, 64))])
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["0:1:2", "8:4:16", "a:b:c", "1:2:3:4", ""])
def test_parse_range_rejects(text):
    with pytest.raises(ConfigError, match="Is not a valid range"):
        parse_range(text)


def test_no_tensorrt_module_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(BuildError, match=r"(?s)No TensorRT Python module could be imported.*pip install tensorrt"):
        plan_from_onnx(lstm_model())


# ---------------------------------------------------------------------------------------------------
# Config + CLI
# ---------------------------------------------------------------------------------------------------


def _save(model: onnx.ModelProto, directory: Path, batch_axis: bool = True) -> Path:
    from rnnrt.ir.config import save_step_graph
    from rnnrt.ir.stepgraph import Continuation, StatePair, StepGraph, TensorSpec

    dims = {vi.name: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    dims.update({vo.name: [d.dim_value or d.dim_param for d in vo.type.tensor_type.shape.dim] for vo in model.graph.output})
    step = StepGraph(
        model=model,
        inputs=[TensorSpec("data", "float32", tuple(dims["data"]), 1), TensorSpec("cont", "float32", tuple(dims["cont"]), 1)],
        outputs=[TensorSpec("lstm1", "float32", tuple(dims["lstm1"]), 1)],
        states=[StatePair(i, o, tuple(dims[i])) for i, o in zip(STATE_IN, STATE_OUT)],
        continuation=Continuation("cont", 1, 0),
    )
    return save_step_graph(step, directory)


def test_plan_from_config_writes_plan_and_manifest_not_the_yaml(tmp_path):
    from rnnrt.ir.manifest import find_engine, read_manifest
    from rnnrt.ir.config import load_config

    yaml_path = _save(lstm_model(scan=True, T=4, batch="batch"), tmp_path)
    before = yaml_path.read_bytes()
    result = plan_from_config(yaml_path, options=_opts(precision="fp16", batch=(2, 4, 8)))
    assert result.plan_path == tmp_path / "model.plan" and result.plan_path.read_bytes() == result.plan
    assert yaml_path.read_bytes() == before  # the config is never rewritten
    m = read_manifest(tmp_path / "model.plan.json")
    assert (m.plan, m.flavour, m.version, m.precision) == ("model.plan", "tensorrt_rtx", trt.__version__, "fp16")
    assert m.profile == [2, 4, 8] and m.runtimes == ["tensorrt_rtx"] and not m.version_compatible
    assert m.graph == "model.plan.onnx" and m.graph_path.is_file()  # the fp16 graph the plan was built from
    assert m.config == "model.yaml" and m.plan_sha256 == hashlib.sha256(result.plan).hexdigest()
    assert m.record["bindings"] and "build_seconds" in m.record
    assert find_engine(load_config(yaml_path), config_path=yaml_path) == m
    assert m.max_batch == 8 and load_config(yaml_path).legacy_engine is None  # readers use the manifest itself
    # Building again from the same config always works (here: another precision, then the first again).
    plan_from_config(yaml_path, options=_opts(precision="fp32", batch=(1, 1, 4)))
    assert read_manifest(tmp_path / "model.plan.json").precision == "fp32"
    plan_from_config(yaml_path, options=_opts(precision="fp16", io_dtype="float16", batch=(2, 4, 8)))
    assert yaml_path.read_bytes() == before


def test_io_fp16_plan_sessions_get_a_retyped_config(tmp_path):
    from rnnrt.ir.config import load_config
    from rnnrt.engines.trt import tensorrt_backend

    yaml_path = _save(lstm_model(), tmp_path)
    plan_from_config(yaml_path, tmp_path / "fp16" / "m.plan", _opts(precision="fp16", io_dtype="float16"))
    cfg = load_config(yaml_path)
    assert cfg.model == "model.onnx" and {t.dtype for t in cfg.inputs} == {"float32"}
    trt_cfg, factory = tensorrt_backend(cfg, tmp_path / "fp16" / "m.plan")
    assert {t.dtype for t in trt_cfg.inputs} == {"float16"} and {s.dtype for s in trt_cfg.state} == {"float32"}
    assert (tmp_path / "fp16" / "m.plan.onnx").is_file()
    plan_from_config(yaml_path, options=RTX)  # the fp32 config builds again


def test_runtime_cache_only_beside_the_plan(tmp_path, capsys):
    from rnnrt.ir.manifest import read_manifest
    from rnnrt.cli import main
    from rnnrt.ir.config import load_config
    from rnnrt.errors import ConfigError

    yaml_path = _save(lstm_model(), tmp_path)
    with pytest.raises(ConfigError, match=r"Runtime cache '/etc/passwd' \| Is not in the plan's folder"):
        plan_from_config(yaml_path, options=_opts(runtime_cache="/etc/passwd"))
    with pytest.raises(ConfigError, match="Is not in the plan's folder"):
        plan_from_config(yaml_path, options=_opts(runtime_cache="../x.cache"))
    assert not (tmp_path / "model.plan").exists()
    assert main(["build", str(yaml_path), "--trt-module", "tensorrt_rtx", "--runtime-cache", "/etc/passwd"]) == 2
    assert "Is not in the plan's folder" in capsys.readouterr().err
    assert main(["build", str(yaml_path), "--trt-module", "tensorrt_rtx", "--runtime-cache"]) == 0
    m = read_manifest(tmp_path / "model.plan.json")
    assert m.runtime_cache == "model.plan.cache" and m.runtime_cache_path == tmp_path / "model.plan.cache"
    # A config written by an older build (engine: section) cannot name a cache outside the plan's folder either.
    from rnnrt.ir.config import save_config
    from rnnrt.engines.trt import tensorrt_backend

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    save_config(load_config(yaml_path).with_session(runtime_cache="/etc/passwd"), legacy / "old.yaml")
    edit_yaml(legacy / "old.yaml", lambda d: d.update(engine={"plan": str(tmp_path / "model.plan"),
                                                              "flavour": "tensorrt_rtx", "version": "1"}))
    (legacy / "model.onnx").write_bytes((tmp_path / "model.onnx").read_bytes())
    with pytest.raises(ConfigError, match="runtime_cache '/etc/passwd' \\| Is not in the plan's folder"):
        tensorrt_backend(load_config(legacy / "old.yaml"), config_path=legacy / "old.yaml")
    # A hand-edited manifest cannot point the engine at another file.
    data = json.loads((tmp_path / "model.plan.json").read_text())
    for bad in ("/etc/passwd", "../elsewhere.cache", "sub/x.cache"):
        (tmp_path / "model.plan.json").write_text(json.dumps({**data, "runtime_cache": bad}))
        with pytest.raises(ConfigError, match="runtime_cache"):
            read_manifest(tmp_path / "model.plan.json")


def test_fp32_means_fp32_unless_tf32_is_asked(tmp_path):
    from rnnrt.build.builder import _configure
    from rnnrt.ir.manifest import read_manifest

    builder = trt.Builder(trt_compat.get_logger(trt))
    for tf32 in (False, True):
        config = builder.create_builder_config()
        assert config.get_flag(trt.BuilderFlag.TF32)  # TensorRT's default
        _configure(trt, builder, config, _opts(tf32=tf32))
        assert config.get_flag(trt.BuilderFlag.TF32) is tf32
    yaml_path = _save(lstm_model(), tmp_path)
    plan_from_config(yaml_path, options=_opts(tf32=True))
    assert read_manifest(tmp_path / "model.plan.json").tf32 is True


def test_version_compatible_refused_by_tensorrt_rtx(tmp_path):
    yaml_path = _save(lstm_model(), tmp_path)
    with pytest.raises(BuildError, match=r"--version-compatible \| tensorrt_rtx .* cannot build version-compatible plans"):
        plan_from_config(yaml_path, options=_opts(version_compatible=True))
    with pytest.raises(BuildError, match=r"--exclude-lean-runtime \| Needs --version-compatible"):
        plan_from_config(yaml_path, options=_opts(exclude_lean_runtime=True))


def test_cli_build_and_inspect(tmp_path, capsys):
    from rnnrt.cli import main

    yaml_path = _save(lstm_model(batch="batch"), tmp_path)
    rc = main(["build", str(yaml_path), "-o", str(tmp_path / "e.plan"), "--batch-profile", "1:8:64", "--trt-module", "tensorrt_rtx", "--layers"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "wrote" in out and "batch 1:8:64" in out and "network layers (" in out and "Layer(Myelin)" in out
    assert "manifest " + str(tmp_path / "e.plan.json") in out and "runs on tensorrt_rtx" in out
    rc = main(["inspect", str(tmp_path / "e.plan")])
    captured = capsys.readouterr()
    assert f"Manifest {str(tmp_path / 'e.plan.json')!r}: tensorrt_rtx" in captured.out and "batch 1:8:64" in captured.out
    if rc != 0:  # no GPU here: deserialization fails, what is known is printed, and the error says why
        assert "Build record (tensorrt_rtx" in captured.out and "lstm1.h0" in captured.out
        assert "Could not be deserialized" in captured.err and "needs an NVIDIA GPU" in captured.err
    else:
        assert "Engine bindings" in captured.out
    # The config's report shows the plan its manifest records (the YAML itself records none).
    plan_from_config(yaml_path, options=_opts(batch=(1, 4, 16)))
    assert main(["inspect", str(yaml_path)]) == 0
    out = capsys.readouterr().out
    assert f"Engine: {tmp_path / 'model.plan'} (tensorrt_rtx {trt.__version__}, fp32, batch 1/4/16)" in out, out
    assert main(["inspect", str(yaml_path), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == {
        "plan": str(tmp_path / "model.plan"), "flavour": "tensorrt_rtx", "version": trt.__version__,
        "precision": "fp32", "io_dtype": "float32", "state_dtype": "float32", "profile": {"min": 1, "opt": 4, "max": 16}}
    # A plan without its manifest is still inspected; the report says the manifest is missing.
    (tmp_path / "e.plan.json").unlink()
    main(["inspect", str(tmp_path / "e.plan")])
    assert "Manifest: none" in capsys.readouterr().out


def test_cli_build_without_tensorrt(tmp_path, capsys, monkeypatch):
    from rnnrt.cli import main

    yaml_path = _save(lstm_model(), tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    assert main(["build", str(yaml_path)]) == 2
    assert "pip install tensorrt" in capsys.readouterr().err


def test_inspect_plan_reports_missing_file(tmp_path):
    with pytest.raises(EngineError, match="Cannot be read"):
        inspect_plan(tmp_path / "nope.plan")


# ---------------------------------------------------------------------------------------------------
# Every golden Caffe case and every BVLC-loadable realworld prototxt: fp32 with the prototxt's batch,
# fp32 with a dynamic batch 1:8:64, and fp16 (on the dynamic graph when the converter can make one).
# Conversions are cached per model; no engine is built twice.
# ---------------------------------------------------------------------------------------------------

_TIMES: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from rnnrt.importers.caffe import convert
    from rnnrt.ir.config import save_step_graph

    cache: dict = {}

    def drop(keep: str | None = None) -> None:
        # The realworld nets' weights are up to 0.6 GB; tests run grouped by model, so only the current
        # model's conversions are kept on disk (a whole module's worth filled a CI disk).
        for key in [k for k in cache if k[0] != keep]:
            if isinstance(cache[key], Path):
                shutil.rmtree(cache[key].parent, ignore_errors=True)
            del cache[key]

    def get(name: str, prototxt: Path, caffemodel: Path | None, batch: str | None):
        key = (name, batch)
        if key not in cache:
            drop(keep=name)
            try:
                step = convert.convert_caffe(prototxt, caffemodel, batch=batch)
                cache[key] = save_step_graph(step, tmp_path_factory.mktemp(f"{name[:20]}-{batch or 'fixed'}"))
            except ModelImportError as err:
                cache[key] = err
        if isinstance(cache[key], ModelImportError) and batch is None:
            raise cache[key]
        return cache[key]  # a dynamic-batch refusal is returned, not raised

    yield get
    drop()
    out = os.environ.get("RNNRT_BUILD_TIMES")
    if out:
        Path(out).write_text(json.dumps(_TIMES, indent=1) + "\n")


def _variant_build(converted, name, prototxt, caffemodel, variant, tmp_path):
    if variant == "fp32":
        yaml_path, options = converted(name, prototxt, caffemodel, None), RTX
    else:
        yaml_path = converted(name, prototxt, caffemodel, "dynamic")
        options = _opts(batch=(1, 8, 64), precision="fp16" if variant == "fp16" else "fp32")
        if isinstance(yaml_path, ModelImportError):
            if variant == "fp32-dyn":
                pytest.skip(f"the converter refuses a dynamic batch for {name!r}: {yaml_path}")
            yaml_path, options = converted(name, prototxt, caffemodel, None), _opts(precision="fp16")
    t0 = time.perf_counter()
    result = plan_from_config(yaml_path, tmp_path / "model.plan", options)
    _TIMES.setdefault(name, {})[variant] = round(time.perf_counter() - t0, 3)
    assert len(result.plan) > 1000
    if variant == "fp32-dyn":
        assert result.profile == (1, 8, 64)
    return result


VARIANTS = ["fp32", "fp32-dyn", "fp16"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", golden_cases())
def test_golden_case_builds(converted, name, variant, tmp_path):
    _variant_build(converted, name, GOLDEN / name / "deploy.prototxt", GOLDEN / name / "weights.caffemodel", variant, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", realworld_loadable())
def test_realworld_prototxt_builds(converted, name, variant, tmp_path):
    _variant_build(converted, name, REALWORLD / name, None, variant, tmp_path)


def test_cli_build_records_runtime_cache_and_load_passes_it(tmp_path, capsys, monkeypatch):
    """The manifest's runtime cache (beside the plan) reaches the engine; a run-time choice overrides it."""
    import rnnrt
    import rnnrt.engines.trt as trt_engine
    from rnnrt.cli import main
    from rnnrt.ir.config import load_config

    yaml_path = _save(lstm_model(), tmp_path)
    assert main(["build", str(yaml_path), "--trt-module", "tensorrt_rtx", "--runtime-cache", str(tmp_path / "rt.cache")]) == 0
    cfg = load_config(yaml_path)
    assert cfg.session.runtime_cache is None and cfg.legacy_engine is None  # the YAML is untouched

    seen = {}

    class Recorder:
        def __init__(self, plan, **kw):
            seen.update(kw, plan=plan)
            raise EngineError("recorded")

    monkeypatch.setattr(trt_engine, "TrtEngine", Recorder)
    with pytest.raises(EngineError, match="recorded"):
        rnnrt.load(yaml_path, backend="tensorrt")
    assert seen["runtime_cache"] == tmp_path / "rt.cache" and seen["plan"] == tmp_path / "model.plan"
    assert seen["flavour"] == ["tensorrt_rtx"]
    elsewhere = tmp_path / "sub" / "mine.cache"
    with pytest.raises(EngineError, match="recorded"):
        rnnrt.load(yaml_path, backend="tensorrt", runtime_cache=elsewhere)
    assert seen["runtime_cache"] == elsewhere


def test_cli_build_verify_runs_verify_after_the_build(tmp_path, capsys):
    """`build --verify` runs ONNX Runtime vs the new plan; without a GPU the plan cannot load: exit 2 with
    the EngineError naming the plan (on a GPU the plan runs and the exit status is verify's)."""
    from rnnrt import cuda
    from rnnrt.cli import main

    yaml_path = _save(lstm_model(batch="batch"), tmp_path)
    rc = main(["build", str(yaml_path), "--batch-profile", "1:2:4", "--trt-module", "tensorrt_rtx", "--verify"])
    captured = capsys.readouterr()
    assert (tmp_path / "model.plan.json").is_file()
    if cuda.available():
        assert rc in (0, 1) and "rnnrt verify" in captured.out
    else:
        assert rc == 2, captured.out + captured.err
        assert f"plan {str(tmp_path / 'model.plan')!r}" in captured.err and "tensorrt_rtx" in captured.err
