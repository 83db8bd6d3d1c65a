"""StreamBatcher.submit_batch / step_batch: blocks of many streams' frames, one future each, ordered per stream
with single frames and controls, sharing engine calls with single frames, failing alone; == each stream alone
(bit-exact, ONNX Runtime)."""

from __future__ import annotations

import asyncio
from concurrent.futures import CancelledError

import numpy as np
import pytest

from rnnrt.errors import BindingError, ConfigError, QueueFullError, StateError
from rnnrt.runtime.batcher import StreamBatcher
from rnnrt.runtime.pool import StreamPool
from tests.runtime.test_batcher import Counted, _held, _load, _solo, _x, sr_yaml  # noqa: F401 - fixture

SR = {"sr": np.int64(16000)}


def _reference(path, ops):
    """Per stream, its outputs when its ops (in submission order) run on a pool of its own."""
    want: dict = {}
    with _load(path, 4) as session:
        pool = StreamPool(session, shared=SR)
        for sid, kind, x in ops:
            if kind == "frame":
                if sid not in pool:
                    pool.open(sid)
                want.setdefault(sid, []).append(pool.step({sid: x})[sid]["y"])
            elif kind == "reset" and sid in pool:
                pool.reset(sid)
            elif kind == "close" and sid in pool:
                pool.close(sid)
    return want


def test_blocks_singles_and_controls_keep_each_streams_order(sr_yaml):
    """Random rounds of blocks (random subsets, random row order), single frames, resets and closes, all
    queued before any steps: every stream equals its ops run alone in submission order, bit-exact."""
    rng = np.random.default_rng(31)
    ids = list("abcd")
    ops = []      # (sid, kind, frame) in submission order, per stream
    pending = []  # (future, [(sid, row)]) to collect
    got: dict = {sid: [] for sid in ids}
    with _load(sr_yaml, 4) as session:
        counted = Counted(session)
        batcher = StreamBatcher(StreamPool(session, shared=SR), max_delay_ms=2.0)
        frames = 0
        for _ in range(25):
            round_ = []
            for _ in range(rng.integers(2, 7)):
                r = rng.random()
                if r < 0.45:
                    block = tuple(rng.permutation(ids)[:rng.integers(1, 5)].tolist())
                    x = rng.standard_normal((len(block), 4)).astype(np.float32)
                    round_.append((batcher.submit_batch(block, x), list(block)))
                    ops += [(sid, "frame", x[i:i + 1]) for i, sid in enumerate(block)]
                elif r < 0.85:
                    sid = ids[rng.integers(4)]
                    x = _x(rng)
                    round_.append((batcher.submit(sid, x), [sid]))
                    ops.append((sid, "frame", x))
                else:
                    sid = ids[rng.integers(4)]
                    kind = "reset" if r < 0.93 else "close"
                    (batcher.reset_stream if kind == "reset" else batcher.close_stream)(sid)
                    ops.append((sid, kind, None))
            for fut, rows in round_:
                y = fut.result(10)["y"]
                assert y.shape == (len(rows), 3)
                for i, sid in enumerate(rows):
                    got[sid].append(y[i:i + 1])
                frames += len(rows)
            pending += round_
        batcher.close()
        m = batcher.metrics()
    want = _reference(sr_yaml, ops)
    for sid in ids:
        assert len(got[sid]) == len(want.get(sid, [])), sid
        for k, (g, w) in enumerate(zip(got[sid], want[sid])):
            np.testing.assert_array_equal(g, w, err_msg=f"stream {sid} frame {k}")
    assert m.frames == frames and m.failed == 0
    assert counted.calls < frames  # blocks and singles shared engine calls


def test_a_block_shares_the_engine_call_of_single_frames(sr_yaml):
    """A single frame of one stream and a block of two more, queued while the engine is busy (with a fourth
    stream): one engine call steps the three; each equals its stream alone."""
    rng = np.random.default_rng(32)
    with _held(sr_yaml) as (batcher, counted):
        first = batcher.submit("z", _x(rng))  # holds the worker inside the engine
        assert counted.entered.wait(10)
        xa = _x(rng)
        block = rng.standard_normal((2, 4)).astype(np.float32)
        fa = batcher.submit("a", xa)
        fb = batcher.submit_batch(("b", "c"), block)
        counted.hold.set()
        first.result(10)
        ya, ybc = fa.result(10)["y"], fb.result(10)["y"]
        batcher.close()
    assert counted.calls == 2  # z, then a + (b, c) in one call
    assert counted.feeds[1]["x"].shape[0] in (3, 4)  # the three streams' rows (4: a fixed batch of 4)
    np.testing.assert_array_equal(ya, _solo(sr_yaml, [xa])[0])
    np.testing.assert_array_equal(ybc[0:1], _solo(sr_yaml, [block[0:1]])[0])
    np.testing.assert_array_equal(ybc[1:2], _solo(sr_yaml, [block[1:2]])[0])


