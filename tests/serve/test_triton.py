"""rnnrt export-triton: config.pbtxt parses with Triton's own protobuf, names/dtypes/dims match the exported
model, and the wrapped graph driven the way Triton drives it (START, implicit state) equals a Session."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import rnnrt
import rnnrt.ir.config
from rnnrt.cli import main as cli_main
from rnnrt.errors import ConfigError
from rnnrt.serve.triton import TRITON_DTYPES, export_triton

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")
from google.protobuf import text_format  # noqa: E402

CASES = ["a_lstm_stream_t1n1", "c_lstm_stacked_ip_softmax", "e_lstm_static_input", "i_embed_lstm_lm_stream"]
_ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
                   onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64"}


def _parse(model_dir):
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _graph_tensors(path):
    model = onnx.load(str(path))
    out = {}
    for vi in list(model.graph.input) + list(model.graph.output):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out[vi.name] = (_ONNX_TO_TRITON[t.elem_type], dims)
    return out


def _check_names(mc, tensors):
    """Every tensor the config names exists in the model with its dtype and (batch-first) dims."""
    batch = [-1] if mc.max_batch_size > 0 else []
    named = [(t.name, t.data_type, list(t.dims)) for t in list(mc.input) + list(mc.output)]
    for s in mc.sequence_batching.state:
        named += [(s.input_name, s.data_type, list(s.dims)), (s.output_name, s.data_type, list(s.dims))]
        (init,) = s.initial_state
        assert init.zero_data and list(init.dims) == list(s.dims) and init.data_type == s.data_type
    for c in mc.sequence_batching.control_input:
        named.append((c.name, model_config_pb2.TYPE_FP32, [1]))
    for name, dtype, dims in named:
        assert name in tensors, f"{name!r} is not a tensor of the exported model {sorted(tensors)}"
        want_type, want_dims = tensors[name]
        assert model_config_pb2.DataType.Name(dtype) == want_type, name
        assert batch + dims == want_dims, f"{name}: config {batch + dims} vs model {want_dims}"


@pytest.mark.parametrize("name", CASES)
def test_config_parses_and_matches_model(dynamic, tmp_path, name):
    path = dynamic(name)
    model_dir = export_triton(path, tmp_path / "repo", engine="onnx", name=name)
    mc = _parse(model_dir)
    assert mc.name == name and mc.backend == "onnxruntime" and mc.max_batch_size == 64
    sb = mc.sequence_batching
    assert sb.HasField("direct")
    (ctrl,) = sb.control_input
    (c,) = ctrl.control
    assert c.kind == model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START
    assert list(c.fp32_false_true) == [1.0, 0.0]
    cfg = rnnrt.ir.config.load_config(path)
    assert ctrl.name == cfg.continuation.input
    assert [(s.input_name, s.output_name) for s in sb.state] == [(s.input, s.output) for s in cfg.state]
    assert {t.name for t in mc.input} == {t.name for t in cfg.inputs} - {cfg.continuation.input}
    _check_names(mc, _graph_tensors(model_dir / "1" / "model.onnx"))


@pytest.mark.parametrize("name", ["a_lstm_stream_t1n1", "c_lstm_stacked_ip_softmax", "e_lstm_static_input"])
def test_wrapped_graph_driven_like_triton_equals_session(dynamic, tmp_path, name):
    """Requests of 3 sequences (START on the first of each, implicit state fed back by name) through the
    exported graph equal a 3-slot Session with resets at the sequence starts."""
    import onnxruntime as ort

    path = dynamic(name)
    cfg = rnnrt.ir.config.load_config(path)
    model_dir = export_triton(path, tmp_path / "repo", engine="onnx")
    sess = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    B, cont = 3, cfg.continuation.input
    state = {s.input: np.zeros([B] + [d for d in s.shape if not isinstance(d, str)], np.float32) for s in cfg.state}
    starts = {0: [0, 1, 2], 2: [1], 3: [0, 2]}
    with rnnrt.load(path, backend="onnxruntime", batch_size=B) as ref:
        for k in range(5):
            feeds = {}
            for t in cfg.inputs:
                if t.name != cont:
                    shape = [B if isinstance(d, str) else d for d in t.shape]
                    feeds[t.name] = rng.uniform(-1, 1, shape).astype(np.float32)
            if k in starts:
                ref.reset(slots=starts[k])
            want = ref.step(feeds)
            # Triton's view: batch-first tensors, START control (N, 1), implicit state zeroed at START.
            start = np.zeros((B, 1), np.float32)
            for slot in starts.get(k, []):
                start[slot] = 1
                for v in state.values():
                    v[slot] = 0
            tfeeds = {n: np.moveaxis(v, next(t.batch_axis for t in cfg.inputs if t.name == n), 0) for n, v in feeds.items()}
            tfeeds[cont] = np.where(start == 1, 0.0, 1.0).astype(np.float32)  # fp32_false_true: [1, 0]
            tfeeds.update(state)
            names = [o.name for o in sess.get_outputs()]
            got = dict(zip(names, sess.run(names, {n: np.ascontiguousarray(v) for n, v in tfeeds.items()})))
            for s in cfg.state:
                state[s.input] = got[s.output]
            for t in cfg.outputs:
                np.testing.assert_allclose(got[t.name], np.moveaxis(want[t.name], t.batch_axis, 0), rtol=0, atol=1e-6,
                                           err_msg=f"request {k} {t.name}")


def test_model_without_continuation_uses_initial_state_only(dynamic, tmp_path):
    cfg = rnnrt.ir.config.load_config(dynamic("a_lstm_stream_t1n1"))
    no_cont = cfg.model_copy(update={"continuation": None})
    model_dir = export_triton(no_cont, tmp_path / "repo", engine="onnx", name="nocont")
    mc = _parse(model_dir)
    assert len(mc.sequence_batching.control_input) == 0
    assert "cont" in {t.name for t in mc.input} and len(mc.sequence_batching.state) == 2
    _check_names(mc, _graph_tensors(model_dir / "1" / "model.onnx"))


def test_fixed_batch_exports_without_triton_batching(tmp_path):
    from tests.models import MODELS

    path = MODELS["lstm_t1"]().save(tmp_path / "m")
    model_dir = export_triton(path, tmp_path / "repo", engine="onnx", name="fixed")
    mc = _parse(model_dir)
    assert mc.max_batch_size == 0
    _check_names(mc, _graph_tensors(model_dir / "1" / "model.onnx"))


def test_plan_engine_needs_a_plan_and_known_engine(dynamic, tmp_path):
    path = dynamic("a_lstm_stream_t1n1")
    with pytest.raises(ConfigError, match="Records no built plan"):
        export_triton(path, tmp_path / "repo", engine="plan")
    with pytest.raises(ConfigError, match="Unknown engine 'savedmodel'"):
        export_triton(path, tmp_path / "repo", engine="savedmodel")


def test_plan_engine_rebuilds_batch_first_plan(dynamic, tmp_path):
    from rnnrt.build import builder as build
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed")
    import shutil

    src = dynamic("a_lstm_stream_t1n1")
    work = tmp_path / "m"
    shutil.copytree(src.parent, work)
    build.plan_from_config(work / "model.yaml", options=build.BuildOptions(batch=(1, 8, 32)))
    model_dir = export_triton(work / "model.yaml", tmp_path / "repo", engine="plan", name="planned")
    mc = _parse(model_dir)
    assert mc.backend == "tensorrt" and mc.max_batch_size == 32
    assert (model_dir / "1" / "model.plan").stat().st_size > 0


def test_exports_read_the_plan_manifest_and_an_old_engine_section(dynamic, tmp_path):
    """The plan, its profile and its build options come from the manifest; an older build's `engine:` section
    (read once by load_config) serves the same; the python export ships the plan with its manifest."""
    from rnnrt.build import builder as build
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed")
    import shutil

    from rnnrt.ir.config import load_config
    from rnnrt.ir.manifest import find_engine, read_manifest
    from tests.conftest import edit_yaml

    work = tmp_path / "m"
    shutil.copytree(dynamic("a_lstm_stream_t1n1").parent, work)
    build.plan_from_config(work / "model.yaml", options=build.BuildOptions(batch=(1, 4, 16)))
    built = read_manifest(work / "model.plan.json")
    assert _parse(export_triton(work / "model.yaml", tmp_path / "r1", engine="onnx", name="o")).max_batch_size == 16
    with pytest.raises(ConfigError, match="exceeds the plan's profile max 16"):
        export_triton(work / "model.yaml", tmp_path / "r1", engine="python", name="p", max_sequences=17)
    model_dir = export_triton(work / "model.yaml", tmp_path / "r1", engine="python", name="p")
    assert _parse(model_dir).max_batch_size == 16
    shipped = model_dir / "1" / "rnnrt_model"
    assert (shipped / "model.plan").read_bytes() == (work / "model.plan").read_bytes()
    assert "engine" not in (shipped / "model.yaml").read_text()  # found as any build's plan: its manifest beside
    m = find_engine(load_config(shipped / "model.yaml"), config_path=shipped / "model.yaml")
    assert (m.plan_path, m.profile, m.plan_sha256) == (shipped / "model.plan", [1, 4, 16], built.plan_sha256)
    assert m.graph is None and m.runtime_cache is None and m.path == shipped / "model.plan.json"
    # An older build's YAML: its engine: section names the plan; no manifest beside it.
    (work / "model.plan.json").unlink()
    shutil.move(work / "model.plan", work / "old.plan")
    edit_yaml(work / "model.yaml", lambda d: d.update(engine={"plan": "old.plan", "flavour": "tensorrt_rtx",
                                                              "version": built.version, "profile": {
                                                                  "min": 1, "opt": 4, "max": 16}}))
    with pytest.warns(FutureWarning, match="Has an `engine:` section"):
        model_dir = export_triton(work / "model.yaml", tmp_path / "r2", engine="plan", name="legacy")
    assert _parse(model_dir).max_batch_size == 16 and (model_dir / "1" / "model.plan").stat().st_size > 0
    with pytest.warns(FutureWarning):
        model_dir = export_triton(work / "model.yaml", tmp_path / "r2", engine="python", name="lp")
    shipped = model_dir / "1" / "rnnrt_model"
    assert (shipped / "model.plan").read_bytes() == (work / "old.plan").read_bytes()
    assert read_manifest(shipped / "model.plan.json").profile == [1, 4, 16]
    assert "engine" not in (shipped / "model.yaml").read_text()


def test_cli_export_triton(dynamic, tmp_path, capsys):
    path = dynamic("c_lstm_stacked_ip_softmax")
    rc = cli_main(["export-triton", str(path), "-o", str(tmp_path / "repo"), "--engine", "onnx", "--name", "lm",
                   "--max-batch-size", "16"])
    assert rc == 0
    mc = _parse(tmp_path / "repo" / "lm")
    assert mc.max_batch_size == 16
    assert "repo" in capsys.readouterr().out
    assert cli_main(["export-triton", str(path), "-o", str(tmp_path / "repo2")]) == 2  # no plan built
    assert "rnnrt build" in capsys.readouterr().err


def test_cli_request_limits_reach_the_model_config(dynamic, tmp_path, capsys):
    path = str(dynamic("a_lstm_stream_t1n1"))
    assert cli_main(["export-triton", path, "-o", str(tmp_path / "r"), "--engine", "python", "--name", "m",
                     "--max-frames", "8", "--max-request-bytes", "1000"]) == 0
    params = _parse(tmp_path / "r" / "m").parameters
    assert params["rnnrt_max_frames"].string_value == "8"
    assert params["rnnrt_max_request_bytes"].string_value == "1000"
    assert cli_main(["export-triton", path, "-o", str(tmp_path / "d"), "--engine", "python", "--name", "m"]) == 0
    params = _parse(tmp_path / "d" / "m").parameters
    assert params["rnnrt_max_frames"].string_value == "16384"
    assert params["rnnrt_max_request_bytes"].string_value == str(64 << 20)
    assert cli_main(["export-triton", path, "-o", str(tmp_path / "o"), "--engine", "onnx", "--max-frames", "8"]) == 2
    assert "python only" in capsys.readouterr().err


def test_dtype_table_covers_config_dtypes():
    from typing import get_args

    from rnnrt.ir.config import DType

    assert set(get_args(DType)) == set(TRITON_DTYPES)
    for v in TRITON_DTYPES.values():
        model_config_pb2.DataType.Value(v)


# --- names, counts, generated text (hostile input) and the python engine's layout ---------------------------
@pytest.mark.parametrize("name", ["../../x", "../escaped", "/abs/model", "sub/dir", "..", ".", "", "a\\b",
                                  'm" platform: "evil', "x\ny", ".hidden", "-dash"])
def test_names_that_leave_the_repository_or_break_the_config_are_refused(dynamic, tmp_path, name):
    path = dynamic("a_lstm_stream_t1n1")
    repo = tmp_path / "sandbox" / "repo"
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="Model name"):
        export_triton(path, repo, engine="onnx", name=name)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not (tmp_path.parent / "x").exists() and not (tmp_path / "x").exists()


def test_cli_refuses_escaping_names_and_negative_counts(dynamic, tmp_path, capsys):
    path = str(dynamic("a_lstm_stream_t1n1"))
    repo = tmp_path / "repo"
    assert cli_main(["export-triton", path, "-o", str(repo), "--engine", "onnx", "--name", "../../x"]) == 2
    assert "'../../x'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not tmp_path.parent.joinpath("x").exists()
    for flag in ("--max-batch-size", "--idle-us", "--max-sequences", "--queue-delay-us", "--max-frames",
                 "--max-request-bytes"):
        assert cli_main(["export-triton", path, "-o", str(repo), "--engine", "onnx", flag, "-5"]) == 2
        assert "is less than" in capsys.readouterr().err
    assert not repo.exists()


@pytest.mark.parametrize("kwargs", [{"max_batch_size": -1}, {"max_batch_size": 0}, {"idle_us": -1}, {"idle_us": 0},
                                    {"queue_delay_us": -1},
                                    {"max_sequences": 0}, {"idle_us": 1.5}, {"version": 0}])
def test_api_refuses_negative_or_bad_counts(dynamic, tmp_path, kwargs):
    with pytest.raises(ConfigError):
        export_triton(dynamic("a_lstm_stream_t1n1"), tmp_path / "repo", engine="onnx", **kwargs)
    assert not (tmp_path / "repo").exists()


def test_config_text_is_protobuf_text_format(dynamic, tmp_path):
    """The written text is what protobuf's serializer makes of the message (no hand-made text)."""
    from rnnrt.serve.triton import triton_config

    path = dynamic("c_lstm_stacked_ip_softmax")
    model_dir = export_triton(path, tmp_path / "repo", engine="onnx", name="c", instance_kind="KIND_CPU")
    cfg = rnnrt.ir.config.load_config(path)
    want = text_format.MessageToString(triton_config(cfg, "c", engine="onnx", instance_kind="KIND_CPU"))
    text = (model_dir / "config.pbtxt").read_text()
    assert text.split("\n", 1)[1] == want
    assert _parse(model_dir).instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_instance_kind_auto_follows_the_host(dynamic, tmp_path, monkeypatch):
    from rnnrt import cuda

    path = dynamic("a_lstm_stream_t1n1")
    monkeypatch.setattr(cuda, "available", lambda: True)
    assert _parse(export_triton(path, tmp_path / "r1", engine="onnx", name="g")).instance_group[0].kind == \
        model_config_pb2.ModelInstanceGroup.KIND_GPU
    monkeypatch.setattr(cuda, "available", lambda: False)
    assert _parse(export_triton(path, tmp_path / "r2", engine="onnx", name="c")).instance_group[0].kind == \
        model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_python_engine_layout(dynamic, tmp_path):
    import json

    path = dynamic("e_lstm_static_input")
    model_dir = export_triton(path, tmp_path / "repo", engine="python", name="e", max_sequences=5, idle_us=7)
    mc = _parse(model_dir)
    assert mc.backend == "python" and mc.max_batch_size == 5
    sb = mc.sequence_batching
    assert sb.HasField("oldest") and sb.oldest.max_candidate_sequences == 5 and sb.max_sequence_idle_microseconds == 7
    kinds = {c.name: model_config_pb2.ModelSequenceBatching.Control.Kind.Name(c.control[0].kind) for c in sb.control_input}
    assert kinds == {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END",
                     "READY": "CONTROL_SEQUENCE_READY", "CORRID": "CONTROL_SEQUENCE_CORRID"}
    assert not sb.state  # the state lives in rnnrt's pool
    dims = {t.name: (list(t.dims), t.optional) for t in mc.input}
    assert dims["data"] == ([-1, 5, 5], True) and dims["x_static"] == ([-1, 3], True) and dims["cont"] == ([-1, 5], True)
    assert {t.name: list(t.dims) for t in mc.output}["lstm1"] == [-1, 5, 7]
    layout = json.loads(mc.parameters["rnnrt_bindings"].string_value)
    assert layout["inputs"] == {"data": 1, "cont": 1, "x_static": 0} and layout["continuation"] == "cont"
    version = model_dir / "1"
    assert "from rnnrt.serve.backend import TritonPythonModel" in (version / "model.py").read_text()
    assert not (version / "rnnrt").exists()  # a folder named rnnrt beside model.py would shadow the package
    copied = rnnrt.ir.config.load_config(version / "rnnrt_model" / "model.yaml")
    assert copied.model_path.is_file() and copied.model_path.parent == version / "rnnrt_model"


