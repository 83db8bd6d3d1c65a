"""StreamPool: many streams through one Session equal each stream alone; idle streams keep their state;
snapshot/restore moves a stream bit-exactly (ONNX Runtime, golden Caffe models with a dynamic batch)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import rnnrt
import rnnrt.ir.config
from rnnrt.errors import BindingError, ConfigError, SnapshotError, StateError
from rnnrt.runtime.pool import StreamPool, StreamState

# LSTM-only golden cases that convert with a dynamic batch (one slot per stream).
POOL_CASES = ["a_lstm_stream_t1n1", "c_lstm_stacked_ip_softmax", "e_lstm_static_input", "i_embed_lstm_lm_stream"]


def _load(path, batch):
    return rnnrt.load(path, backend="onnxruntime", batch_size=batch, threads=1)


def _frame(cfg, rng):
    """One stream's frame (batch dim 1), continuation omitted (the pool / Session fills it)."""
    frame = {}
    for t in cfg.inputs:
        if cfg.continuation is not None and t.name == cfg.continuation.input:
            continue
        shape = [1 if i == t.batch_axis else d for i, d in enumerate(t.shape)]
        if t.name == "input_sentence":  # Embed: integer word ids stored as float
            frame[t.name] = rng.integers(0, 17, shape).astype(np.float32)
        else:
            frame[t.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return frame


def _schedule(rng, n_streams, ticks):
    """Per stream: the ticks it is open, the ticks it has a frame, and the ticks before which it resets."""
    plan = []
    for _ in range(n_streams):
        start = int(rng.integers(0, ticks // 2))
        stop = int(rng.integers(start + 4, ticks + 1))
        present = [t for t in range(start, stop) if rng.random() < 0.7]
        resets = {t for t in present[2:] if rng.random() < 0.1}
        plan.append((start, stop, present, resets))
    return plan


@pytest.mark.parametrize("name", POOL_CASES)
@pytest.mark.parametrize("batch", [16, 64])
def test_64_streams_equal_solo_sessions(golden, dynamic, name, batch):
    """64 streams with random open/close times, gaps and resets equal each stream run alone (bit-exact)."""
    path = dynamic(name)
    rng = np.random.default_rng(batch)
    ticks, n = 24, 64
    plan = _schedule(rng, n, ticks)
    cfg = rnnrt.ir.config.load_config(path)
    frames = {(s, t): _frame(cfg, rng) for s, (_, _, present, _) in enumerate(plan) for t in present}

    # Reference: every stream through its own batch-1 Session.
    expected = {}
    with _load(path, 1) as solo:
        for s, (_, _, present, resets) in enumerate(plan):
            solo.reset()
            for t in present:
                if t in resets:
                    solo.reset()
                expected[(s, t)] = solo.step(frames[(s, t)])

    got = {}
    with _load(path, batch) as session:
        pool = StreamPool(session)
        open_ = set()
        for t in range(ticks):
            for s, (start, stop, _, _) in enumerate(plan):
                if t == stop and s in open_:
                    pool.close(s)
                    open_.discard(s)
            for s, (start, stop, _, _) in enumerate(plan):
                if t == start and len(open_) < batch:
                    pool.open(s)
                    open_.add(s)
            feed = {}
            for s in open_:
                if (s, t) in frames:
                    if t in plan[s][3]:
                        pool.reset(s)
                    frame = frames[(s, t)]
                    # Single-input models: odd streams pass a bare array (the pool's fast path).
                    feed[s] = next(iter(frame.values())) if (len(frame) == 1 and s % 2) else frame
            for s, outs in pool.step(feed).items():
                got[(s, t)] = outs
    assert len(got) > 100, "the schedule must exercise the pool"
    for key, outs in got.items():
        for out, ref in expected[key].items():
            np.testing.assert_array_equal(outs[out], ref, err_msg=f"{name} stream {key[0]} tick {key[1]} {out}")


def test_absent_frames_leave_state_bit_identical(dynamic):
    path = dynamic("c_lstm_stacked_ip_softmax")
    cfg = rnnrt.ir.config.load_config(path)
    rng = np.random.default_rng(1)
    with _load(path, 8) as session:
        pool = StreamPool(session)
        for s in range(6):
            pool.open(s)
        pool.step({s: _frame(cfg, rng) for s in range(6)})
        before = {s: pool.snapshot(s) for s in range(6)}
        for _ in range(3):  # streams 0-2 step, 3-5 are absent
            pool.step({s: _frame(cfg, rng) for s in range(3)})
        for s in range(3, 6):
            after = pool.snapshot(s)
            for k, v in before[s].tensors.items():
                assert after.tensors[k].tobytes() == v.tobytes(), f"stream {s} {k} changed while absent"
            assert after.steps == before[s].steps == 1
        moved = pool.snapshot(0)
        assert any(not np.array_equal(moved.tensors[k], before[0].tensors[k]) for k in moved.tensors)


def test_snapshot_restore_into_other_pool_is_bit_exact(dynamic):
    path = dynamic("c_lstm_stacked_ip_softmax")
    cfg = rnnrt.ir.config.load_config(path)
    rng = np.random.default_rng(2)
    xs = [_frame(cfg, rng) for _ in range(8)]
    with _load(path, 4) as s1, _load(path, 4) as s2, _load(path, 4) as s3:
        stay, a, b = StreamPool(s1), StreamPool(s2), StreamPool(s3)
        stay.open("x")
        a.open("x")
        b.open("other")  # the moved stream lands in another slot
        for x in xs[:4]:
            stay.step({"x": x})
            a.step({"x": x, } )
            b.step({"other": x})
        blob = a.snapshot("x").to_bytes()
        a.close("x")
        slot = b.restore("y", StreamState.from_bytes(blob))
        assert slot == 1
        for x in xs[4:]:
            want = stay.step({"x": x})["x"]
            got = b.step({"y": x})["y"]
            np.testing.assert_array_equal(got["prob"], want["prob"])


def test_restore_keeps_t0_of_a_fresh_stream(dynamic):
    """A stream snapshotted before its first frame still gets cont=0 at its first frame after moving."""
    path = dynamic("a_lstm_stream_t1n1")
    cfg = rnnrt.ir.config.load_config(path)
    rng = np.random.default_rng(3)
    x = _frame(cfg, rng)
    with _load(path, 2) as s1, _load(path, 2) as s2:
        a, b = StreamPool(s1), StreamPool(s2)
        a.open("x")
        st = a.snapshot("x")
        assert st.at_start and st.steps == 0
        b.restore("x", st)
        with _load(path, 1) as solo:
            np.testing.assert_array_equal(b.step({"x": x})["x"]["lstm1"], solo.step(x)["lstm1"])


def test_restore_into_other_model_is_a_typed_error(dynamic):
    a_path, c_path = dynamic("a_lstm_stream_t1n1"), dynamic("c_lstm_stacked_ip_softmax")
    with _load(a_path, 2) as sa, _load(c_path, 2) as sc:
        a, c = StreamPool(sa), StreamPool(sc)
        a.open("x")
        state = a.snapshot("x")
        with pytest.raises(StateError, match="does not fit this model"):
            c.restore("x", state)
        assert "x" not in c and c.free_slots == 2
        # Same shapes, different model file: refused unless asked.
        other = StreamState(model="sha256:0", tensors=state.tensors, outputs=state.outputs,
                            batch_axes=state.batch_axes)
        with pytest.raises(StateError, match="comes from model"):
            a.restore("y", other)
        a.restore("y", other, check_model=False)
        assert "y" in a


def test_state_bytes_roundtrip_and_corruption(dynamic):
    path = dynamic("c_lstm_stacked_ip_softmax")
    with _load(path, 2) as s:
        pool = StreamPool(s)
        pool.open(7)
        pool.step({7: _frame(rnnrt.ir.config.load_config(path), np.random.default_rng(4))})
        st = pool.snapshot(7)
    blob = st.to_bytes()
    back = StreamState.from_bytes(blob)
    assert back.signature() == st.signature() and back.model == st.model and back.steps == 1
    for k in st.tensors:
        assert back.tensors[k].tobytes() == st.tensors[k].tobytes()
    with pytest.raises(SnapshotError, match="not a serialized StreamState"):
        StreamState.from_bytes(b"garbage")
    with pytest.raises(SnapshotError, match="corrupt"):
        StreamState.from_bytes(blob[:-4])


def test_full_pool_and_unknown_streams_are_typed_errors(dynamic):
    path = dynamic("a_lstm_stream_t1n1")
    with _load(path, 2) as s:
        pool = StreamPool(s)
        assert pool.open("a") == 0 and pool.open("b") == 1
        with pytest.raises(StateError, match="All 2 slots are taken"):
            pool.open("c")
        with pytest.raises(StateError, match="already open"):
            pool.open("a")
        pool.close("a")
        assert pool.open("c") == 0
        with pytest.raises(StateError, match="'zz' \\| Is not open"):
            pool.step({"zz": np.zeros((1, 1, 5), np.float32)})
        with pytest.raises(StateError, match="Is not open"):
            pool.close("a")
        pool.close("a", missing_ok=True)


def test_bad_frames_are_binding_errors_and_nothing_advances(dynamic):
    path = dynamic("a_lstm_stream_t1n1")
    with _load(path, 4) as s:
        pool = StreamPool(s)
        pool.open("a")
        pool.open("b")
        good = np.ones((1, 1, 5), np.float32)
        before = pool.snapshot("a")
        with pytest.raises(BindingError, match="Stream 'b' input 'data' \\| Received shape \\(1, 2, 5\\)"):
            pool.step({"a": good, "b": np.ones((1, 2, 5), np.float32)})
        with pytest.raises(BindingError, match="Received dtype float64"):
            pool.step({"a": good, "b": np.ones((1, 1, 5))})
        with pytest.raises(BindingError, match="unknown input 'bogus'"):
            pool.step({"a": good, "b": {"data": good, "bogus": good}})
        with pytest.raises(BindingError, match="no input 'data'"):
            pool.step({"a": good, "b": {}})
        after = pool.snapshot("a")
        assert after.steps == 0 and all(np.array_equal(after.tensors[k], before.tensors[k]) for k in after.tensors)


def test_idle_streams_are_released(dynamic):
    path = dynamic("a_lstm_stream_t1n1")
    now = [0.0]
    released = []
    with _load(path, 2) as s:
        pool = StreamPool(s, idle_timeout=10.0, clock=lambda: now[0], on_expire=released.append)
        pool.open("a")
        pool.open("b")
        now[0] = 8.0
        pool.step({"a": np.zeros((1, 1, 5), np.float32)})
        now[0] = 15.0
        assert pool.open("c") == 1  # 'b' idle 15 s > 10 s: released to make room
        assert released == ["b"] and "b" not in pool
        now[0] = 30.0
        assert sorted(pool.expire()) == ["a", "c"] and len(pool) == 0
        with pytest.raises(StateError, match="idle_timeout"):
            pool.step({"a": np.zeros((1, 1, 5), np.float32)})


def test_output_without_batch_axis_is_refused(dynamic):
    # Inputs without a batch axis take shared={...} (tests/runtime/test_pool_shared.py); an output cannot be split.
    import types

    from rnnrt.ir.config import load_config

    cfg = load_config(dynamic("e_lstm_static_input"))
    name = cfg.outputs[0].name
    outputs = [t.model_copy(update={"batch_axis": None}) if t.name == name else t for t in cfg.outputs]
    fake = types.SimpleNamespace(config=cfg.model_copy(update={"outputs": outputs}), batch_size=4)
    with pytest.raises(ConfigError, match=f"Output '{name}' \\| Has no batch axis"):
        StreamPool(fake)


def test_open_close_from_other_threads_while_stepping(dynamic):
    """step() on one thread while others open/close: no errors, and a stream stepped by the main thread
    throughout equals its solo run."""
    path = dynamic("a_lstm_stream_t1n1")
    cfg = rnnrt.ir.config.load_config(path)
    rng = np.random.default_rng(5)
    xs = [_frame(cfg, rng) for _ in range(200)]
    errors: list = []
    stop = threading.Event()
    with _load(path, 16) as s:
        pool = StreamPool(s)
        pool.open("main")

        def churn(k: int) -> None:
            i = 0
            try:
                while not stop.is_set():
                    sid = f"t{k}-{i % 5}"
                    if sid in pool:
                        pool.close(sid)
                    else:
                        pool.open(sid)
                        pool.reset(sid)
                    i += 1
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=churn, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        got = []
        try:
            for x in xs:
                frames = {"main": x}
                frames.update({sid: x for sid in list(pool) if sid != "main" and sid in pool})
                try:
                    out = pool.step(frames)
                except StateError:
                    out = pool.step({"main": x})  # a churned stream closed between listing and stepping
                got.append(out["main"]["lstm1"])
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert not errors, errors
    with _load(path, 1) as solo:
        for x, y in zip(xs, got):
            np.testing.assert_array_equal(y, solo.step(x)["lstm1"])


def test_session_read_write_state_rows(dynamic):
    path = dynamic("a_lstm_stream_t1n1")
    with _load(path, 3) as s:
        s.step(np.random.default_rng(6).uniform(-1, 1, (1, 3, 5)).astype(np.float32))
        rows = s.read_state([2, 0])
        assert rows["lstm1.h0"].shape == (2, 7)
        np.testing.assert_array_equal(rows["lstm1.h0"][0], s.state["lstm1.h0"][2])
        s.write_state([1], {k: v[:1] for k, v in rows.items()})
        np.testing.assert_array_equal(s.state["lstm1.c0"][1], s.state["lstm1.c0"][2])
        with pytest.raises(BindingError, match="Expected a float32 array of shape \\(1, 7\\)"):
            s.write_state([1], {k: v for k, v in rows.items()})
        with pytest.raises(BindingError, match="Slot 3"):
            s.read_state([3])


def _cont_seen(session, feeds, slots):
    """The continuation input the Session runs with for these feeds: fed, or its auto fill (whole batch)."""
    cont = np.ones((1, session.batch_size), np.float32)
    rows = np.arange(len(next(iter(feeds.values()))[0])) if slots is None else np.asarray(slots)
    if "cont" in feeds:
        cont[0, rows] = feeds["cont"][0]
    else:
        marks = session.sequence_starts
        cont[0, rows] = np.where(marks[rows], 0, 1)
    return cont


def test_pool_fills_continuation_per_stream(dynamic, monkeypatch):
    """cont is 0 at t=0 only for streams opened or reset since their last frame; a fed cont is kept."""
    path = dynamic("a_lstm_stream_t1n1")
    with _load(path, 4) as s:
        pool = StreamPool(s)
        fed = []
        real = s.step
        monkeypatch.setattr(s, "step", lambda feeds, slots=None: (fed.append(_cont_seen(s, feeds, slots)),
                                                                   real(feeds, slots=slots))[1])
        x = np.zeros((1, 1, 5), np.float32)
        pool.open("a")
        pool.step({"a": x})
        pool.open("b")
        pool.step({"a": x, "b": x})
        pool.reset("a")
        pool.step({"a": x, "b": x})
        pool.step({"a": {"data": x, "cont": np.zeros((1, 1), np.float32)}, "b": x})
    assert fed[0][0, 0] == 0
    np.testing.assert_array_equal(fed[1][0, :2], [1, 0])
    np.testing.assert_array_equal(fed[2][0, :2], [0, 1])
    np.testing.assert_array_equal(fed[3][0, :2], [0, 1])


def test_repeated_frames_reuse_the_plan_and_match_solo_sessions(dynamic):
    """The same streams stepped in the same order (the cached plan), in reverse slot order (scattered
    packing), with one stream absent and one reset between steps, equal each stream alone."""
    path = dynamic("a_lstm_stream_t1n1")
    cfg = rnnrt.ir.config.load_config(path)
    rng = np.random.default_rng(7)
    ids = ["p", "q", "r", "s"]
    ticks = 6
    xs = {(sid, t): _frame(cfg, rng)["data"] for sid in ids for t in range(ticks)}
    absent = {(3, "r")}
    resets = {(4, "q")}
    with _load(path, 4) as session:
        pool = StreamPool(session)
        for sid in ids:
            pool.open(sid)
        got = {}
        for t in range(ticks):
            order = ids if t % 3 else ids[::-1]
            for sid in order:
                if (t, sid) in resets:
                    pool.reset(sid)
            out = pool.step({sid: xs[(sid, t)] for sid in order if (t, sid) not in absent})
            assert list(out) == [sid for sid in order if (t, sid) not in absent]
            got.update({(sid, t): o["lstm1"] for sid, o in out.items()})
    with _load(path, 1) as solo:
        for sid in ids:
            solo.reset()
            for t in range(ticks):
                if (t, sid) in resets:
                    solo.reset()
                if (t, sid) in absent:
                    continue
                np.testing.assert_array_equal(got[(sid, t)], solo.step(xs[(sid, t)])["lstm1"],
                                              err_msg=f"stream {sid} tick {t}")


def test_outputs_survive_later_steps_and_slots_do_not_alias(dynamic):
    path = dynamic("a_lstm_stream_t1n1")
    rng = np.random.default_rng(8)
    with _load(path, 3) as session:
        pool = StreamPool(session)
        for sid in "abc":
            pool.open(sid)
        frames = {sid: rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32) for sid in "abc"}
        first = pool.step(frames)
        kept = {sid: o["lstm1"].copy() for sid, o in first.items()}
        assert first["a"]["lstm1"].shape == (1, 1, 7)
        pool.step(frames)
        pool.step({"b": frames["b"]})
        for sid in "abc":
            np.testing.assert_array_equal(first[sid]["lstm1"], kept[sid])
        first["a"]["lstm1"][...] = 42.0  # the caller's arrays: writing one row touches no other stream
        np.testing.assert_array_equal(first["b"]["lstm1"], kept["b"])


def test_safe_cast_and_list_frames_equal_float32_frames(dynamic):
    path = dynamic("a_lstm_stream_t1n1")
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, (3, 1, 1, 5)).astype(np.float16)
    with _load(path, 4) as s1, _load(path, 4) as s2:
        mixed, plain = StreamPool(s1), StreamPool(s2)
        for pool in (mixed, plain):
            for sid in range(3):
                pool.open(sid)
        got = mixed.step({0: x[0], 1: x[1].astype(np.float32), 2: {"data": x[2].tolist()}})
        want = plain.step({i: x[i].astype(np.float32) for i in range(3)})
    for i in range(3):
        np.testing.assert_array_equal(got[i]["lstm1"], want[i]["lstm1"])


def test_streams_released_by_a_failing_step_are_still_reported(dynamic):
    path = dynamic("a_lstm_stream_t1n1")
    now = [0.0]
    released = []
    with _load(path, 2) as s:
        pool = StreamPool(s, idle_timeout=10.0, clock=lambda: now[0], on_expire=released.append)
        pool.open("a")
        pool.open("b")
        now[0] = 20.0
        with pytest.raises(StateError, match="'a' \\| Is not open"):
            pool.step({"a": np.zeros((1, 1, 5), np.float32)})
        assert sorted(released) == ["a", "b"] and len(pool) == 0


def test_uniform_bad_frames_are_caught_by_the_bulk_path(dynamic):
    """Every frame wrong in the same way (the bulk path's checks), in slot order and scattered."""
    path = dynamic("a_lstm_stream_t1n1")
    with _load(path, 4) as s:
        pool = StreamPool(s)
        for sid in "abc":
            pool.open(sid)
        for order in ("abc", "cba"):
            with pytest.raises(BindingError, match="Received dtype float64"):
                pool.step({sid: np.ones((1, 1, 5)) for sid in order})
            with pytest.raises(BindingError, match="Received shape \\(1, 5, 1\\)"):
                pool.step({sid: np.ones((1, 5, 1), np.float32) for sid in order})
            # Batch dims 1 + 2 + 0 add up to the streams stepped: still refused.
            with pytest.raises(BindingError, match="Stream 'b' input 'data' \\| Received shape \\(1, 2, 5\\)"):
                pool.step({"a": np.ones((1, 1, 5), np.float32), "b": np.ones((1, 2, 5), np.float32),
                           "c": np.ones((1, 0, 5), np.float32)})
        assert pool.snapshot("a").steps == 0
        # Strided (non-contiguous) frames are fine.
        big = np.random.default_rng(10).uniform(-1, 1, (1, 3, 10)).astype(np.float32)
        got = pool.step({sid: big[:, i:i + 1, ::2] for i, sid in enumerate("abc")})
    with _load(path, 3) as ref:
        want = ref.step(np.ascontiguousarray(big[:, :, ::2]))["lstm1"]
    for i, sid in enumerate("abc"):
        np.testing.assert_array_equal(got[sid]["lstm1"], want[:, i:i + 1])


def _pack_rows(cfg, frames):
    """Per-stream frames (batch dim 1) packed as one batch along each input's batch axis."""
    axes = {t.name: t.batch_axis for t in cfg.inputs}
    return {name: np.concatenate([f[name] for f in frames], axis=axes[name]) for name in frames[0]}


@pytest.mark.parametrize("name", POOL_CASES)
def test_step_batch_equals_solo_sessions(golden, dynamic, name):
    """step_batch with packed feeds, streams in shuffled orders from a few recurring patterns (the plan
    cache), idle streams, resets and a close/reopen between ticks, equals each stream alone (bit-exact)."""
    path = dynamic(name)
    cfg = rnnrt.ir.config.load_config(path)
    rng = np.random.default_rng(11)
    n, ticks = 24, 16
    patterns = [tuple(int(s) for s in rng.permutation(n)[: int(rng.integers(n // 2, n + 1))]) for _ in range(3)]
    schedule = [patterns[int(rng.integers(3))] for _ in range(ticks)]
    resets = {(t, int(rng.integers(n))) for t in range(2, ticks)}
    reopen = {8: 5}  # before tick 8, stream 5 is closed and opened again: a new sequence in a new slot
    frames = {(s, t): _frame(cfg, rng) for t, ids in enumerate(schedule) for s in ids}
    got = {}
    with _load(path, 32) as session:
        pool = StreamPool(session)
        for s in range(n):
            pool.open(s)
        for t, ids in enumerate(schedule):
            if t in reopen:
                pool.close(reopen[t])
                pool.open("filler")  # takes the freed slot, so the reopened stream moves
                pool.open(reopen[t])
            for s in ids:
                if (t, s) in resets:
                    pool.reset(s)
            outs = pool.step_batch(ids, _pack_rows(cfg, [frames[(s, t)] for s in ids]))
            for out_name, value in outs.items():
                axis = next(o.batch_axis for o in cfg.outputs if o.name == out_name)
                for i, s in enumerate(ids):
                    got.setdefault((s, t), {})[out_name] = np.take(value, [i], axis=axis)
    with _load(path, 1) as solo:
        for s in range(n):
            solo.reset()
            for t, ids in enumerate(schedule):
                if (t, s) in resets or reopen.get(t) == s:
                    solo.reset()
                if s not in ids:
                    continue
                for out_name, ref in solo.step(frames[(s, t)]).items():
                    np.testing.assert_array_equal(got[(s, t)][out_name], ref,
                                                  err_msg=f"{name} stream {s} tick {t} {out_name}")


def test_step_batch_mixed_with_step_and_typed_errors(dynamic):
    """step and step_batch interleave on one pool; bad calls are typed errors that advance no stream."""
    path = dynamic("a_lstm_stream_t1n1")
    cfg = rnnrt.ir.config.load_config(path)
    rng = np.random.default_rng(5)
    xs = {(s, t): _frame(cfg, rng)["data"] for s in "abc" for t in range(6)}
    with _load(path, 4) as session:
        pool = StreamPool(session)
        for s in "abc":
            pool.open(s)
        got = {}
        for t in range(6):
            if t % 2:
                out = pool.step({s: xs[(s, t)] for s in "cab"})
                got.update({(s, t): o["lstm1"] for s, o in out.items()})
            else:
                ids = ("b", "c", "a")
                y = pool.step_batch(ids, np.concatenate([xs[(s, t)] for s in ids], axis=1))["lstm1"]
                got.update({(s, t): y[:, [i]] for i, s in enumerate(ids)})
        before = {s: pool.snapshot(s) for s in "abc"}
        two = np.zeros((1, 2, 5), np.float32)
        with pytest.raises(BindingError, match="Stream 'a' \\| Is listed twice"):
            pool.step_batch(["a", "a"], two)
        with pytest.raises(StateError, match="'zz' \\| Is not open"):
            pool.step_batch(["a", "zz"], two)
        with pytest.raises(BindingError, match="Received shape \\(1, 3, 5\\)"):
            pool.step_batch(["a", "b"], np.zeros((1, 3, 5), np.float32))
        with pytest.raises(BindingError, match="stream_ids is a str"):
            pool.step_batch("ab", two)
        with pytest.raises(BindingError, match="Stream id \\['x'\\] \\| Is not hashable"):
            pool.step_batch(["a", ["x"]], two)
        with pytest.raises(BindingError, match="Input 'bogus' \\| Is not an input of the model"):
            pool.step_batch(["a", "b"], {"data": two, "bogus": two})
        for s in "abc":
            after = pool.snapshot(s)
            assert after.steps == 6 and all(after.tensors[k].tobytes() == v.tobytes()
                                            for k, v in before[s].tensors.items())
        pool.close("a")
        with pytest.raises(StateError, match="'a' \\| Is not open"):
            pool.step_batch(("b", "c", "a"), np.zeros((1, 3, 5), np.float32))  # the cached plan is stale now
    with _load(path, 1) as solo:
        for s in "abc":
            solo.reset()
            for t in range(6):
                np.testing.assert_array_equal(got[(s, t)], solo.step(xs[(s, t)])["lstm1"], err_msg=f"{s} tick {t}")


def test_snapshot_many_equals_snapshots(dynamic):
    """snapshot_many (one state read) == snapshot of each stream; an unknown id reads nothing."""
    path = dynamic("c_lstm_stacked_ip_softmax")
    cfg = rnnrt.ir.config.load_config(path)
    rng = np.random.default_rng(9)
    with _load(path, 8) as session:
        pool = StreamPool(session)
        for s in "abcd":
            pool.open(s)
        pool.step({s: _frame(cfg, rng) for s in "abd"})
        pool.step({s: _frame(cfg, rng) for s in "bd"})
        pool.reset("d")  # pending: the snapshot sees zeros and a t=0 stream
        many = pool.snapshot_many(["d", "a", "c", "b"])
        assert list(many) == ["d", "a", "c", "b"]
        for s, state in many.items():
            one = pool.snapshot(s)
            assert (state.steps, state.at_start) == (one.steps, one.at_start)
            for name, arr in one.tensors.items():
                assert state.tensors[name].tobytes() == arr.tobytes(), (s, name)
        assert many["d"].at_start and not any(v.any() for v in many["d"].tensors.values())
        assert many["b"].steps == 2 and many["c"].steps == 0
        with pytest.raises(StateError, match="'zz' \\| Is not open"):
            pool.snapshot_many(["a", "zz"])
        assert pool.snapshot_many([]) == {}
