"""The python-backend model (rnnrt.serve.backend) driven directly, with a stand-in for Triton's stub module:
the failure paths a real server cannot provoke (a frame the pool refuses behind Triton's checks, an engine
that fails part-way through a multi-frame request: the stream stays as before the request)."""

from __future__ import annotations

import ctypes
import json
import sys
import time
import types

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, EngineError, StateError
from rnnrt.serve.triton import export_triton, model_config_pb2

MODEL = "a_lstm_stream_t1n1"


_STUB_USED = b"used_dlpack"


class _Capsule:
    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, *args, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)


class _Tensor:
    def __init__(self, name, arr):
        self.name, self.arr = name, np.asarray(arr)

    @staticmethod
    def from_dlpack(name, obj):
        """Like the stub: takes a DLPack capsule (or an object's ``__dlpack__()``) and leaves it named ``used_dlpack``."""
        capsule = obj.__dlpack__() if hasattr(obj, "__dlpack__") else obj
        arr = np.from_dlpack(_Capsule(capsule))
        ctypes.pythonapi.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
        ctypes.pythonapi.PyCapsule_SetName(capsule, _STUB_USED)
        return _Tensor(name, arr)

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
def model(make_model):
    yield make_model(max_sequences=8)


@pytest.fixture()
def make_model(dynamic, tmp_path, monkeypatch):
    """``make_model(**export_triton options)``: the model initialized as Triton would; finalized at the end."""
    install_fake_triton_utils(monkeypatch)
    path = dynamic(MODEL)
    made = []

    def make(**options):
        m = python_model(export_triton(path, tmp_path / f"repo{len(made)}", engine="python", name="m", **options))
        made.append(m)
        return m, path

    yield make
    for m in made:
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


def _seq(rid, cid, frames=None, start=False, end=False, **extra):
    inputs = dict(CORRID=np.array([[cid]], np.uint64), START=np.array([[int(start)]], np.int32),
                  END=np.array([[int(end)]], np.int32), **extra)
    if frames is not None:
        inputs["data"] = frames
    return _Request(rid, **inputs)


def test_start_flood_on_a_full_pool_touches_no_live_stream(make_model):
    """Issue 22 defect 3: a full pool used to evict its least-recently-used stream, alive or not."""
    m, path = make_model(max_sequences=3, idle_us=300_000)
    rng = np.random.default_rng(2)
    sent = {cid: [] for cid in (1, 2, 3)}
    got = {cid: [] for cid in (1, 2, 3)}

    def step_live(first=False):
        reqs = []
        for cid in sent:
            f = _frames(rng, 1)
            sent[cid].append(f)
            reqs.append(_seq(f"s{cid}", cid, f, start=first))
        for cid, r in zip(sent, m.execute(reqs)):
            assert r.error is None, r.error
            got[cid].append(r.outputs["lstm1"])

    step_live(first=True)
    for flood in range(100, 140):  # sequences that START and never END, while the live ones step
        r = m.execute([_seq(f"f{flood}", flood, _frames(rng, 1), start=True)])[0]
        assert "StateError" in r.error and "none was touched" in r.error and "3 slots" in r.error
        if flood % 10 == 0:
            step_live()
    assert sorted(m.pool) == [1, 2, 3]
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        for cid in sent:
            solo.reset()
            for f, out in zip(sent[cid], got[cid]):
                np.testing.assert_array_equal(out[0, 0][:, None], solo.step({"data": f[0, 0][:, None]})["lstm1"])
    # Streams idle past the idle time make room (the pool's own expiry), and only they.
    time.sleep(0.35)
    r = m.execute([_seq("late", 200, _frames(rng, 1), start=True)])[0]
    assert r.error is None and 200 in m.pool


@pytest.mark.parametrize("options, frames, match", [
    ({}, 16385, "16385 frames; this server takes at most 16384"),
    ({"max_frames": 8}, 9, "9 frames; this server takes at most 8"),
    ({"max_request_bytes": 1000}, 60, "1200 input bytes; this server takes at most 1000"),
])
def test_requests_over_the_bounds_are_refused_before_stepping(make_model, options, frames, match):
    """Issue 22 defect 4: one request of 10**6 frames held the model for 20 s and its memory."""
    m, _ = make_model(max_sequences=4, **options)
    rng = np.random.default_rng(3)
    assert m.execute([_seq("a", 1, _frames(rng, 1), start=True)])[0].error is None
    before = m.pool.snapshot(1)
    big = np.zeros((1, frames, 1, 5), np.float32)
    r = m.execute([_seq("big", 1, big)])[0]
    assert "BindingError" in r.error and match in r.error and "--max-" in r.error
    r = m.execute([_carrier("bigm", [1], [frames], [0], big)])[0]
    assert "BindingError" in r.error and match in r.error
    after = m.pool.snapshot(1)
    assert after.steps == before.steps and all(after.tensors[n].tobytes() == before.tensors[n].tobytes()
                                               for n in before.tensors)


def test_limits_are_positive_integers_and_python_only(dynamic, tmp_path):
    from rnnrt.errors import ConfigError

    path = dynamic(MODEL)
    with pytest.raises(ConfigError, match="max_frames=0"):
        export_triton(path, tmp_path / "r", engine="python", max_frames=0)
    with pytest.raises(ConfigError, match="max_request_bytes=-1"):
        export_triton(path, tmp_path / "r", engine="python", max_request_bytes=-1)
    with pytest.raises(ConfigError, match="python only"):
        export_triton(path, tmp_path / "r", engine="onnx", max_frames=10)


def test_responses_leave_no_capsule_error(model, monkeypatch):
    """The stub renames a capsule it took 'used_dlpack'; numpy's destructor printed a traceback for each."""
    m, _ = model
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    r = m.execute([_seq("a", 1, _frames(np.random.default_rng(4), 2), start=True)])[0]
    assert r.error is None and r.outputs["lstm1"].shape == (1, 2, 1, 7)
    del r
    import gc

    gc.collect()
    assert not seen, [str(u.exc_value) for u in seen]


def test_release_ends_the_sequence_and_keeps_the_stream(model):
    m, path = model
    rng = np.random.default_rng(5)
    f1, f2 = _frames(rng, 1), _frames(rng, 1)
    assert m.execute([_seq("a", 7, f1, start=True)])[0].error is None
    r = m.execute([_seq("rel", 7, end=True, RNNRT_CONTROL=np.array([[4]], np.int32))])[0]
    assert r.error is None and 7 in m.pool and 7 in m._carried
    out = m.execute([_carrier("b", [7], [1], [0], f2)])[0].outputs["lstm1"]
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        solo.step({"data": f1[0, 0][:, None]})
        np.testing.assert_array_equal(out[0, 0][:, None], solo.step({"data": f2[0, 0][:, None]})["lstm1"])


def test_state_bytes_over_the_bound_are_refused_before_they_are_read(make_model):
    m, _ = make_model(max_sequences=4, max_request_bytes=4096)
    r = m.execute([_seq("r", 9, start=True, RNNRT_CONTROL=np.array([[2]], np.int32),
                        RNNRT_STATE=np.zeros((1, 5000), np.uint8))])[0]
    assert "BindingError" in r.error and "5000 input bytes" in r.error and 9 not in m.pool
