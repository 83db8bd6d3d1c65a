"""Session.step(feeds, slots=...) on the host: only the listed slots advance, in the listed order; the other
slots' state stays bit-identical; sequence-start marks persist per slot; outputs without a second copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError
from rnnrt.runtime.pool import StreamPool
from tests.models import MODELS


def _load(tmp_path: Path, name: str, params: dict, **kw):
    m = MODELS[name](**params)
    return rnnrt.load(m.save(tmp_path / name), backend="onnxruntime", threads=1, **kw)


def _x(rng, n, size=5):
    return rng.uniform(-1, 1, (1, n, size)).astype(np.float32)


# Dynamic batch: the engine runs only the listed rows (gather); fixed batch: the whole batch runs (scatter).
KINDS = [("lstm_dynamic_batch", {}, {"batch_size": 6}), ("lstm_t1", {"batch": 6}, {})]


@pytest.mark.parametrize("feedback", ["copy", "swap"])
@pytest.mark.parametrize("name,params,kw", KINDS, ids=["gather", "scatter"])
def test_absent_slots_bit_identical_and_listed_slots_equal_solo(tmp_path, name, params, kw, feedback):
    rng = np.random.default_rng(0)
    plan = [[0, 1, 2, 3, 4, 5], [4, 1], [5, 0, 2, 3, 1], [3], [2, 4, 0, 1, 5, 3], [1, 0, 5, 4, 3]]
    xs = [_x(rng, len(slots)) for slots in plan]
    with _load(tmp_path, name, params, feedback=feedback, **kw) as s:
        got = []
        for slots, x in zip(plan, xs):
            before = s.state
            out = s.step({"data": x}, slots=slots)["lstm1"]
            assert out.shape == (1, len(slots), 7)
            after = s.state
            absent = sorted(set(range(6)) - set(slots))
            for n in before:
                assert after[n][absent].tobytes() == before[n][absent].tobytes(), f"absent rows of {n} changed"
                if slots:
                    assert not np.array_equal(after[n][slots], before[n][slots])
            got.append(out)
    # Each slot alone in a batch-1 session: bit-exact on the gather path (same rows through ORT).
    solo_params, solo_kw = ({}, {"batch_size": 1}) if name == "lstm_dynamic_batch" else ({"batch": 1}, {})
    with _load(tmp_path / "solo", name, solo_params, **solo_kw) as solo:
        for slot in range(6):
            solo.reset()
            for t, slots in enumerate(plan):
                if slot in slots:
                    i = slots.index(slot)
                    want = solo.step({"data": xs[t][:, i:i + 1]})["lstm1"]
                    if name == "lstm_dynamic_batch":
                        np.testing.assert_array_equal(got[t][:, i:i + 1], want, err_msg=f"slot {slot} tick {t}")
                    else:
                        np.testing.assert_allclose(got[t][:, i:i + 1], want, atol=1e-6, err_msg=f"slot {slot} tick {t}")


@pytest.mark.parametrize("name,params,kw", KINDS, ids=["gather", "scatter"])
def test_sequence_start_marks_persist_until_the_slot_steps(tmp_path, name, params, kw):
    rng = np.random.default_rng(1)
    with _load(tmp_path, name, params, **kw) as s, _load(tmp_path / "ref", name, params, **kw) as ref:
        s.step({"data": _x(rng, 6)})
        s.reset(slots=[1, 4])
        assert s.sequence_starts.tolist() == [False, True, False, False, True, False]
        s.step({"data": _x(rng, 2)}, slots=[0, 4])  # slot 1 does not step: it stays at t=0
        assert s.sequence_starts.tolist() == [False, True, False, False, False, False]
        x = _x(rng, 1)
        y = s.step({"data": x}, slots=[1])["lstm1"]
        # A slot reset and then stepped alone equals the same slot's first step in a fresh session.
        ref.reset()
        want = ref.step({"data": np.repeat(x, 6, axis=1)})["lstm1"][:, :1]
        np.testing.assert_allclose(y, want, atol=1e-6)
        # A fed continuation input is used as is, and the mark of the stepped slot is cleared.
        s.reset(slots=[2])
        s.step({"data": _x(rng, 1), "cont": np.ones((1, 1), np.float32)}, slots=[2])
        assert not s.sequence_starts.any()


def test_bad_slots_and_frames_leave_state(tmp_path):
    rng = np.random.default_rng(2)
    with _load(tmp_path, "lstm_dynamic_batch", {}, batch_size=4) as s:
        s.step({"data": _x(rng, 4)})
        before = s.state
        for slots, x, match in (([0, 0], _x(rng, 2), "Slot 0 is listed twice"),
                                ([4], _x(rng, 1), r"Slot 4 \| Is not a valid slot"),
                                (1, _x(rng, 1), r"slots=1\) \| Got a int, not a list of slots"),
                                (np.array(0), _x(rng, 1), r"Got a ndarray, not a list of slots"),
                                ([0, 1], _x(rng, 3), r"Received shape \(1, 3, 5\).\nNote: Expected shape \[1, 2, 5\]")):
            with pytest.raises(BindingError, match=match):
                s.step({"data": x}, slots=slots)
        for n, v in s.state.items():
            assert v.tobytes() == before[n].tobytes()
        assert s.step({"data": _x(rng, 1)}, slots=[]) == {}


def test_out_and_input_buffers(tmp_path):
    rng = np.random.default_rng(3)
    with _load(tmp_path, "lstm_t1", {"batch": 3}) as s, _load(tmp_path / "r", "lstm_t1", {"batch": 3}) as ref:
        bufs = s.input_buffers()
        assert set(bufs) == {"data", "cont"} and bufs["data"].shape == (1, 3, 5)
        out = {"lstm1": np.empty((1, 3, 7), np.float32)}
        for _ in range(3):
            x = _x(rng, 3)
            bufs["data"][...] = x
            got = s.step({"data": bufs["data"]}, out=out)
            assert got["lstm1"] is out["lstm1"]
            np.testing.assert_array_equal(got["lstm1"], ref.step({"data": x})["lstm1"])
        with pytest.raises(BindingError, match=r"out\['lstm1'\] \| Is \('float64'"):
            s.step({"data": x}, out={"lstm1": np.empty((1, 3, 7))})
        with pytest.raises(BindingError, match=r"out\['nope'\] \| Is not an output"):
            s.step({"data": x}, out={"nope": np.empty(1)})
        for n, v in s.state.items():
            np.testing.assert_array_equal(v, ref.state[n])


def test_pool_with_idle_streams_equals_each_stream_alone(tmp_path):
    """90 % of the streams step each tick (a different 10 % idle every tick): bit-exact with solo sessions."""
    path = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    rng = np.random.default_rng(4)
    n, ticks = 20, 12
    xs = {(i, t): _x(rng, 1) for i in range(n) for t in range(ticks)}
    idle = {t: set(rng.choice(n, 2, replace=False).tolist()) for t in range(ticks)}
    got = {}
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=n) as s:
        pool = StreamPool(s)
        for i in range(n):
            pool.open(i)
        for t in range(ticks):
            order = [i for i in rng.permutation(n).tolist() if i not in idle[t]]
            for i, o in pool.step({i: xs[(i, t)] for i in order}).items():
                got[(i, t)] = o["lstm1"]
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=1) as solo:
        for i in range(n):
            solo.reset()
            for t in range(ticks):
                if i not in idle[t]:
                    np.testing.assert_array_equal(got[(i, t)], solo.step(xs[(i, t)])["lstm1"], err_msg=f"{i} {t}")