def test_python_engine_needs_a_dynamic_batch(tmp_path):
    from tests.models import MODELS

    path = MODELS["lstm_t1"]().save(tmp_path / "m")
    with pytest.raises(ConfigError, match="--batch dynamic"):
        export_triton(path, tmp_path / "repo", engine="python", name="fixed")


def test_cli_serve_refuses_bad_invocations_before_starting_a_server(dynamic, tmp_path, capsys):
    path = str(dynamic("a_lstm_stream_t1n1"))
    assert cli_main(["serve"]) == 2
    assert "no model config" in capsys.readouterr().err
    assert cli_main(["serve", path, path, "--name", "x"]) == 2
    assert "--name" in capsys.readouterr().err
    assert cli_main(["serve", path, "--name", "../x"]) == 2
    assert "'../x'" in capsys.readouterr().err
    assert cli_main(["serve", path, "--tritonserver", str(tmp_path / "missing")]) == 2
    assert "Is not an executable file" in capsys.readouterr().err


def test_python_engine_copies_external_data(tmp_path):
    """A model saved with external data (big weights) travels with its data file into rnnrt_model/."""
    from rnnrt.ir.config import save_step_graph
    from rnnrt.importers.caffe.convert import convert_caffe

    (tmp_path / "net.prototxt").write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 } } }\n'
        'layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 1 dim: 1 } } }\n'
        'layer { name: "lstm1" type: "LSTM" bottom: "data" bottom: "cont" top: "lstm1" '
        'recurrent_param { num_output: 16 } }\n')
    path = save_step_graph(convert_caffe(tmp_path / "net.prototxt", batch="dynamic", embed_limit=0), tmp_path / "out")
    assert (tmp_path / "out" / "model.onnx.data").is_file()
    model_dir = export_triton(path, tmp_path / "repo", engine="python", name="big")
    copied = model_dir / "1" / "rnnrt_model"
    assert (copied / "model.onnx.data").stat().st_size == (tmp_path / "out" / "model.onnx.data").stat().st_size
    with rnnrt.load(copied / "model.yaml", backend="onnxruntime", batch_size=2) as s, \
            rnnrt.load(path, backend="onnxruntime", batch_size=2) as ref:
        x = np.ones((1, 2, 8), np.float32)
        np.testing.assert_array_equal(s.step({"data": x})["lstm1"], ref.step({"data": x})["lstm1"])
