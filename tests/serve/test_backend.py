"""The python-backend model (rnnrt.serve.backend) driven directly, with a stand-in for Triton's stub module:
the failure paths a real server cannot provoke (a frame the pool refuses behind Triton's checks, an engine
that fails part-way through a multi-frame request: the stream stays as before the request)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import EngineError
from rnnrt.serve.triton import export_triton, model_config_pb2

MODEL = "a_lstm_stream_t1n1"


class _Tensor:
    def __init__(self, name, arr):
        self.name, self.arr = name, np.asarray(arr)

    @staticmethod
    def from_dlpack(name, arr):
        return _Tensor(name, np.from_dlpack(arr))

    def __dlpack__(self, *args, **kwargs):
        return self.arr.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


class _Response:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.arr for t in output_tensors}
        self.error = error


class _Request:
    def __init__(self, rid, **inputs):
        self.rid = rid
        self.inputs = {n: _Tensor(n, a) for n, a in inputs.items()}

    def request_id(self):
        return self.rid


def install_fake_triton_utils(monkeypatch) -> None:
    """Puts a stand-in for Triton's ``triton_python_backend_utils`` stub module into ``sys.modules``."""

    class _Metric:
        def increment(self, n):
            pass

        def set(self, v):
            pass

    class _Family:
        COUNTER, GAUGE = 0, 1

        def __init__(self, **kwargs):
            pass

        def Metric(self, labels):  # noqa: N802 - Triton's name
            return _Metric()

    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor, pb.InferenceResponse, pb.MetricFamily = _Tensor, _Response, _Family
    pb.TritonError = str
    pb.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)


def python_model(model_dir, name="m"):
    """The python-backend model of an ``export_triton(engine="python")`` folder, initialized as Triton would."""
    from google.protobuf import json_format, text_format

    from rnnrt.serve.backend import TritonPythonModel

    msg = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2().ModelConfig())
    config = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    m = TritonPythonModel()
    m.initialize({"model_config": json.dumps(config), "model_name": name, "model_repository": str(model_dir),
                  "model_version": "1"})
    return m


@pytest.fixture()
def model(dynamic, tmp_path, monkeypatch):
    install_fake_triton_utils(monkeypatch)
    path = dynamic(MODEL)
    model_dir = export_triton(path, tmp_path / "repo", engine="python", name="m", max_sequences=8)
    m = python_model(model_dir)
    yield m, path
    m.finalize()


def _carrier(rid, ids, counts, flags, data):
    return _Request(rid, RNNRT_STREAMS=np.array([ids], np.uint64), RNNRT_FRAMES=np.array([counts], np.int32),
                    RNNRT_FLAGS=np.array([flags], np.int32), data=data, CORRID=np.array([[2**62 + 1]], np.uint64),
                    START=np.ones((1, 1), np.int32), END=np.ones((1, 1), np.int32))


def _frames(rng, n):
    return rng.uniform(-1, 1, (1, n, 1, 5)).astype(np.float32)  # [1, frames, T=1, 5]


def test_refused_frame_of_a_multi_frame_request_leaves_the_state(model):
    m, path = model
    rng = np.random.default_rng(0)
    first = _frames(rng, 2)
    r = m.execute([_carrier("a", [1, 2], [1, 1], [1, 1], first)])[0]
    assert r.error is None and "RNNRT_STATUS" not in r.outputs
    before = {sid: m.pool.snapshot(sid).tensors for sid in (1, 2)}
    bad = np.zeros((1, 3, 1, 7), np.float32)  # Triton would refuse it; the pool refuses it at frame 0
    r = m.execute([_carrier("b", [1], [3], [0], bad), _Request("c", CORRID=np.array([[2]], np.uint64),
                                                                    data=np.zeros((1, 3, 1, 7), np.float32))])
    status = json.loads(r[0].outputs["RNNRT_STATUS"].tobytes())
    assert status["errors"][0][:2] == [0, "BindingError"]
    assert "BindingError" in r[1].error
    for sid in (1, 2):  # neither stream moved
        for name, arr in m.pool.snapshot(sid).tensors.items():
            np.testing.assert_array_equal(arr, before[sid][name])
    follow = _frames(rng, 3)
    r = m.execute([_carrier("d", [1], [3], [0], follow)])[0]
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        solo.step({"data": first[0, 0][:, None]})
        for k in range(3):
            want = solo.step({"data": follow[0, k][:, None]})["lstm1"]
            np.testing.assert_array_equal(r.outputs["lstm1"][0, k][:, None], want)


def test_engine_failure_part_way_puts_that_stream_back(model, monkeypatch):
    m, path = model
    rng = np.random.default_rng(1)
    first = _frames(rng, 2)
    m.execute([_carrier("a", [1, 2], [1, 1], [1, 1], first)])
    before = m.pool.snapshot(1)
    engine = m.session.engine
    real_execute, calls = engine.execute, []

    def execute(feeds, outputs=None):
        calls.append(1)
        if len(calls) == 2:  # stream 1's chunk of 3 frames runs first: it fails at its frame 2
            raise EngineError("device lost")
        return real_execute(feeds, outputs)

    monkeypatch.setattr(engine, "execute", execute)
    r = m.execute([_carrier("b", [1, 2], [3, 1], [0, 0], _frames(rng, 4))])[0]
    status = json.loads(r.outputs["RNNRT_STATUS"].tobytes())
    assert [e[:2] for e in status["errors"]] == [[0, "EngineError"]]
    assert "frame 2 of 3" in status["errors"][0][2] and "as before the chunk" in status["errors"][0][2]
    assert 1 in m.pool and 2 in m.pool  # stream 2 (one frame, stepped at frame 1) went on
    assert not r.outputs["lstm1"][0, :3].any() and r.outputs["lstm1"][0, 3].any()
    after = m.pool.snapshot(1)
    assert (after.steps, after.at_start) == (before.steps, before.at_start)
    for name, arr in after.tensors.items():
        assert arr.tobytes() == before.tensors[name].tobytes(), name
    # Sent again, the stream continues as if the failed request had never been.
    monkeypatch.setattr(engine, "execute", real_execute)
    again = _frames(rng, 2)
    r = m.execute([_carrier("c", [1], [2], [0], again)])[0]
    assert "RNNRT_STATUS" not in r.outputs
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        solo.step({"data": first[0, 0][:, None]})
        for k in range(2):
            want = solo.step({"data": again[0, k][:, None]})["lstm1"]
            np.testing.assert_array_equal(r.outputs["lstm1"][0, k][:, None], want)
