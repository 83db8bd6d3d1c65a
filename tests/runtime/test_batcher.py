"""StreamBatcher: many asyncio tasks and threads streaming through one batcher equal each stream alone
(bit-exact, ONNX Runtime), with resets, closes and reopens, bad frames, a full queue, cancellation, aclose
with frames pending, chunks; engine calls are counted to prove the batching."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

import rnnrt
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import BindingError, ConfigError, EngineError, QueueFullError, StateError
from rnnrt.importers.onnx.importer import convert_onnx
from rnnrt.runtime.batcher import StreamBatcher
from rnnrt.runtime.pool import StreamPool
from tests.models.onnx_sources import shared_sr_onnx
from tests.runtime.batcher_script import control
from tests.runtime.test_pool import _frame  # one stream's frame (batch dim 1), continuation omitted

# Dynamic-batch golden cases: batch axis 1 (T, N, ...) frames, a static input, a T=1 stream.
CASES = ["a_lstm_stream_t1n1", "c_lstm_stacked_ip_softmax", "e_lstm_static_input"]
POISON = 777.0  # a frame value the counting engine refuses (an engine-time failure, not a frame check)


def _load(path, batch, **kw):
    return rnnrt.load(path, backend="onnxruntime", batch_size=batch, threads=1, **kw)


def _poisoned(frame):
    bad = {k: v.copy() for k, v in frame.items()}
    next(iter(bad.values())).flat[0] = POISON
    return bad


class Counted:
    """Wraps a Session's engine: counts engine runs (and their batch rows), refuses poisoned feeds, can hold
    a run until released (to fill the queue behind it)."""

    def __init__(self, session):
        self.engine = session.engine
        self.calls = 0
        self.feeds = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        real = self.engine.execute

        def execute(feeds, *args, **kw):
            self.entered.set()
            self.hold.wait(30)
            if any(isinstance(v, np.ndarray) and v.dtype.kind == "f" and (v == POISON).any() for v in feeds.values()):
                raise EngineError("poisoned frame")
            self.calls += 1
            self.feeds.append(feeds)
            return real(feeds, *args, **kw)

        self.engine.execute = execute


def _script(rng, cfg, n_ops):
    """One stream's calls: frames, with resets, a close + reopen, a bad-shape frame and a poisoned frame."""
    ops = []
    for k in range(n_ops):
        r = rng.random()
        if k > 2 and r < 0.08:
            ops.append(("reset", None))
        elif k > 2 and r < 0.14:
            ops.append(("close", None))
        elif r < 0.18:
            ops.append(("badshape", {n: np.zeros((3, 3, 3), np.float32) for n in _frame(cfg, rng)}))
        elif r < 0.22:
            ops.append(("poison", _poisoned(_frame(cfg, rng))))
        else:
            ops.append(("frame", _frame(cfg, rng)))
    return ops


def _expected(path, scripts):
    """Each stream alone in a batch-1 Session: outputs per frame op; a failed frame leaves the state as it was."""
    out = {}
    with _load(path, 1) as solo:
        for sid, ops in scripts.items():
            solo.reset()
            got = []
            for kind, frame in ops:
                if kind in ("reset", "close"):
                    solo.reset()
                elif kind == "frame":
                    got.append(solo.step(frame))
            out[sid] = got
    return out


def _check(expected, got):
    for sid, want in expected.items():
        assert len(got[sid]) == len(want), sid
        for k, (g, w) in enumerate(zip(got[sid], want)):
            for name in w:
                np.testing.assert_array_equal(g[name], w[name], err_msg=f"stream {sid} frame {k} {name}")


