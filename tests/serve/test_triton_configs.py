"""`export-triton --engine onnx|plan` configs go through the real Triton server's parser and model loader.

No onnxruntime or tensorrt backend can be had here, so each exported config gets ``backend: "python"`` (and a
do-nothing model.py) for the check: everything else (inputs, outputs, sequence batching with implicit state,
START control, instance group) is as exported. A KIND_GPU instance must be refused on this GPU-less host."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

import rnnrt
import rnnrt.ir.config
from rnnrt.serve.server import TritonServer
from rnnrt.serve.triton import export_triton, model_config_pb2, triton_config

_STUB = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("config check only")) for _ in requests]
"""


def _as_python(model_dir, msg=None):
    pb = model_config_pb2()
    if msg is None:
        msg = text_format.Parse((model_dir / "config.pbtxt").read_text(), pb.ModelConfig())
    msg.backend = "python"
    msg.ClearField("platform")
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(msg))
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(_STUB)


@pytest.fixture(scope="module")
def repo(dynamic, tmp_path_factory):
    repo = tmp_path_factory.mktemp("check_repo")
    c = dynamic("c_lstm_stacked_ip_softmax")
    a = dynamic("a_lstm_stream_t1n1")
    for name, path, kind in [("onnx_c_cpu", c, "KIND_CPU"), ("onnx_a_cpu", a, "KIND_CPU"), ("onnx_c_gpu", c, "KIND_GPU"),
                             ("onnx_c_auto", c, "auto")]:
        _as_python(export_triton(path, repo, engine="onnx", name=name, instance_kind=kind))
    # The plan engine's config (no plan can be built for Triton's tensorrt backend here): same generator.
    cfg = rnnrt.ir.config.load_config(c)
    for name, kind in [("plan_c_cpu", "KIND_CPU"), ("plan_c_gpu", "KIND_GPU")]:
        msg = triton_config(cfg, name, engine="plan", instance_kind=kind, max_batch_size=32)
        assert msg.backend == "tensorrt"
        (repo / name).mkdir()
        _as_python(repo / name, msg)
    return repo


@pytest.fixture(scope="module")
def explicit_server(repo, tritonserver_installed):
    server = TritonServer(repo, extra_args=["--model-control-mode=explicit", "--exit-timeout-secs=5"])
    server.start()
    server.wait_ready()
    yield server
    server.stop()
    server.cleanup()


def _load(server, name):
    import tritonclient.grpc as grpcclient

    conn = grpcclient.InferenceServerClient(server.endpoints()["grpc"])
    try:
        conn.load_model(name)
        return None
    except Exception as err:  # noqa: BLE001 - tritonclient's exception carries the server's reason
        return str(err)


@pytest.mark.parametrize("name", ["onnx_c_cpu", "onnx_a_cpu", "onnx_c_auto", "plan_c_cpu"])
def test_exported_config_is_accepted_by_tritonserver(explicit_server, name):
    assert _load(explicit_server, name) is None
    assert explicit_server.is_ready([name])


@pytest.mark.parametrize("name", ["onnx_c_gpu", "plan_c_gpu"])
def test_kind_gpu_is_refused_without_a_gpu(explicit_server, name):
    err = _load(explicit_server, name)
    assert err is not None and "GPU" in err, err


def test_auto_kind_follows_the_host(repo):
    pb = model_config_pb2()
    msg = text_format.Parse((repo / "onnx_c_auto" / "config.pbtxt").read_text(), pb.ModelConfig())
    from rnnrt import cuda

    want = "KIND_GPU" if cuda.available() else "KIND_CPU"
    assert pb.ModelInstanceGroup.Kind.Name(msg.instance_group[0].kind) == want
