"""Hostile and broken input through the runtime API (issue 15 findings 1, 2, 7, 8 and 12): every case is a
typed RnnrtError that names the thing, and the state is bit-identical afterwards."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, ConfigError, RnnrtError, SnapshotError, StateError
from rnnrt.runtime.pool import StreamPool, StreamState
from tests.models import MODELS

REPO = Path(__file__).resolve().parents[2]


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


# Finding 1: a zero-length chunk must not touch the state.
def test_zero_length_chunk_is_refused_and_state_kept(tmp_path):
    path = MODELS["lstm_scan"](batch=2, time="T").save(tmp_path / "m")
    with rnnrt.load(path, backend="onnxruntime", threads=1) as s:
        s.step({"data": np.ones((3, 2, 5), np.float32)})
        before = dict(s.state)
        with pytest.raises(BindingError, match=r"Input 'data' \| Received shape \(0, 2, 5\) with a zero-length dim"):
            s.step({"data": np.ones((0, 2, 5), np.float32)})
        _same(dict(s.state), before)
        with pytest.raises(BindingError, match=r"Input 'cont' \| Received shape \(0, 2\)"):
            s.step({"data": np.ones((2, 2, 5), np.float32), "cont": np.ones((0, 2), np.float32)})
        with pytest.raises(BindingError, match=r"Input 'data' \| Received shape \(0, 2, 5\) with a zero-length"):
            s.step({"data": np.ones((0, 2, 5), np.float32), "cont": np.ones((0, 2), np.float32)})
        _same(dict(s.state), before)


# Finding 2: a raising on_expire callback loses no pending reset and does not break the step.
def test_raising_on_expire_keeps_pending_resets(tmp_path):
    path = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    now = [0.0]

    def boom(sid):
        raise RuntimeError(f"callback for {sid}")

    x = np.random.default_rng(0).uniform(-1, 1, (1, 1, 5)).astype(np.float32)
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=2) as s, \
            rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=1) as solo:
        pool = StreamPool(s, idle_timeout=10.0, clock=lambda: now[0], on_expire=boom)
        pool.open("A")
        pool.open("C")
        for _ in range(3):
            pool.step({"A": x})
        now[0] = 5.0
        pool.step({"A": x})
        pool.close("A")
        assert pool.open("B") == 0  # A's slot, pending a zeroing
        now[0] = 12.0               # C (last used at 0) expires at the next step; its callback raises
        got = pool.step({"B": x})["B"]["lstm1"]
        np.testing.assert_array_equal(got, solo.step(x)["lstm1"])  # B starts from zero, at t=0
        assert [sid for sid, _ in pool.callback_errors] == ["C"]
        assert isinstance(pool.callback_errors[0][1], RuntimeError)


# Finding 7: StreamState.from_bytes trusts nothing.
def _blob(header: bytes, body: bytes = b"") -> bytes:
    return b"RNNRTSS1" + struct.pack("<I", len(header)) + header + body


GOOD = {"format": 1, "model": "sha256:0", "at_start": False, "steps": 1,
        "tensors": [{"input": "h0", "output": "hT", "dtype": "float32", "shape": [1, 2], "batch_axis": 0}]}


def _with(**changes) -> bytes:
    head = dict(GOOD)
    t = dict(GOOD["tensors"][0])
    for k, v in changes.items():
        (t if k in t else head)[k] = v
    head["tensors"] = [t]
    return _blob(json.dumps(head).encode(), np.zeros(2, np.float32).tobytes())


@pytest.mark.parametrize("data,match", [
    (_blob(b'{"format": 1, "model": "m", "at_start": false, "steps": Infinity, "tensors": []}'), "non-finite"),
    (_blob(b'{"format": 1, "model": "m", "at_start": false, "steps": 1e400, "tensors": []}'), "out of range"),
    (_blob(b'{"format": 1, "model": "m", "at_start": false, "steps": 123456789012345678901234567890, "tensors": []}'),
     "out of range"),
    (_blob(b"[" * 50000 + b"]" * 50000), "nests deeper"),
    (_with(input=7), r"input is int"),
    (_with(shape="17"), r"shape is str"),
    (_with(shape=[1, -2]), "not a list of sizes"),
    (_with(batch_axis=5), "batch_axis 5 is out of range"),
    (_with(dtype="object"), "dtype 'object'"),
    (_with(steps=True), "steps is bool"),
    (_blob(b'"just a string"'), "not an object"),
    (_blob(b"{not json"), "not JSON"),
    (b"RNNRTSS1" + struct.pack("<I", 1 << 30) + b"{}", "header length"),
])
def test_corrupt_snapshot_bytes_are_snapshot_errors(data, match):
    with pytest.raises(SnapshotError, match=match):
        StreamState.from_bytes(data)


def test_good_handmade_snapshot_bytes_read():
    st = StreamState.from_bytes(_with())
    assert st.tensors["h0"].shape == (1, 2) and st.steps == 1


@pytest.mark.parametrize("kwargs,match", [
    ({"tensors": {"h0": [[0.0, 0.0]]}}, "Tensor 'h0' is a list, not a numpy array"),
    ({"tensors": {1: np.zeros((1, 2), np.float32)}}, "Tensor name 1 is not a string"),
    ({"outputs": {}}, "has no state output name"),
    ({"steps": -1}, "steps is -1"),
])
def test_malformed_stream_state_objects(kwargs, match):
    base = dict(model="m", tensors={"h0": np.zeros((1, 2), np.float32)}, outputs={"h0": "hT"}, batch_axes={"h0": 0})
    base.update(kwargs)
    with pytest.raises(SnapshotError, match=match):
        StreamState(**base)


# Finding 8: API misuse.
@pytest.fixture()
def session(tmp_path):
    path = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=3) as s:
        s.step({"data": np.ones((1, 3, 5), np.float32)})
        yield s


@pytest.mark.parametrize("slots,match", [
    (1, r"Session.reset\(slots=1\) \| Got a int, not a list of slots"),
    (np.array(0), r"Got a ndarray, not a list of slots"),
    ("01", "Got a str"),
    ([0, 3], r"Slot 3 \| Is not a valid slot"),
    ([0.0], r"Slot 0.0 \| Is not a valid slot"),
])
def test_bad_reset_slots(session, slots, match):
    before = dict(session.state)
    with pytest.raises(BindingError, match=match):
        session.reset(slots=slots)
    _same(dict(session.state), before)


def test_bad_load_arguments(tmp_path):
    path = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    for args, kwargs, match in (((None,), {}, r"rnnrt.load \| Got a NoneType as the config"),
                                ((path,), {"batch_size": 2, "threads": "x"}, r"threads='x' is not a positive integer"),
                                ((path,), {"batch_size": 2, "threads": 0}, r"threads=0 is not a positive integer"),
                                ((path,), {"batch_size": 10**12}, r"batch_size=1000000000000 is not a positive"),
                                ((path,), {"batch_size": "8"}, r"batch_size='8' is not a positive integer"),
                                ((path,), {"batch_size": 2, "outputs": "gpu"}, r"outputs='gpu' is not supported")):
        with pytest.raises(ConfigError, match=match):
            rnnrt.load(*args, backend="onnxruntime", **kwargs)


def test_batch_size_beyond_memory(tmp_path):
    """A batch whose state cannot fit this machine's memory is a ConfigError before anything is allocated."""
    import os

    path = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    batch = min(2**31 - 1, phys // 28 + 1)  # state: h and c, 7 floats each, per slot, twice (two arenas)
    with pytest.raises(ConfigError, match=r"The state needs 2 x .* GiB"):
        rnnrt.load(path, backend="onnxruntime", batch_size=batch)


def test_pool_misuse(session):
    with pytest.raises(ConfigError, match=r"StreamPool \| Got a object, not a Session"):
        StreamPool(object())
    for bad in ("x", -1, 0, float("nan"), True):
        with pytest.raises(ConfigError, match="idle_timeout="):
            StreamPool(session, idle_timeout=bad)
    pool = StreamPool(session)
    with pytest.raises(BindingError, match=r"Stream id \['x'\] \| Is a list, which is not hashable"):
        pool.open(["x"])
    pool.open("a")
    before = pool.snapshot("a")
    for frames in ([np.ones((1, 1, 5), np.float32)], None, "a"):
        with pytest.raises(BindingError, match=r"StreamPool.step \| Got a"):
            pool.step(frames)
    assert ["x"] not in pool
    with pytest.raises(SnapshotError, match="Got a dict"):
        pool.restore("b", {"h": 1})
    after = pool.snapshot("a")
    _same(dict(after.tensors), dict(before.tensors))
    assert after.steps == 0


# Finding 12.
def test_nan_frames_accepted_by_default_refused_with_check_finite(tmp_path):
    path = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    x = np.ones((1, 2, 5), np.float32)
    x[0, 1, 2] = np.nan
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=2) as s:
        y = s.step({"data": x})["lstm1"]
        assert np.isnan(y[0, 1]).all() and np.isfinite(y[0, 0]).all()
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=2, check_finite=True) as s:
        before = dict(s.state)
        with pytest.raises(BindingError, match=r"Input 'data' \| Holds NaN or infinite values"):
            s.step({"data": x})
        with pytest.raises(BindingError, match="NaN or infinite"):
            s.step({"data": np.full((1, 2, 5), np.inf, np.float32)})
        _same(dict(s.state), before)
        s.step({"data": np.ones((1, 2, 5), np.float32)})