@pytest.mark.parametrize("name", CASES)
def test_tasks_and_threads_equal_each_stream_alone(dynamic, name):
    """16 asyncio tasks and 6 threads, each one stream, through one batcher over a pool of 32 == solo Sessions,
    bit-exact; bad frames fail only their caller; the engine ran far fewer steps than frames."""
    path = dynamic(name)
    cfg = load_config(path)
    rng = np.random.default_rng(7)
    scripts = {sid: _script(rng, cfg, 30) for sid in [f"t{i}" for i in range(16)] + [f"th{i}" for i in range(6)]}
    expected = _expected(path, scripts)
    got = {sid: [] for sid in scripts}
    errors = {sid: [] for sid in scripts}

    with _load(path, 32) as session:
        pool = StreamPool(session)
        counted = Counted(session)
        batcher = StreamBatcher(pool, max_delay_ms=3.0)

        def record(sid, kind, result=None, err=None):
            if kind == "frame":
                assert err is None, (sid, err)
                got[sid].append(result)
            elif kind in ("badshape", "poison"):
                assert err is not None, (sid, kind)
                errors[sid].append(err)

        def thread_stream(sid):
            for kind, frame in scripts[sid]:
                if not control(batcher, sid, kind):
                    fut = batcher.submit(sid, frame)
                    try:
                        record(sid, kind, fut.result(30))
                    except (BindingError, EngineError) as err:
                        record(sid, kind, err=err)

        async def task_stream(sid, seed):
            r = np.random.default_rng(seed)
            for kind, frame in scripts[sid]:
                if not control(batcher, sid, kind):
                    try:
                        record(sid, kind, await batcher.step(sid, frame))
                    except (BindingError, EngineError) as err:
                        record(sid, kind, err=err)
                if r.random() < 0.3:
                    await asyncio.sleep(0.001)

        async def main():
            threads = [threading.Thread(target=thread_stream, args=(sid,)) for sid in scripts if sid.startswith("th")]
            for t in threads:
                t.start()
            await asyncio.gather(*(task_stream(sid, i) for i, sid in enumerate(scripts) if sid.startswith("t") and
                                   not sid.startswith("th")))
            for t in threads:
                await asyncio.get_running_loop().run_in_executor(None, t.join)
            await batcher.aclose()

        asyncio.run(main())
        _check(expected, got)
        for sid, errs in errors.items():
            kinds = [k for k, _ in scripts[sid] if k in ("badshape", "poison")]
            assert [type(e) for e in errs] == [BindingError if k == "badshape" else EngineError for k in kinds]
            assert all(f"Stream {sid!r}" in str(e) for e, k in zip(errs, kinds) if k == "badshape")
        frames = sum(len(v) for v in expected.values())
        m = batcher.metrics()
        assert m.frames == frames and m.failed == sum(len(e) for e in errors.values())
        # Batching happened: clearly fewer engine runs than frames (22 streams, one frame each per tick).
        assert counted.calls < frames / 3, (counted.calls, frames)
        assert m.mean_batch > 3 and m.queue_delay_ms[2] > 0 and m.steps_per_s > 0


@pytest.fixture(scope="module", params=["dynamic", "fixed"])
def sr_yaml(request, tmp_path_factory):
    # A bare single input x [N, 4] and an int64 scalar sr without a batch axis (Silero's shape of problem).
    step = convert_onnx(shared_sr_onnx("N" if request.param == "dynamic" else 4))
    return save_step_graph(step, tmp_path_factory.mktemp(request.param))


def _x(rng):
    return rng.standard_normal((1, 4)).astype(np.float32)


@contextlib.contextmanager
def _held(path, max_delay_ms=0.0, **kw):
    """``(batcher, counted)``: a batcher over a pool of 4 streams (sr shared) whose engine holds every run
    until ``counted.hold.set()`` (so that frames queue behind the one it holds)."""
    with _load(path, 4) as session:
        counted = Counted(session)
        counted.hold.clear()
        pool = StreamPool(session, shared={"sr": np.int64(16000)})
        yield StreamBatcher(pool, max_delay_ms=max_delay_ms, **kw), counted


def _solo(path, frames):
    with _load(path, 4) as s:
        return [s.step({"x": x, "sr": np.int64(16000)}, slots=[0])["y"] for x in frames]