def test_a_frame_submitted_before_a_block_of_its_stream_steps_first(sr_yaml):
    rng = np.random.default_rng(33)
    with _held(sr_yaml) as (batcher, counted):
        first = batcher.submit("z", _x(rng))
        assert counted.entered.wait(10)
        x0 = _x(rng)
        block = rng.standard_normal((2, 4)).astype(np.float32)
        x2 = _x(rng)
        f0 = batcher.submit("a", x0)
        fb = batcher.submit_batch(["b", "a"], block)  # a list: no tuple to remember
        f2 = batcher.submit("a", x2)
        counted.hold.set()
        first.result(10)
        ys = [f0.result(10)["y"], fb.result(10)["y"][1:2], f2.result(10)["y"]]
        yb = fb.result(10)["y"][0:1]
        batcher.close()
    assert counted.calls == 4  # z; a's frame 0; the block; a's frame 2
    for g, w in zip(ys, _solo(sr_yaml, [x0, block[1:2], x2])):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(yb, _solo(sr_yaml, [block[0:1]])[0])


def test_a_bad_block_fails_alone_and_leaves_its_streams_as_they_were(sr_yaml):
    rng = np.random.default_rng(34)
    good = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(2)]
    with _held(sr_yaml) as (batcher, counted):
        counted.hold.set()
        ids = ("a", "b")
        y0 = batcher.submit_batch(ids, good[0]).result(10)["y"]
        counted.hold.clear()
        first = batcher.submit("z", _x(rng))
        assert counted.entered.wait(10)
        bad_dtype = batcher.submit_batch(ids, np.zeros((2, 4), np.int16))      # stepped with nothing (alone)
        bad_shape = batcher.submit_batch(("c",), np.zeros((1, 5), np.float32))  # same dtype, wrong width
        xz = _x(rng)
        fz = batcher.submit("z", xz)  # shares the tick with the bad blocks
        counted.hold.set()
        with pytest.raises(BindingError, match="integers"):
            bad_dtype.result(10)
        with pytest.raises(BindingError, match="'x'"):
            bad_shape.result(10)
        fz.result(10)
        first.result(10)
        y1 = batcher.submit_batch(ids, good[1]).result(10)["y"]
        assert batcher.metrics().failed == 3
        batcher.close()
    for i, sid in enumerate(ids):  # the failed block did not advance a or b
        want = _solo(sr_yaml, [good[0][i:i + 1], good[1][i:i + 1]])
        np.testing.assert_array_equal(y0[i:i + 1], want[0])
        np.testing.assert_array_equal(y1[i:i + 1], want[1])


def test_block_arguments_are_checked(sr_yaml):
    x = np.zeros((2, 4), np.float32)
    with _load(sr_yaml, 4) as session:
        with StreamBatcher(StreamPool(session, shared=SR), max_delay_ms=0, max_queue=3) as batcher:
            with pytest.raises(BindingError, match="'a' is listed twice"):
                batcher.submit_batch(("a", "a"), x)
            with pytest.raises(BindingError, match="no stream ids"):
                batcher.submit_batch((), x[:0])
            with pytest.raises(BindingError, match="not hashable"):
                batcher.submit_batch((["a"], "b"), x)
            with pytest.raises(BindingError, match="stream ids"):
                batcher.submit_batch("ab", x)
            with pytest.raises(BindingError, match="5 streams is more than max_batch=4"):
                batcher.submit_batch(tuple("abcde"), np.zeros((5, 4), np.float32))
            with pytest.raises(BindingError, match="rows|batch"):
                batcher.submit_batch(("a", "b", "c"), x).result(10)  # 2 rows for 3 streams: the pool says
            assert batcher.metrics().queued == 0
        with pytest.raises(StateError, match="closed"):
            batcher.submit_batch(("a",), x[:1])

    class Client:  # what the batcher takes for a StreamClient
        def step_many(self, frames): ...
        def open(self, sid): ...

    with pytest.raises(ConfigError, match="StreamClient"):
        StreamBatcher(Client()).submit_batch(("a",), x[:1])


