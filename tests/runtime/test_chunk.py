"""Session.step_chunk / StreamPool.step_chunk: K frames in one call == K calls of step, bit-exact (outputs,
state, sequence starts), on dynamic and fixed batches, copy and swap feedback, every slot or some; atomic
(a failure at any frame advances nothing); typed errors for chunks that do not fit."""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, EngineError, StateError
from rnnrt.runtime.pool import StreamPool
from tests.conftest import converted_golden

CASES = ["a_lstm_stream_t1n1", "c_lstm_stacked_ip_softmax", "g1_lrcn_conv_lstm", "g4_mixed_ops",
         "i_embed_lstm_lm_stream"]


def _user_inputs(session):
    b = session.io
    return [n for n in b.input_names if b.cont is None or n != b.cont.spec.name]


def _chunk(session, rng, k, n):
    """K frames of ``n`` rows per user input, stacked along a new axis 0."""
    b = session.io
    out = {}
    for name in _user_inputs(session):
        shape = (k,) + b.inputs[name].full_shape(n, {})
        if name == "input_sentence":  # Embed: integer word ids stored as float
            out[name] = rng.integers(0, 17, shape).astype(np.float32)
        else:
            out[name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return out


def _assert_same_state(a, b, what):
    for name, value in a.state.items():
        assert value.tobytes() == b.state[name].tobytes(), f"{what}: state {name}"
    np.testing.assert_array_equal(a.sequence_starts, b.sequence_starts, err_msg=f"{what}: sequence starts")


@pytest.fixture(scope="module")
def models(tmp_path_factory, golden):
    cache = {}

    def get(name, batch):
        if (name, batch) not in cache:
            cache[(name, batch)] = converted_golden(golden(name), tmp_path_factory, batch)
        return cache[(name, batch)]

    return get


@pytest.mark.parametrize("feedback", ["copy", "swap"])
@pytest.mark.parametrize("batch", ["dynamic", None])
@pytest.mark.parametrize("name", CASES)
def test_chunk_equals_steps(models, name, batch, feedback):
    """Every slot and lists of slots (gather on a dynamic batch, scatter on a fixed one), resets between
    chunks (the continuation's 0 at frame 0 only), K from 1 to 5: outputs and state bit-exact vs step."""
    path = models(name, batch)
    kw = {"batch_size": 4} if batch else {}
    rng = np.random.default_rng(3)
    with rnnrt.load(path, backend="onnxruntime", feedback=feedback, threads=1, **kw) as one, \
            rnnrt.load(path, backend="onnxruntime", feedback=feedback, threads=1, **kw) as chunked:
        B = one.batch_size
        plan = [None, [B - 1], None, list(range(B))[::-1], [0] if B == 1 else [1, 0]]
        for call, slots in enumerate(plan):
            if call in (2, 4):
                one.reset(slots=[0])
                chunked.reset(slots=[0])
            k = call + 1
            n = B if slots is None else len(slots)
            frames = _chunk(one, rng, k, n)
            want = [one.step({name: v[j] for name, v in frames.items()}, slots=slots) for j in range(k)]
            got = chunked.step_chunk(frames, slots=slots)
            assert sorted(got) == sorted(want[0])
            for out, value in got.items():
                assert value.shape == (k,) + want[0][out].shape, out
                assert value.tobytes() == np.stack([w[out] for w in want]).tobytes(), f"call {call}: {out}"
            _assert_same_state(one, chunked, f"call {call}")


def test_chunk_is_atomic(models, monkeypatch):
    """An engine failure at frame 3 of 4: EngineError naming the frame; no slot advanced (state, marks);
    the same chunk sent again gives what an unbroken run gives. The step-by-step fallback of executors
    without run_chunk (device) is atomic too."""
    path = models("a_lstm_stream_t1n1", "dynamic")
    rng = np.random.default_rng(4)
    for fallback in (False, True):
        with rnnrt.load(path, backend="onnxruntime", batch_size=3, threads=1) as s, \
                rnnrt.load(path, backend="onnxruntime", batch_size=3, threads=1) as ref:
            if fallback:
                monkeypatch.setattr(s.executor, "run_chunk", None)
            first = _chunk(s, rng, 2, 3)
            s.step_chunk(first)
            ref.step_chunk(first)
            s.reset(slots=[2])
            ref.reset(slots=[2])
            frames = _chunk(s, rng, 4, 2)
            real, calls = s.engine.execute, []

            def execute(feeds, outputs=None):
                calls.append(1)
                if len(calls) == 3:
                    raise EngineError("device lost")
                return real(feeds, outputs)

            monkeypatch.setattr(s.engine, "execute", execute)
            with pytest.raises(EngineError, match="device lost") as info:
                s.step_chunk(frames, slots=[2, 0])
            if not fallback:
                assert "frame 3 of 4" in str(info.value) and "as before the chunk" in str(info.value)
            _assert_same_state(ref, s, f"after the failure (fallback={fallback})")
            monkeypatch.setattr(s.engine, "execute", real)
            got = s.step_chunk(frames, slots=[2, 0])
            want = ref.step_chunk(frames, slots=[2, 0])
            for out, value in want.items():
                assert got[out].tobytes() == value.tobytes(), out
            _assert_same_state(ref, s, f"after the retry (fallback={fallback})")


def test_fallback_equals_run_chunk(models, monkeypatch):
    """The step-by-step fallback gives the same outputs and state as the host executor's run_chunk."""
    path = models("c_lstm_stacked_ip_softmax", "dynamic")
    rng = np.random.default_rng(5)
    with rnnrt.load(path, backend="onnxruntime", batch_size=4, threads=1) as s, \
            rnnrt.load(path, backend="onnxruntime", batch_size=4, threads=1) as ref:
        monkeypatch.setattr(s.executor, "run_chunk", None)
        for slots in (None, [3, 1], [0]):
            n = 4 if slots is None else len(slots)
            frames = _chunk(s, rng, 3, n)
            got, want = s.step_chunk(frames, slots=slots), ref.step_chunk(frames, slots=slots)
            for out, value in want.items():
                assert got[out].tobytes() == value.tobytes(), out
            _assert_same_state(ref, s, f"slots {slots}")


def test_chunk_errors_are_typed_and_advance_nothing(models):
    path = models("a_lstm_stream_t1n1", "dynamic")
    rng = np.random.default_rng(6)
    with rnnrt.load(path, backend="onnxruntime", batch_size=2, threads=1) as s, \
            rnnrt.load(path, backend="onnxruntime", batch_size=2, threads=1) as ref:
        s.step_chunk(_chunk(s, rng, 1, 2))
        ref.step({"data": np.zeros((1, 2, 5), np.float32)})  # not compared; the next line copies the state
        ref.write_state([0, 1], s.read_state([0, 1]))
        with pytest.raises(BindingError, match=r"(?s)Input 'data' \| Received shape \(3, 1, 2, 6\).*\[3, 1, 2, 5\] "
                                               r"\(frames along axis 0, batch size 2\)"):
            s.step_chunk({"data": np.zeros((3, 1, 2, 6), np.float32)})
        with pytest.raises(BindingError, match=r"Input 'data' \| Received shape \(1, 2, 5\)"):
            s.step_chunk(np.zeros((1, 2, 5), np.float32))  # one frame without the K axis
        with pytest.raises(BindingError, match=r"no frames along axis 0"):
            s.step_chunk(np.zeros((0, 1, 2, 5), np.float32))
        with pytest.raises(BindingError, match=r"Input 'cont' \| Has 2 frames along axis 0, input 'data' has 3"):
            s.step_chunk({"data": np.zeros((3, 1, 2, 5), np.float32), "cont": np.ones((2, 1, 2), np.float32)})
        with pytest.raises(BindingError, match=r"Input 'lstm1_h0' \| Is a state input|Is not an input"):
            s.step_chunk({"data": np.zeros((3, 1, 2, 5), np.float32), "lstm1_h0": np.zeros((3, 1, 2, 4))})
        with pytest.raises(BindingError, match=r"Received dtype float64"):
            s.step_chunk(np.zeros((3, 1, 2, 5), np.float64))
        with pytest.raises(BindingError, match=r"Input 'data' \| Received shape \(\), no frames along axis 0"):
            s.step_chunk(3.0)
        with pytest.raises(BindingError, match=r"(?s)Received shape \(3, 1, 1, 5\).*batch size 2"):
            s.step_chunk({"data": np.zeros((3, 1, 1, 5), np.float32)}, slots=[0, 1])
        _assert_same_state(ref, s, "after the refusals")
        s.close()
        with pytest.raises(StateError, match="step_chunk\\(\\) was called after close"):
            s.step_chunk(np.zeros((1, 1, 2, 5), np.float32))


def test_pool_step_chunk_equals_step_batch(models):
    """pool.step_chunk == step_batch K times on a twin pool: outputs, each stream's state and steps; an
    unknown stream or a bad chunk is refused and no stream advances."""
    path = models("a_lstm_stream_t1n1", "dynamic")
    rng = np.random.default_rng(7)
    with rnnrt.load(path, backend="onnxruntime", batch_size=6, threads=1) as a, \
            rnnrt.load(path, backend="onnxruntime", batch_size=6, threads=1) as b:
        pool, twin = StreamPool(a), StreamPool(b)
        for p in (pool, twin):
            for sid in "abcde":
                p.open(sid)
        for call, ids in enumerate([("a", "b", "c", "d", "e"), ("c", "a"), ("e",), ("b", "d", "a")]):
            if call == 2:
                pool.reset("e")
                twin.reset("e")
            k = 1 + call % 3
            x = rng.uniform(-1, 1, (k, 1, len(ids), 5)).astype(np.float32)
            got = pool.step_chunk(ids, x)["lstm1"]
            want = np.stack([twin.step_batch(ids, x[j])["lstm1"] for j in range(k)])
            assert got.tobytes() == want.tobytes(), f"call {call}"
        for sid in "abcde":
            mine, theirs = pool.snapshot(sid), twin.snapshot(sid)
            assert (mine.steps, mine.at_start) == (theirs.steps, theirs.at_start), sid
            for name, value in theirs.tensors.items():
                assert mine.tensors[name].tobytes() == value.tobytes(), (sid, name)
        before = {sid: pool.snapshot(sid) for sid in "abcde"}
        with pytest.raises(StateError, match="'zz' \\| Is not open"):
            pool.step_chunk(["a", "zz"], np.zeros((2, 1, 2, 5), np.float32))
        with pytest.raises(BindingError, match="Stream 'a' \\| Is listed twice"):
            pool.step_chunk(["a", "a"], np.zeros((2, 1, 2, 5), np.float32))
        with pytest.raises(BindingError, match="Received shape \\(2, 1, 3, 5\\)"):
            pool.step_chunk(["a", "b"], np.zeros((2, 1, 3, 5), np.float32))
        with pytest.raises(BindingError, match="stream_ids is a str"):
            pool.step_chunk("ab", np.zeros((2, 1, 2, 5), np.float32))
        for sid, state in before.items():
            after = pool.snapshot(sid)
            assert after.steps == state.steps, sid
            for name, value in state.tensors.items():
                assert after.tensors[name].tobytes() == value.tobytes(), (sid, name)