def test_full_batch_frames_go_straight_into_the_session_input_buffers(sr_yaml):
    """Every slot has a frame: rows are written into Session.input_buffers() at each stream's slot and the
    engine reads those very arrays; outputs equal solo Sessions; bare frames and a shared input."""
    rng = np.random.default_rng(3)
    ids = ["a", "b", "c", "d"]
    frames = {sid: [_x(rng) for _ in range(6)] for sid in ids}
    got = {sid: [] for sid in ids}
    with _load(sr_yaml, 4) as session:
        pool = StreamPool(session, shared={"sr": np.int64(16000)})
        counted = Counted(session)
        bufs = session.input_buffers()
        with StreamBatcher(pool, max_delay_ms=50.0) as batcher:
            for k in range(6):
                futs = {sid: batcher.submit(sid, frames[sid][k]) for sid in reversed(ids)}  # not slot order
                for sid, f in futs.items():
                    got[sid].append(f.result(10)["y"])
        assert counted.calls == 6
        # After the first tick (which opened the streams), the engine read the Session's own buffers.
        assert all(feeds["x"] is bufs["x"] for feeds in counted.feeds[1:])
    for sid in ids:
        for g, w in zip(got[sid], _solo(sr_yaml, frames[sid])):
            assert g.shape == (1, 3)
            np.testing.assert_array_equal(g, w)


def test_second_frame_of_a_stream_waits_for_the_next_step(sr_yaml):
    """A stream's frames step one per engine call, in order, while other streams share those calls."""
    rng = np.random.default_rng(4)
    with _held(sr_yaml) as (batcher, counted):
        first = batcher.submit("z", _x(rng))  # holds the worker inside the engine
        assert counted.entered.wait(10)
        a = [_x(rng) for _ in range(3)]
        b = [_x(rng)]
        fa = [batcher.submit("a", x) for x in a]
        fb = [batcher.submit("b", x) for x in b]
        counted.hold.set()
        got_a = [f.result(10)["y"] for f in fa]
        fb[0].result(10)
        first.result(10)
        batcher.close()
        # 1 (z) + 3 ticks for a's three frames (b rides along in the first of them).
        assert counted.calls == 4
        assert [f["x"].shape[0] for f in counted.feeds[1:]] in ([2, 1, 1], [4, 4, 4])  # dynamic: rows; fixed: batch
    for g, w in zip(got_a, _solo(sr_yaml, a)):
        np.testing.assert_array_equal(g, w)


def test_full_queue_raises_and_queues_nothing(sr_yaml):
    rng = np.random.default_rng(5)
    with _held(sr_yaml, max_queue=3) as (batcher, counted):
        frames = [_x(rng) for _ in range(5)]
        futs = [batcher.submit("a", frames[0])]
        assert counted.entered.wait(10)  # the worker holds frame 0 (taken: not queued any more)
        futs += [batcher.submit("a", x) for x in frames[1:4]]
        with pytest.raises(QueueFullError, match="max_queue=3") as info:
            batcher.submit("a", frames[4])
        assert isinstance(info.value, StateError)
        with pytest.raises(QueueFullError):
            batcher.submit_chunk("b", [frames[4]])
        assert batcher.metrics().queued == 3
        counted.hold.set()
        got = [f.result(10)["y"] for f in futs]
        futs.append(batcher.submit("a", frames[4]))  # room again
        got.append(futs[-1].result(10)["y"])
        batcher.close()
    for g, w in zip(got, _solo(sr_yaml, frames)):
        np.testing.assert_array_equal(g, w)


def test_cancelled_frames_never_half_step_a_stream(sr_yaml):
    """A future cancelled while queued is dropped (the stream does not advance); an awaiting task cancelled
    while its frame waits does the same; a frame already taken steps to the end."""
    rng = np.random.default_rng(6)
    frames = [_x(rng) for _ in range(5)]
    with _held(sr_yaml) as (batcher, counted):
        f0 = batcher.submit("a", frames[0])
        assert counted.entered.wait(10)
        assert not f0.cancel()  # taken: it runs to the end
        f1 = batcher.submit("a", frames[1])
        assert f1.cancel()

        async def cancelled_task():
            task = asyncio.ensure_future(batcher.step("a", frames[2]))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled_task())
        f3 = batcher.submit("a", frames[3])
        counted.hold.set()
        got = [f0.result(10)["y"], f3.result(10)["y"]]
        with pytest.raises(CancelledError):
            f1.result()
        batcher.close()
        assert batcher.metrics().cancelled == 2
    # The stream saw frames 0 and 3 only.
    for g, w in zip(got, _solo(sr_yaml, [frames[0], frames[3]])):
        np.testing.assert_array_equal(g, w)