def test_a_full_queue_a_cancelled_block_and_a_full_pool(sr_yaml):
    rng = np.random.default_rng(35)
    with _held(sr_yaml, max_queue=4) as (batcher, counted):
        first = batcher.submit("z", _x(rng))
        assert counted.entered.wait(10)
        xb = rng.standard_normal((3, 4)).astype(np.float32)
        kept = batcher.submit_batch(("a", "b", "c"), xb)
        with pytest.raises(QueueFullError, match="block of 2 streams was not queued"):
            batcher.submit_batch(("d", "e"), np.zeros((2, 4), np.float32))
        dropped = batcher.submit_batch(("d",), np.zeros((1, 4), np.float32))
        assert dropped.cancel()
        counted.hold.set()
        first.result(10)
        y = kept.result(10)["y"]
        with pytest.raises(CancelledError):
            dropped.result()
        # The pool's four slots hold z, a, b, c: a block with a new stream fails alone, nothing opened.
        with pytest.raises(StateError, match="slot|full|capacity"):
            batcher.submit_batch(("a", "e"), np.zeros((2, 4), np.float32)).result(10)
        assert "e" not in batcher.pool and "d" not in batcher.pool
        m = batcher.metrics()
        assert m.cancelled == 1 and m.failed == 2  # frames: the block of two
        batcher.close()
    for i, sid in enumerate("abc"):
        np.testing.assert_array_equal(y[i:i + 1], _solo(sr_yaml, [xb[i:i + 1]])[0])


def test_await_step_batch_and_the_same_tuple_again(sr_yaml):
    """``await step_batch`` from tasks; the same ids tuple each time (the fast path) after a close reopens
    the closed stream afresh."""
    rng = np.random.default_rng(36)
    xs = [rng.standard_normal((4, 4)).astype(np.float32) for _ in range(4)]
    ids = ("a", "b", "c", "d")
    with _load(sr_yaml, 4) as session:
        batcher = StreamBatcher(StreamPool(session, shared=SR), max_delay_ms=1.0)

        async def main():
            out = [(await batcher.step_batch(ids, xs[0]))["y"], (await batcher.step_batch(ids, xs[1]))["y"]]
            batcher.close_stream("c")
            out += [(await batcher.step_batch(ids, xs[2]))["y"], (await batcher.step_batch(ids, xs[3]))["y"]]
            await batcher.aclose()
            return out

        ys = asyncio.run(main())
    for i, sid in enumerate(ids):
        rows = [x[i:i + 1] for x in xs]
        want = _solo(sr_yaml, rows) if sid != "c" else _solo(sr_yaml, rows[:2]) + _solo(sr_yaml, rows[2:])
        for k, (y, w) in enumerate(zip(ys, want)):
            np.testing.assert_array_equal(y[i:i + 1], w, err_msg=f"{sid} {k}")


def test_a_block_that_fills_an_idle_batcher_steps_in_the_callers_thread(sr_yaml):
    """Nothing waiting, no tick running and the block covers every open stream: the calling thread steps it
    (no hand-off; the future is done on return). A smaller block, or one arriving while frames wait, goes
    through the worker as usual; either way each stream equals itself alone."""
    import threading

    rng = np.random.default_rng(37)
    xs = [rng.standard_normal((4, 4)).astype(np.float32) for _ in range(3)]
    ids = ("a", "b", "c", "d")
    with _load(sr_yaml, 4) as session:
        counted = Counted(session)
        threads = []
        real = session.engine.execute

        def execute(feeds, *args, **kw):
            threads.append(threading.current_thread())
            return real(feeds, *args, **kw)

        session.engine.execute = execute
        batcher = StreamBatcher(StreamPool(session, shared=SR), max_delay_ms=20.0)
        f0 = batcher.submit_batch(ids, xs[0])
        assert f0.done() and threads == [threading.current_thread()]  # opened all four, stepped inline
        f1 = batcher.submit_batch(ids[:2], xs[1][:2])  # half the open streams: waits for others (worker)
        f2 = batcher.submit_batch(ids[2:], xs[1][2:])  # now all four wait: the worker ticks once
        y1 = np.concatenate([f1.result(10)["y"], f2.result(10)["y"]])
        assert threads[1] is batcher._worker and len(threads) == 2
        f3 = batcher.submit_batch(ids, xs[2])
        assert f3.done() and threads[2] is threading.current_thread()
        batcher.close()
        assert counted.calls == 3 and batcher.metrics().ticks == 3
    ys = [f0.result()["y"], y1, f3.result()["y"]]
    for i in range(4):
        want = _solo(sr_yaml, [x[i:i + 1] for x in xs])
        for k in range(3):
            np.testing.assert_array_equal(ys[k][i:i + 1], want[k])
