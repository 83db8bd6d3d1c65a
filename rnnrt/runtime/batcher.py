"""Live streams as applications send them: each caller awaits its own frame; one engine step serves them all.

A :class:`StreamBatcher` sits in front of a :class:`~rnnrt.runtime.pool.StreamPool` (over a host or a
device Session) or an ``rnnrt.client.StreamClient``. Callers hand it one stream's frame at a time, from
coroutines (``await batcher.step(sid, frame)``) or threads (``batcher.submit(sid, frame)``, a
``concurrent.futures.Future``; ``batcher.submit_many({sid: frame, ...})`` for many streams at once). One
worker thread collects the frames that arrived, writes them into
the Session's input buffers (row per stream), runs one engine step for every stream that has a frame
waiting and hands each caller its rows. Over a StreamClient a tick is one multi-stream request
(``step_many``) instead of one request per frame.

Example::

    import rnnrt

    pool = rnnrt.StreamPool(rnnrt.load("out/model.yaml", batch_size=256))
    batcher = rnnrt.StreamBatcher(pool, max_delay_ms=2.0)

    async def serve_connection(sid, chunks):
        async for chunk in chunks:                       # chunk: one stream's frame, batch dim 1
            out = await batcher.step(sid, chunk)         # opens the stream on first use
            yield out["output"]
        batcher.close_stream(sid)

    ...
    await batcher.aclose()                               # drains what was submitted, then stops

Rules:

* **Ticks.** The worker steps as soon as every open stream has a frame waiting, ``max_batch`` streams
  have one, or the oldest waiting frame has waited ``max_delay_ms``; while a step runs, new frames
  wait for the next. A tick takes each waiting stream's *first* frame only (a stream's second frame
  goes in the next tick: order per stream is kept); streams beyond ``max_batch`` go first next tick.
* **Frames** are what a batch-1 Session of the model takes (a mapping of input name to array, or a
  bare array when the model has one input besides the continuation input). They are checked in the
  caller's thread with the Session's frame check; a bad frame fails its own future with the
  ``BindingError`` (naming the stream) and nothing else. Frames that differ in a dynamic dim step in
  separate engine calls of the same tick. If a step of several streams fails, each of them is
  stepped alone, so only the frame that fails gets the error; a failed step leaves the stream's
  state as it was (the Session's rule).
* **Chunks** (:meth:`submit_chunk`, :meth:`step_chunk`): K frames of one stream as one entry, stepped
  atomically with ``step_chunk`` (with the other streams' chunks of the same K in the tick); the
  result stacks the K outputs along a new axis 0, like ``Session.step_chunk`` at batch 1.
* **Blocks** (:meth:`submit_batch`, :meth:`step_batch`): one frame of each of several streams, packed as
  ``StreamPool.step_batch`` takes them, one future for all; ordered with each stream's other entries by
  submission order (a sequence number). A block of host arrays in the model's dtypes shares the tick's
  engine call with the single frames of its per-row layout; any other steps alone. A block that fills an
  idle batcher (nothing waiting, no tick running, every open stream in it) is stepped in the calling
  thread: no hand-off to the worker. Not copied: the caller keeps the arrays unchanged until it is done.
* **Backpressure.** At most ``max_queue`` frames wait; :meth:`submit` beyond that raises
  :class:`~rnnrt.errors.QueueFullError` (nothing is queued). Memory stays bounded.
* **Cancellation.** A future cancelled before its tick takes it is dropped (the stream does not
  advance); once taken, its step runs to the end and the result is discarded. A stream is never
  half-stepped. An ``await step(...)`` that is cancelled cancels its future the same way.
* **Streams** open on their first frame (:meth:`~rnnrt.runtime.pool.StreamPool.open`).
  :meth:`reset_stream` and :meth:`close_stream` are queued behind the stream's frames submitted
  before them; a frame after ``close_stream`` opens the stream again with a fresh state. A stream the
  pool released for idleness (``idle_timeout``) fails its frames with ``StateError`` until it is
  reset or closed (it is never silently restarted).
* **Frames are copied** when queued: the caller may reuse its buffer at once.
* **Outputs** are each stream's rows (batch dim 1) as :meth:`StreamPool.step` returns them: fresh
  arrays the caller owns.

Threads: every method may be called from any thread; the pool (its Session) is stepped only by the
worker, so do not step the pool yourself while a batcher runs over it. :meth:`aclose` / :meth:`close`
stop the worker; the pool and its Session stay open (they are the caller's).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import abc, deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np

from rnnrt.errors import BindingError, ConfigError, RnnrtError, StateError, QueueFullError, fmt
from rnnrt.runtime.batch_targets import ClientTarget, PoolTarget

__all__ = ["BatcherMetrics", "StreamBatcher"]

_FRAME, _CHUNK, _BLOCK, _RESET, _CLOSE = 0, 1, 2, 3, 4  # kinds > _BLOCK are controls
_WINDOW = 4096  # recent ticks and queue delays kept for metrics


@dataclass(frozen=True)
class BatcherMetrics:
    """A snapshot of a :class:`StreamBatcher`'s counters (:meth:`StreamBatcher.metrics`).

    Rates, batch sizes and queue delays are over the recent window (the last 4096 ticks / frames).
    """

    ticks: int
    """Ticks run (each gathers the waiting streams' first frames)."""
    engine_steps: int
    """Engine calls made: ``step_batch``/``step_chunk`` of the pool, or ``step_many`` of the client."""
    frames: int
    """Frames stepped successfully (a chunk of K counts K)."""
    failed: int
    """Frames whose future got an error."""
    cancelled: int
    """Frames dropped because their future was cancelled before their tick."""
    queued: int
    """Frames waiting now."""
    mean_batch: float
    """Mean frames stepped per tick (recent window): the batch size a tick reached."""
    steps_per_s: float
    """Engine steps per second (recent window)."""
    frames_per_s: float
    """Frames per second (recent window)."""
    queue_delay_ms: tuple[float, float, float]
    """Time from submit to the tick that took the frame, ms: (median, 99th percentile, max), recent window."""


class _Entry:
    # future: a concurrent.futures.Future (loop None), or an asyncio future of ``loop`` (await step()).
    # seq: the order of submission over all streams (set under the lock), which blocks are ordered by.
    __slots__ = ("kind", "key", "value", "future", "arrival", "count", "loop", "seq")

    def __init__(self, kind: int, key: tuple, value: Any, future: Any, arrival: float, count: int,
                 loop: Any = None) -> None:
        self.kind, self.key, self.value, self.future = kind, key, value, future
        self.arrival, self.count, self.loop = arrival, count, loop
        self.seq = 0

    def claim(self) -> bool:
        """Marks the entry taken by a tick; False if its caller cancelled it first (then it is dropped).

        An asyncio future cancelled a moment after this check still steps; its result is discarded."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()
        return not self.future.cancelled()


class _Block(_Entry):
    """One frame of each of several streams, already packed as a batch (:meth:`StreamBatcher.submit_batch`):
    one future for all of them. ``key`` is the per-row layout it shares with single frames (it then steps
    in their engine call), or None (it steps in an engine call of its own)."""

    __slots__ = ("ids", "idset")

    def __init__(self, ids: tuple, idset: frozenset, key: Optional[tuple], feeds: Any, future: Any,
                 arrival: float, loop: Any = None) -> None:
        super().__init__(_BLOCK, key, feeds, future, arrival, len(ids), loop)
        self.ids, self.idset = ids, idset


def _deliver(items: list) -> None:
    """In an event loop: hands a tick's results to its awaiting callers (one call per loop and tick)."""
    for future, result, error in items:
        if future.done():
            continue  # cancelled after the tick took it
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _Stream:
    __slots__ = ("id", "queue", "open", "slot", "lost")

    def __init__(self, stream_id: Hashable) -> None:
        self.id = stream_id
        self.queue: deque = deque()
        self.open = False   # opened in the target by this batcher
        self.slot = -1      # its pool slot while open
        self.lost = False   # released by the pool behind the batcher's back (idle_timeout)


class StreamBatcher:
    """Batches frames of many live streams into one engine step per tick (see the module doc).

    Example::

        batcher = rnnrt.StreamBatcher(pool, max_delay_ms=2.0)
        out = await batcher.step("alice", frame)        # or: batcher.submit("alice", frame).result()
        await batcher.aclose()
    """

    def __init__(self, pool: Any, max_delay_ms: float = 2.0, *, max_batch: Optional[int] = None,
                 max_queue: Optional[int] = None) -> None:
        """
        Args:
            pool (StreamPool | StreamClient): What steps the streams: a :class:`rnnrt.StreamPool` (over
                a host or device Session), or an ``rnnrt.client.StreamClient`` (a tick is one
                ``step_many``: one multi-stream request per server).
            max_delay_ms (float): How long the first waiting frame may wait for others before a tick,
                in ms (0: step what is there at once). Defaults to 2.0.
            max_batch (int | None): Most streams per engine step. Defaults to the pool's capacity
                (1024 for a client).
            max_queue (int | None): Most frames waiting (a chunk of K counts K); :meth:`submit` raises
                :class:`~rnnrt.errors.QueueFullError` beyond. Defaults to 8 x ``max_batch``.

        Raises:
            ConfigError: ``pool`` is neither a StreamPool nor a StreamClient, or a limit is not positive.
        """
        if hasattr(pool, "step_batch") and hasattr(pool, "session"):
            self._target: Any = PoolTarget(pool)
        elif hasattr(pool, "step_many") and hasattr(pool, "open"):
            self._target = ClientTarget(pool)
        else:
            raise ConfigError(fmt("StreamBatcher", f"Got a {type(pool).__name__}",
                                  "Pass a rnnrt.StreamPool or an rnnrt.client.StreamClient."))
        self.pool = pool
        if isinstance(max_delay_ms, bool) or not isinstance(max_delay_ms, (int, float)) or not max_delay_ms >= 0:
            raise ConfigError(fmt("StreamBatcher", f"max_delay_ms={max_delay_ms!r} is not a number >= 0"))
        capacity = self._target.capacity
        for what, value in (("max_batch", max_batch), ("max_queue", max_queue)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(fmt("StreamBatcher", f"{what}={value!r} is not a positive integer"))
        self.max_delay = max_delay_ms / 1000.0
        self.max_batch = int(max_batch if max_batch is not None else (capacity or 1024))
        if capacity is not None:
            self.max_batch = min(self.max_batch, capacity)
        self.max_queue = int(max_queue if max_queue is not None else 8 * self.max_batch)

        self._cond = threading.Condition(threading.Lock())
        self._streams: dict[Hashable, _Stream] = {}
        self._ready: dict[Hashable, _Stream] = {}  # streams with entries waiting, in the order they go
        self._blocks: deque = deque()  # blocks waiting (submit_batch), in submission order
        self._block_rows = 0  # rows of the blocks waiting
        self._seq = 0         # entries submitted so far (each entry's seq: the order blocks keep per stream)
        self._last_ids: Optional[tuple] = None  # (ids, frozenset) of the last block: the same tuple skips the set
        self._opened_ids: Optional[tuple] = None  # (ids, generation): a block's streams all open at that generation
        self._generation = 0  # +1 whenever a stream closes or is lost
        self._ticker: Optional[threading.Thread] = None  # the thread running a tick (the worker, or a caller inline)
        self._queued = 0
        self._open = 0        # streams open in the target
        self._urgent = False  # a control entry is waiting: tick at once
        self._closing = False
        self._stopped: Future = Future()
        self._outbox: dict = {}  # event loop -> answers of this tick for its awaiting callers
        # Metrics.
        self._ticks = self._steps = self._frames = self._failed = self._cancelled = 0
        self._recent: deque = deque(maxlen=_WINDOW)   # (tick end, engine steps, frames stepped)
        self._delays: deque = deque(maxlen=_WINDOW)   # seconds from submit to tick
        self._worker = threading.Thread(target=self._run, name="rnnrt-batcher", daemon=True)
        self._worker.start()

    # Submitting.
    def submit(self, stream_id: Hashable, frame: Any) -> Future:
        """Queues one frame of a stream; from any thread.

        Returns:
            concurrent.futures.Future: Resolves to the stream's outputs (dict of name to array, batch
            dim 1), or fails with the ``RnnrtError`` its step raised (``BindingError`` for a bad frame,
            ``StateError`` when the pool has no free slot for a new stream ...).

        Raises:
            QueueFullError: ``max_queue`` frames are waiting; nothing was queued.
            StateError: The batcher is closed.
            BindingError: The stream id is not hashable.
        """
        future: Future = Future()
        self._submit(stream_id, _FRAME, frame, future, None)
        return future

    def submit_many(self, frames: Mapping[Hashable, Any]) -> dict[Hashable, Future]:
        """Queues one frame for each of several streams at once (:meth:`submit` for each, in one go); from
        any thread.

        For a caller that holds the frames of many streams at the same moment (a server's request batch,
        a benchmark): every frame is checked as :meth:`submit` checks it, and the good ones are queued
        under one lock acquisition, so the worker sees them together. A bad frame fails only its own
        future.

        Args:
            frames (Mapping[Hashable, Any]): Stream id to one frame of that stream (as :meth:`submit` takes).

        Returns:
            dict[Hashable, concurrent.futures.Future]: Per stream id, what :meth:`submit` returns.

        Raises:
            QueueFullError: The good frames do not all fit below ``max_queue``; none was queued.
            StateError: The batcher is closed.
            BindingError: ``frames`` is not a mapping.
        """
        if not isinstance(frames, abc.Mapping):
            raise BindingError(fmt("StreamBatcher.submit_many", f"Got a {type(frames).__name__}",
                                   "Pass a mapping {stream id: frame}."))
        futures: dict[Hashable, Future] = {}
        entries = []
        bad = []
        prepare = self._target.prepare
        now = time.perf_counter()
        for stream_id, frame in frames.items():
            future = futures[stream_id] = Future()
            try:
                key, arrays = prepare(stream_id, frame)
            except BindingError as err:
                bad.append((future, err))
                continue
            entries.append((stream_id, _Entry(_FRAME, key, arrays, future, now, 1)))
        with self._cond:
            if self._closing:
                raise self._closed_error()
            self._reserve(len(entries), f"none of the {len(entries)} frames was queued")
            self._failed += len(bad)
            wake = False
            for stream_id, entry in entries:
                wake = self._enqueue(stream_id, entry) or wake
            if wake:
                self._cond.notify()
        for future, err in bad:
            future.set_exception(err)
        return futures

    def submit_chunk(self, stream_id: Hashable, frames: Sequence[Any]) -> Future:
        """Queues K frames of one stream, stepped atomically (``step_chunk``); from any thread.

        Returns:
            concurrent.futures.Future: Resolves to each output stacked over the K frames (axis 0), as
            ``Session.step_chunk`` at batch 1 returns it; on failure no frame of the chunk advanced.

        Raises:
            As :meth:`submit`; the chunk counts K against ``max_queue``.
        """
        future: Future = Future()
        self._submit(stream_id, _CHUNK, frames, future, None)
        return future

    def submit_batch(self, stream_ids: Sequence[Hashable], feeds: Any) -> Future:
        """Queues one frame of each of several streams, already packed as one batch; one future for all.

        The bulk entry point for a caller that holds many streams' frames in arrays (a server's
        multi-stream request, a feature extractor's output): what :meth:`StreamPool.step_batch` takes,
        queued like frames. The block steps in a tick as a whole, in one engine call with the single
        frames of the same layout that wait then (or alone: device arrays, folded batch axes, other
        dtypes), after every frame of its streams submitted before it and before every one submitted
        after it. Its streams open on first use. No per-stream future, check or copy: the pool checks
        the arrays when the block steps, and a bad block fails its own future (no stream of it advances).

        Args:
            stream_ids (Sequence[Hashable]): Distinct stream ids, at most ``max_batch``; row i of ``feeds``
                is ``stream_ids[i]``'s frame. Passing the same tuple again skips re-hashing it.
            feeds (Mapping[str, Any] | np.ndarray): As for :meth:`StreamPool.step_batch`: per input with a
                batch axis ``len(stream_ids)`` rows (a bare array for a model with one such input). **Not
                copied**: keep the arrays unchanged until the future is done.

        Returns:
            concurrent.futures.Future: Resolves to the outputs by name, row i for ``stream_ids[i]`` (what
            ``step_batch`` returns; arrays the caller owns), or fails with the ``RnnrtError`` the step raised.

        Raises:
            BindingError: ``stream_ids`` is empty, longer than ``max_batch``, repeats an id or holds one
                that is not hashable.
            ConfigError: The batcher is over a StreamClient (blocks need a StreamPool).
            QueueFullError: The block's rows do not fit below ``max_queue``; nothing was queued.
            StateError: The batcher is closed.
        """
        future: Future = Future()
        self._submit_block(stream_ids, feeds, future, None)
        return future

    async def step_batch(self, stream_ids: Sequence[Hashable], feeds: Any) -> dict[str, np.ndarray]:
        """Awaits a block's outputs (:meth:`submit_batch` in a coroutine; raises what it raises)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._submit_block(stream_ids, feeds, future, loop)
        return await future

    async def step(self, stream_id: Hashable, frame: Any) -> dict[str, np.ndarray]:
        """Awaits one frame's outputs (what :meth:`submit` resolves to; raises what it raises). Cancelling
        the awaiting task cancels the frame (see the module doc). The answers of a tick reach each event
        loop in one call."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._submit(stream_id, _FRAME, frame, future, loop)
        return await future

    async def step_chunk(self, stream_id: Hashable, frames: Sequence[Any]) -> dict[str, np.ndarray]:
        """Awaits a chunk's stacked outputs (:meth:`submit_chunk` in a coroutine)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._submit(stream_id, _CHUNK, frames, future, loop)
        return await future

    def _submit(self, stream_id: Hashable, kind: int, value: Any, future: Any, loop: Any) -> None:
        """Checks a frame (or chunk) in the caller's thread and queues it; a bad one fails ``future`` now."""
        try:
            if kind == _CHUNK:
                if isinstance(value, (str, bytes, abc.Mapping)) or not isinstance(value, abc.Sequence) or not value:
                    raise BindingError(fmt(f"Stream {stream_id!r}", f"Got {type(value).__name__} as a chunk",
                                           "Pass a non-empty list of frames."))
                key, arrays = self._target.prepare_chunk(stream_id, value)
                count = len(value)
            else:
                key, arrays = self._target.prepare(stream_id, value)
                count = 1
        except BindingError as err:
            self._check_id(stream_id)
            self._fail_now(future, err)
            return
        self._put(stream_id, _Entry(kind, key, arrays, future, time.perf_counter(), count, loop))

    def _submit_block(self, stream_ids: Sequence[Hashable], feeds: Any, future: Any, loop: Any) -> None:
        target = self._target
        if not isinstance(target, PoolTarget):
            raise ConfigError(fmt("StreamBatcher.submit_batch", "Is over a StreamClient",
                                  "Submit frames one stream at a time (submit/submit_many); blocks need a StreamPool."))
        last = self._last_ids
        if last is not None and last[0] is stream_ids:
            ids, idset = last
        else:
            if isinstance(stream_ids, (str, bytes)) or not isinstance(stream_ids, abc.Iterable):
                raise BindingError(fmt("StreamBatcher.submit_batch", f"Got {type(stream_ids).__name__} as stream ids",
                                       "Pass a tuple or list of stream ids, one per row of the feeds."))
            ids = tuple(stream_ids)
            try:
                idset = frozenset(ids)
            except TypeError:
                for stream_id in ids:
                    self._check_id(stream_id)  # raises for the first id that is not hashable
                raise
            if len(idset) != len(ids):
                seen: set = set()
                twice = next(i for i in ids if i in seen or seen.add(i))
                raise BindingError(fmt("StreamBatcher.submit_batch", f"Stream {twice!r} is listed twice",
                                       "List each stream once: a block steps each of its streams once."))
            if not ids:
                raise BindingError(fmt("StreamBatcher.submit_batch", "Got no stream ids", "List at least one stream."))
            if type(stream_ids) is tuple:
                self._last_ids = (ids, idset)  # a tuple cannot change behind our back
        if len(ids) > self.max_batch:
            raise BindingError(fmt("StreamBatcher.submit_batch", f"A block of {len(ids)} streams is more than "
                                   f"max_batch={self.max_batch}", "Split it, or raise max_batch (at most the "
                                   "pool's capacity)."))
        key, feeds = target.block_layout(ids, feeds)
        block = _Block(ids, idset, key, feeds, future, time.perf_counter(), loop)
        n = block.count
        with self._cond:
            if self._closing:
                raise self._closed_error()
            if loop is None and self._ticker is None and not self._ready and not self._blocks \
                    and n >= min(self.max_batch, self._open or 1):
                # Nothing else waits, no tick runs and the block alone makes a full tick: step it in this
                # thread now (no hand-off to the worker and back).
                self._ticker = threading.current_thread()
                self._seq += 1
                block.seq = self._seq
                self._ticks += 1
                self._delays.append(0.0)
            else:
                self._queue_block(block)
                return
        self._tick_inline(block)

    def _queue_block(self, block: _Block) -> None:
        """Under the lock: queues a block (it steps in a later tick of the worker); returns None."""
        n = block.count
        self._reserve(n, f"the block of {n} streams was not queued")
        self._seq += 1
        block.seq = self._seq
        self._blocks.append(block)
        self._block_rows += n
        rows = len(self._ready) + self._block_rows
        if len(self._blocks) == 1 or rows >= self.max_batch or rows >= self._open:
            self._cond.notify()

    def _tick_inline(self, block: _Block) -> None:
        """Runs one tick of this block in the calling thread (see :meth:`_submit_block`); then lets the worker on."""
        try:
            block.claim()
            self._tick([], [block])
        except BaseException as err:  # noqa: BLE001 - a bug in the tick: the caller learns it, nobody hangs
            if not block.future.done():
                block.future.set_exception(err)
            raise
        finally:
            with self._cond:
                self._ticker = None
                if self._ready or self._blocks or self._closing:  # the worker waited for this tick
                    self._cond.notify()

    def reset_stream(self, stream_id: Hashable) -> Future:
        """Starts a new sequence on the stream after the frames submitted before (zero state at its next frame).

        Returns:
            concurrent.futures.Future: Done (None) once applied; waiting for it is optional.
        """
        return self._control(stream_id, _RESET)

    def close_stream(self, stream_id: Hashable) -> Future:
        """Closes the stream after the frames submitted before, freeing its slot; a later frame opens it afresh.

        Returns:
            concurrent.futures.Future: Done (None) once applied; waiting for it is optional.
        """
        return self._control(stream_id, _CLOSE)

    # Stopping.
    def close(self, timeout: Optional[float] = None) -> None:
        """Stops taking frames, steps every frame already submitted, then stops the worker (blocking).

        Raises:
            StateError: Called from the worker itself (a future's done-callback): it would wait for itself.
        """
        if threading.current_thread() in (self._worker, self._ticker):
            raise StateError(fmt("StreamBatcher.close", "Was called from a future's done-callback inside a "
                                 "tick (the worker thread), which would wait for itself", "Call close() from "
                                 "another thread, or await aclose() in a coroutine."))
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._stopped.result(timeout)

    async def aclose(self) -> None:
        """:meth:`close` for coroutines: drains what was submitted, then stops."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        await asyncio.wrap_future(self._stopped)

    async def __aenter__(self) -> "StreamBatcher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> "StreamBatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closing

    # Metrics.
    def metrics(self) -> BatcherMetrics:
        """The counters and recent rates (see :class:`BatcherMetrics`)."""
        with self._cond:
            recent = list(self._recent)
            delays = sorted(self._delays)
            ticks, steps, frames = self._ticks, self._steps, self._frames
            failed, cancelled, queued = self._failed, self._cancelled, self._queued
        n_steps = sum(r[1] for r in recent)
        n_frames = sum(r[2] for r in recent)
        span = recent[-1][0] - recent[0][0] if len(recent) > 1 else 0.0
        per_s = (lambda x: x / span) if span > 0 else (lambda x: 0.0)
        if delays:
            pick = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] * 1e3  # noqa: E731
            delay = (pick(0.5), pick(0.99), delays[-1] * 1e3)
        else:
            delay = (0.0, 0.0, 0.0)
        # The first recorded tick opens the window: its work is not in the span.
        first = recent[0] if span > 0 else (0, 0, 0)
        return BatcherMetrics(
            ticks=ticks, engine_steps=steps, frames=frames, failed=failed, cancelled=cancelled, queued=queued,
            mean_batch=n_frames / len(recent) if recent else 0.0,
            steps_per_s=per_s(n_steps - first[1]), frames_per_s=per_s(n_frames - first[2]), queue_delay_ms=delay)

    def __repr__(self) -> str:
        return (f"StreamBatcher({type(self.pool).__name__}, max_delay_ms={self.max_delay * 1e3:g}, "
                f"max_batch={self.max_batch}, max_queue={self.max_queue}, streams={len(self._streams)})")

    # Queue.
    @staticmethod
    def _check_id(stream_id: Any) -> None:
        try:
            hash(stream_id)
        except TypeError:
            raise BindingError(fmt(f"Stream id {stream_id!r}", f"Is a {type(stream_id).__name__}, which is not "
                                   "hashable", "Use str, int or tuple ids.")) from None

    def _fail_now(self, future: Future, err: BaseException) -> None:
        if self._closing:
            raise self._closed_error()
        with self._cond:
            self._failed += 1
        future.set_exception(err)

    def _closed_error(self) -> StateError:
        return StateError(fmt("StreamBatcher", "Is closed", "Submit before aclose()/close(), or make a new batcher."))

    def _put(self, stream_id: Hashable, entry: _Entry) -> None:
        self._check_id(stream_id)
        with self._cond:
            if self._closing:
                raise self._closed_error()
            if entry.kind < _BLOCK:
                self._reserve(entry.count, f"stream {stream_id!r}'s frame was not queued")
            if self._enqueue(stream_id, entry):
                self._cond.notify()

    def _reserve(self, n: int, refused: str) -> None:
        """Under the lock: counts ``n`` more waiting frames, or raises QueueFullError (``refused`` says what)."""
        if self._queued + n > self.max_queue:
            raise QueueFullError(fmt("StreamBatcher", f"{self._queued} frames are waiting (max_queue="
                                     f"{self.max_queue}); {refused}",
                                     "Back off and submit again, shed streams, or raise max_queue."))
        self._queued += n

    def _enqueue(self, stream_id: Hashable, entry: _Entry) -> bool:
        """Under the lock: appends an entry (already counted against max_queue) to its stream's queue;
        True when the worker should look now (a first waiting stream, a full tick, a control entry)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = _Stream(stream_id)
        self._seq += 1
        entry.seq = self._seq
        stream.queue.append(entry)
        wake = False
        if stream_id not in self._ready:
            self._ready[stream_id] = stream
            n = len(self._ready)
            rows = n + self._block_rows
            wake = n == 1 or rows >= self.max_batch or rows >= self._open
        if entry.kind > _BLOCK:
            self._urgent = wake = True
        return wake

    def _control(self, stream_id: Hashable, kind: int) -> Future:
        future: Future = Future()
        self._put(stream_id, _Entry(kind, (), None, future, time.perf_counter(), 0))
        return future

    # The worker.
    def _run(self) -> None:
        cond = self._cond
        try:
            while True:
                with cond:
                    while (not self._ready and not self._blocks and not self._closing) or self._ticker is not None:
                        cond.wait()  # (a caller running a block's tick inline holds the worker off)
                    if not self._ready and not self._blocks:
                        break  # closing, and nothing left
                    if not self._closing and not self._urgent and self.max_delay > 0:
                        ready = self._ready
                        first = [s.queue[0].arrival for s in ready.values()]
                        if self._blocks:
                            first.append(self._blocks[0].arrival)
                        deadline = min(first) + self.max_delay
                        while len(ready) + self._block_rows < min(self.max_batch, self._open or 1) \
                                and not self._closing and not self._urgent:
                            left = deadline - time.perf_counter()
                            if left <= 0:
                                break
                            cond.wait(left)
                    taken, blocks = self._take()
                    self._ticker = self._worker
                try:
                    self._tick(taken, blocks)
                finally:
                    with cond:
                        self._ticker = None
        except BaseException as err:  # noqa: BLE001 - a bug here must not hang every caller
            self._abort(err)
            raise
        finally:
            self._stopped.set_result(None)

    def _take(self) -> tuple[list, list]:
        """Under the lock: the blocks that go in this tick, and per waiting stream its control entries and
        first frame entry (max_batch rows in all).

        Blocks go in submission order while they fit, share no stream and none of their streams has a frame
        submitted before them; the controls submitted before a block that goes are taken with it (applied
        before the step). A stream's entries submitted after a block of it (taken or waiting) wait for it."""
        self._urgent = False
        now = time.perf_counter()
        taken = []
        ready = self._ready
        delays = self._delays
        budget = self.max_batch
        blocks: list = []
        pending = self._blocks
        while pending:
            block = pending[0]
            if block.count > budget or any(not b.idset.isdisjoint(block.idset) for b in blocks):
                break
            before = [ready[sid] for sid in ready.keys() & block.idset] if ready else ()
            if any(e.kind < _BLOCK and e.seq < block.seq for s in before for e in s.queue):
                break  # a frame of one of its streams goes first
            pending.popleft()
            self._block_rows -= block.count
            self._queued -= block.count
            for stream in before:
                controls = []
                while stream.queue and stream.queue[0].seq < block.seq:
                    controls.append(stream.queue.popleft())
                if controls:
                    taken.append((stream, controls, None))
                if not stream.queue:
                    del ready[stream.id]
            if not block.claim():
                self._cancelled += block.count
                continue
            delays.append(now - block.arrival)
            blocks.append(block)
            budget -= block.count
        held = blocks + list(pending) if blocks or pending else None
        for sid in list(ready)[:budget]:
            stream = ready.pop(sid)
            controls = []
            frame = None
            queue = stream.queue
            limit = None
            if held is not None:  # the first block of this stream: its entries after it wait
                limit = min((b.seq for b in held if sid in b.idset), default=None)
            while queue and (limit is None or queue[0].seq < limit):
                entry = queue.popleft()
                if entry.kind > _BLOCK:
                    controls.append(entry)
                    continue
                self._queued -= entry.count
                if not entry.claim():
                    self._cancelled += entry.count
                    continue
                delays.append(now - entry.arrival)
                frame = entry
                break
            if queue:
                ready[sid] = stream  # its next entry goes in a later tick, after the streams waiting now
            taken.append((stream, controls, frame))
        self._ticks += 1
        return taken, blocks

    def _tick(self, taken: list, blocks: list) -> None:
        expires = self._target.expires
        frames: dict[tuple, list] = {}
        for stream, controls, entry in taken:
            for control in controls:
                self._apply(stream, control)
            if entry is None:
                continue
            if not (stream.open and not expires) and not self._ensure_open(stream, entry):
                continue  # (an open stream of a pool without idle_timeout is ready: the common case)
            frames.setdefault((entry.kind, entry.key), []).append((stream, entry))
        for block in blocks:
            if not self._open_block(block):
                continue
            # Shares the engine call of single frames (and blocks) of its layout; else one of its own.
            key = (_FRAME, block.key) if block.key is not None else (_BLOCK, id(block))
            frames.setdefault(key, []).append((None, block))
        steps = stepped = 0
        try:
            for key, group in frames.items():
                steps_, stepped_ = self._step_group(key, group)
                steps += steps_
                stepped += stepped_
        finally:
            self._flush()
        with self._cond:
            self._steps += steps
            self._frames += stepped
            if steps:
                self._recent.append((time.perf_counter(), steps, stepped))
            for stream, _, _ in taken:  # forget closed streams with nothing waiting
                if stream.open or stream.lost or stream.queue:
                    continue
                if self._streams.get(stream.id) is stream:
                    del self._streams[stream.id]

    def _step_group(self, key: tuple, group: list) -> tuple[int, int]:
        """Steps one group (same kind and layout) in one engine call; on failure, halves of it apart."""
        target = self._target
        streams = [s for s, _ in group]
        values = [e.value for _, e in group]
        try:
            if isinstance(target, ClientTarget):
                results = target.step_many(streams, values)
            elif key[0] == _BLOCK or any(s is None for s in streams):
                results = target.step_parts(group, key[1])
            elif key[0] == _CHUNK:
                results = target.step_chunk(streams, values, key[1])
            else:
                results = target.step(streams, values, key[1])
        except Exception as err:  # noqa: BLE001 - isolated below, then handed to the callers
            if len(group) == 1:
                results = [err]
            else:
                # Which frame failed? Halves, stepped apart, until each failing frame is alone (the
                # failed call advanced no stream).
                half = len(group) // 2
                s1, n1 = self._step_group(key, group[:half])
                s2, n2 = self._step_group(key, group[half:])
                return s1 + s2 + 1, n1 + n2
        stepped = 0
        outbox = self._outbox
        for (stream, entry), result in zip(group, results):
            if isinstance(result, BaseException):
                self._settle(entry, error=result)
                continue
            stepped += entry.count
            if entry.loop is None:
                entry.future.set_result(result)
            else:
                answers = outbox.get(entry.loop)
                if answers is None:
                    answers = outbox[entry.loop] = []
                answers.append((entry.future, result, None))
        return 1, stepped

    def _settle(self, entry: _Entry, result: Any = None, error: Optional[BaseException] = None) -> None:
        if error is not None:
            with self._cond:
                self._failed += entry.count
        if entry.loop is not None:
            self._outbox.setdefault(entry.loop, []).append((entry.future, result, error))
        elif error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(result)

    def _flush(self) -> None:
        """Hands the tick's answers to the event loops of their awaiting callers."""
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits these any more

    def _ensure_open(self, stream: _Stream, entry: _Entry) -> bool:
        """Opens the stream on first use; False (its future failed) when it cannot step."""
        error = self._open_error(stream)
        if error is not None:
            self._settle(entry, error=error)
        return error is None

    def _open_error(self, stream: _Stream) -> Optional[RnnrtError]:
        """Opens the stream on first use; the error it cannot step with, or None."""
        target = self._target
        if stream.lost:
            return StateError(fmt(f"Stream {stream.id!r}", "Was released by the pool (idle_timeout) and lost its "
                                  "state", "reset_stream() or close_stream() it to start it over."))
        if stream.open:
            if not target.expires or target.alive(stream):
                return None
            stream.open, stream.lost = False, True
            self._generation += 1
            with self._cond:
                self._open -= 1
            return self._open_error(stream)
        try:
            target.open(stream)
        except RnnrtError as err:
            return err
        stream.open = True
        with self._cond:
            self._open += 1
        return None

    def _open_block(self, block: _Block) -> bool:
        """Opens a block's streams on first use; False (its future failed) when one cannot step."""
        target = self._target
        cached = self._opened_ids
        if cached is not None and cached[0] is block.ids and cached[1] == self._generation and not target.expires:
            return True  # the same streams as the last block, none closed or lost since
        streams = self._streams
        with self._cond:
            mine = [streams.get(sid) or streams.setdefault(sid, _Stream(sid)) for sid in block.ids]
        for stream in mine:
            if stream.open and not target.expires:
                continue
            error = self._open_error(stream)
            if error is not None:
                self._settle(block, error=error)
                with self._cond:  # forget the streams it made that hold nothing
                    for s in mine:
                        if not (s.open or s.lost or s.queue) and streams.get(s.id) is s:
                            del streams[s.id]
                return False
        self._opened_ids = (block.ids, self._generation)
        return True

    def _apply(self, stream: _Stream, control: _Entry) -> None:
        """A queued reset or close, in the stream's order (skipped if its future was cancelled)."""
        target = self._target
        if not control.future.set_running_or_notify_cancel():
            return
        try:
            if control.kind == _RESET:
                if stream.open and not stream.lost:
                    target.reset(stream)
                elif stream.lost:
                    stream.lost = False  # opened afresh by its next frame
            else:
                try:
                    if stream.open:
                        target.close(stream)
                finally:  # closed here even if the target failed to say goodbye (its future tells)
                    if stream.open:
                        with self._cond:
                            self._open -= 1
                    stream.open = stream.lost = False
                    self._generation += 1
        except Exception as err:  # noqa: BLE001 - handed to whoever waits for it
            control.future.set_exception(err)
            return
        control.future.set_result(None)

    def _abort(self, err: BaseException) -> None:
        """A bug in the worker: fail every waiting future rather than leave callers hanging."""
        with self._cond:
            self._closing = True
            entries = [e for s in self._streams.values() for e in s.queue] + list(self._blocks)
            for s in self._streams.values():
                s.queue.clear()
            self._ready.clear()
            self._blocks.clear()
            self._block_rows = 0
        for e in entries:
            if e.kind > _BLOCK:
                if e.future.set_running_or_notify_cancel():
                    e.future.set_exception(StateError(fmt("StreamBatcher", f"The worker stopped: {err!r}")))
            elif e.claim():
                self._settle(e, error=StateError(fmt("StreamBatcher", f"The worker stopped: {err!r}")))
        self._flush()