def test_aclose_drains_pending_frames_then_refuses(sr_yaml):
    rng = np.random.default_rng(8)
    frames = {sid: [_x(rng) for _ in range(4)] for sid in "abc"}
    with _held(sr_yaml, max_delay_ms=1.0) as (batcher, counted):

        async def main():
            futs = {sid: [batcher.submit(sid, x) for x in xs] for sid, xs in frames.items()}
            closing = asyncio.ensure_future(batcher.aclose())
            await asyncio.sleep(0.02)
            assert not closing.done()
            with pytest.raises(StateError, match="closed"):
                batcher.submit("a", frames["a"][0])
            counted.hold.set()
            await closing
            assert all(f.done() for fs in futs.values() for f in fs)
            return {sid: [f.result()["y"] for f in fs] for sid, fs in futs.items()}

        got = asyncio.run(main())
        assert counted.calls == 4  # four ticks of three streams each
        with pytest.raises(StateError):
            asyncio.run(batcher.step("a", frames["a"][0]))
    for sid in "abc":
        for g, w in zip(got[sid], _solo(sr_yaml, frames[sid])):
            np.testing.assert_array_equal(g, w)


def test_chunks_are_atomic_and_batched_with_other_chunks(dynamic):
    """Chunks of K frames step with Session.step_chunk (streams with the same K in one call); a chunk
    that fails at any frame leaves its stream as it was; single frames step alongside."""
    path = dynamic("a_lstm_stream_t1n1")
    cfg = load_config(path)
    rng = np.random.default_rng(9)
    with _load(path, 8) as session:
        pool = StreamPool(session)
        counted = Counted(session)
        batcher = StreamBatcher(pool, max_delay_ms=20.0)
        chunks = {sid: [_frame(cfg, rng) for _ in range(3)] for sid in ("a", "b")}
        single = _frame(cfg, rng)
        bad = [_frame(cfg, rng), _poisoned(_frame(cfg, rng))]
        futs = {sid: batcher.submit_chunk(sid, fr) for sid, fr in chunks.items()}
        fs = batcher.submit("s", single)
        fbad = batcher.submit_chunk("c", bad)
        after = _frame(cfg, rng)
        fafter = batcher.submit("c", after)
        outs = {sid: f.result(10) for sid, f in futs.items()}
        with pytest.raises(EngineError):
            fbad.result(10)
        out_s, out_after = fs.result(10), fafter.result(10)
        with pytest.raises(BindingError, match="no input|Got dict"):
            batcher.submit_chunk("d", {"data": single["data"]}).result(1)
        with pytest.raises(BindingError, match="Chunk frame 1: Stream .d. Input .data."):
            batcher.submit_chunk("d", [single, {"data": np.zeros((2, 1, 5), np.float32)}]).result(1)
        batcher.close()
    with _load(path, 1) as solo:
        for sid, fr in chunks.items():
            solo.reset()
            want = [solo.step(f)["lstm1"] for f in fr]
            assert outs[sid]["lstm1"].shape == (3,) + want[0].shape
            for k in range(3):
                np.testing.assert_array_equal(outs[sid]["lstm1"][k], want[k])
        solo.reset()
        np.testing.assert_array_equal(out_s["lstm1"], solo.step(single)["lstm1"])
        solo.reset()  # c's failed chunk left it at zero state
        np.testing.assert_array_equal(out_after["lstm1"], solo.step(after)["lstm1"])