def test_masked_arrays_are_refused(session):
    before = dict(session.state)
    x = np.ma.masked_array(np.ones((1, 3, 5), np.float32), mask=np.zeros((1, 3, 5), bool))
    with pytest.raises(BindingError, match=r"Input 'data' \| Received a masked array; its mask would be ignored"):
        session.step({"data": x})
    _same(dict(session.state), before)


def test_state_and_steps_after_close(session):
    session.close()
    for call in (lambda: session.state, lambda: session.step(np.ones((1, 3, 5), np.float32)),
                 lambda: session.reset(), lambda: session.read_state([0]), lambda: session.input_buffers()):
        with pytest.raises(StateError, match="after close|was read after close"):
            call()


def test_no_engine_warning_at_interpreter_exit(tmp_path):
    """An engine left active at exit says nothing from BaseEngine.__del__ ("Exception ignored ...")."""
    path = MODELS["lstm_t1"]().save(tmp_path / "m")
    code = textwrap.dedent(f"""
        import rnnrt
        from rnnrt.engines.onnxruntime import OnnxRuntimeEngine
        e = OnnxRuntimeEngine({str(path.parent / 'model.onnx')!r})
        e.activate()
        s = rnnrt.load({str(path)!r}, backend="onnxruntime")
        s.step({{"data": [[[0.0] * 5]]}})
    """)
    r = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Exception ignored" not in r.stderr and "NoneType" not in r.stderr, r.stderr


def test_every_error_is_an_rnnrt_error():
    for cls in (BindingError, ConfigError, SnapshotError, StateError):
        assert issubclass(cls, RnnrtError)
    assert issubclass(BindingError, ValueError) and issubclass(ConfigError, ValueError)