def test_pool_full_fails_only_the_new_stream_and_expired_streams_never_restart_silently(sr_yaml):
    rng = np.random.default_rng(10)
    now = [0.0]
    with _load(sr_yaml, 4) as session:
        pool = StreamPool(session, shared={"sr": np.int64(16000)}, idle_timeout=5.0, clock=lambda: now[0])
        with StreamBatcher(pool, max_delay_ms=0.0) as batcher:
            for sid in "abcd":
                batcher.submit(sid, _x(rng)).result(10)
            with pytest.raises(StateError, match="slots are taken"):
                batcher.submit("e", _x(rng)).result(10)
            batcher.close_stream("d").result(10)
            batcher.submit("e", _x(rng)).result(10)  # d's slot
            # "a" idles past the timeout: the pool releases it when "b" steps.
            now[0] = 4.0
            batcher.submit("b", _x(rng)).result(10)
            now[0] = 7.0
            batcher.submit("b", _x(rng)).result(10)
            assert "a" not in pool
            with pytest.raises(StateError, match="released"):
                batcher.submit("a", _x(rng)).result(10)
            with pytest.raises(StateError, match="released"):
                batcher.submit("a", _x(rng)).result(10)  # still refused: no silent restart
            batcher.reset_stream("a")
            x = _x(rng)
            got = batcher.submit("a", x).result(10)["y"]
    np.testing.assert_array_equal(got, _solo(sr_yaml, [x])[0])


def test_arguments_are_checked(sr_yaml):
    with _load(sr_yaml, 4) as session:
        pool = StreamPool(session, shared={"sr": np.int64(16000)})
        with pytest.raises(ConfigError, match="StreamPool or"):
            StreamBatcher(session)
        with pytest.raises(ConfigError, match="max_delay_ms"):
            StreamBatcher(pool, max_delay_ms=-1)
        with pytest.raises(ConfigError, match="max_queue"):
            StreamBatcher(pool, max_queue=0)
        with StreamBatcher(pool, max_batch=100) as batcher:
            assert batcher.max_batch == 4 and batcher.max_queue == 32
            with pytest.raises(BindingError, match="not hashable"):
                batcher.submit([1], np.zeros((1, 4), np.float32))
            with pytest.raises(BindingError, match="no batch axis"):
                batcher.submit("a", {"x": np.zeros((1, 4), np.float32), "sr": np.int64(8000)}).result(1)
            with pytest.raises(BindingError, match="dtype"):
                batcher.submit("a", np.zeros((1, 4), np.int64)).result(1)
            assert "a" not in pool  # nothing reached the pool
        assert rnnrt.StreamBatcher is StreamBatcher


def test_close_from_a_done_callback_is_refused(sr_yaml):
    rng = np.random.default_rng(12)
    with _held(sr_yaml) as (batcher, counted):
        seen = []

        def callback(_):
            try:
                batcher.close()
            except StateError as err:
                seen.append(err)

        fut = batcher.submit("a", _x(rng))
        fut.add_done_callback(callback)  # before the result: the worker runs it
        counted.hold.set()
        fut.result(10)
        batcher.close()
        assert len(seen) == 1 and "done-callback" in str(seen[0])


def test_a_reused_frame_buffer_does_not_change_a_queued_frame(sr_yaml):
    rng = np.random.default_rng(13)
    frames = [_x(rng) for _ in range(3)]
    with _held(sr_yaml) as (batcher, counted):
        buf = np.empty((1, 4), np.float32)
        futs = []
        for x in frames:  # one buffer for every chunk, as an audio callback does
            buf[...] = x
            futs.append(batcher.submit("a", buf))
        buf[...] = 0
        counted.hold.set()
        got = [f.result(10)["y"] for f in futs]
        batcher.close()
    for g, w in zip(got, _solo(sr_yaml, frames)):
        np.testing.assert_array_equal(g, w)


def test_frames_of_a_checked_shape_are_still_refused_when_bad(sr_yaml):
    """submit() only copies a frame whose dtype and shape match one already checked; every other frame
    (wrong dtype, masked, non-contiguous, NaN under check_finite, another shape) gets the full check."""
    rng = np.random.default_rng(14)
    for finite in (False, True):
        with _load(sr_yaml, 4, check_finite=finite) as session:
            pool = StreamPool(session, shared={"sr": np.int64(16000)})
            with StreamBatcher(pool, max_delay_ms=0.0) as batcher:
                good = [_x(rng) for _ in range(3)]
                got = [batcher.submit("a", good[0]).result(10)["y"]]  # (1, 4) float32 checked once
                bad = {
                    "dtype": (np.zeros((1, 4), np.int16), "integers"),
                    "unsafe cast": (np.zeros((1, 4), np.float64), "dtype float64"),
                    "shape": (np.zeros((1, 5), np.float32), r"shape \(1, 5\)"),
                    "masked": (np.ma.masked_array(np.zeros((1, 4), np.float32)), "masked"),
                }
                if finite:
                    bad["nan"] = (np.full((1, 4), np.nan, np.float32), "NaN")
                for what, (frame, match) in bad.items():
                    with pytest.raises(BindingError, match=match):
                        batcher.submit("a", frame).result(10)
                wide = np.zeros((1, 8), np.float32)
                wide[:, ::2] = good[1]
                got.append(batcher.submit("a", wide[:, ::2]).result(10)["y"])  # non-contiguous: copied right
                got.append(batcher.submit("a", good[2]).result(10)["y"])
                assert batcher.metrics().failed == len(bad)
        for g, w in zip(got, _solo(sr_yaml, good)):  # the bad frames left the state as it was
            np.testing.assert_array_equal(g, w)


def test_submit_many_equals_submit_and_fails_only_bad_frames(sr_yaml):
    rng = np.random.default_rng(15)
    ids = ["a", "b", "c"]
    frames = {sid: [_x(rng) for _ in range(3)] for sid in ids}
    with _load(sr_yaml, 4) as session:
        pool = StreamPool(session, shared={"sr": np.int64(16000)})
        counted = Counted(session)
        got = {sid: [] for sid in ids}
        with StreamBatcher(pool, max_delay_ms=50.0) as batcher:
            for k in range(3):
                batch = {sid: frames[sid][k] for sid in ids}
                if k == 1:
                    batch["d"] = np.zeros((1, 4), np.int16)  # a bad frame: its own future fails
                futs = batcher.submit_many(batch)
                assert list(futs) == list(batch)
                for sid in ids:
                    got[sid].append(futs[sid].result(10)["y"])
                if k == 1:
                    with pytest.raises(BindingError, match="Stream 'd'.*integers"):
                        futs["d"].result(10)
            assert counted.calls == 3  # the three streams stepped together each time
            with pytest.raises(BindingError, match="mapping"):
                batcher.submit_many([frames["a"][0]])
            assert batcher.metrics().failed == 1 and "d" not in pool
        with pytest.raises(StateError, match="closed"):
            batcher.submit_many({"a": frames["a"][0]})
    for sid in ids:
        for g, w in zip(got[sid], _solo(sr_yaml, frames[sid])):
            np.testing.assert_array_equal(g, w)


def test_submit_many_beyond_max_queue_queues_nothing(sr_yaml):
    rng = np.random.default_rng(16)
    with _held(sr_yaml, max_queue=3) as (batcher, counted):
        first = batcher.submit("z", _x(rng))
        assert counted.entered.wait(10)  # the worker holds z's frame; the queue is empty
        frames = {sid: _x(rng) for sid in "abcd"}
        with pytest.raises(QueueFullError, match="none of the 4 frames"):
            batcher.submit_many(frames)
        assert batcher.metrics().queued == 0
        futs = batcher.submit_many({sid: frames[sid] for sid in "abc"})
        assert batcher.metrics().queued == 3
        counted.hold.set()
        first.result(10)
        got = {sid: f.result(10)["y"] for sid, f in futs.items()}
        batcher.close()
    for sid, g in got.items():
        np.testing.assert_array_equal(g, _solo(sr_yaml, [frames[sid]])[0])
