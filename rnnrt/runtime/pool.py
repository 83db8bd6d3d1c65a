"""Many independent streams through one Session: one batch slot per stream, one engine call per tick.

A :class:`StreamPool` is an id <-> slot map plus frame packing over ``Session.step(feeds, slots=...)``.
``pool.step({stream_id: frame, ...})`` concatenates the frames of the streams that have one (one
batch row each, in the order given), runs one ``Session.step`` for exactly those slots and returns
each stream's outputs. Streams without a frame this tick do not advance: the Session leaves their
state bit-identical (no copies in and out). :meth:`StreamPool.snapshot` and
:meth:`StreamPool.restore` move a stream's state between pools of the same model (in this process or,
through :meth:`StreamState.to_bytes`, another).

Example::

    import rnnrt

    session = rnnrt.load("out/model.yaml", batch_size=64)       # a dynamic-batch model
    pool = rnnrt.StreamPool(session, idle_timeout=30.0)
    pool.open("alice")
    pool.open("bob")
    out = pool.step({"alice": x_a, "bob": x_b})                 # x_*: one stream's frame, batch dim 1
    y_a = out["alice"]["lstm1"]
    blob = pool.snapshot("bob").to_bytes()                      # ... send it elsewhere ...
    other_pool.restore("bob", rnnrt.StreamState.from_bytes(blob))

Frames: a stream's frame is what a batch-1 Session of the same model takes (a mapping of input name
to array, or a bare array when the model has one input besides the continuation input); every batched
dim has size 1. Outputs come back the same way, with batch dim 1. The Session checks the packed frame
(:mod:`rnnrt.runtime.frames`); a frame that cannot be packed is checked alone with the same check so
that the error names its stream. When the model has a continuation input with ``fill: auto`` and the
frames omit it, the Session fills it per slot: 0 at t=0 of a stream's first frame after
:meth:`~StreamPool.open` or :meth:`~StreamPool.reset`, else 1 (the sequence-start marks are the
Session's; the pool keeps none of its own). An input without a batch axis (one
value for all streams, e.g. Silero's ``sr`` when not folded at convert time) is not part of any frame:
its value is given once, ``StreamPool(session, shared={"sr": 16000})``, and fed with every step.

Concurrency contract: a Session is not thread-safe; once pooled, use it only through its pool. Every
method of :class:`StreamPool` may be called from any thread, and ``open``, ``close``, ``reset``,
``expire``, ``restore``, ``snapshot`` and the ``step`` family are atomic with respect to each other:
each takes effect at one instant, as if the calls ran one after another in some order.

- ``open``, ``close``, ``reset`` and ``expire`` change the slot table under a short lock and do not
  wait for a running step; the Session work they imply (zeroing a slot) is done at the start of the
  next Session call on that slot.
- ``step``, ``step_batch``, ``step_chunk``, ``snapshot`` and ``restore`` use the Session one at a time.
  A step takes effect when it looks its streams up: a stream closed or released while its step runs
  still gets that step's outputs, and its slot is given to a new stream only once the step is over
  (an ``open`` that finds no other free slot waits for it). So no stream ever sees another's state.
- A ``reset`` that arrives while a step of that stream runs counts after the step: the stream's next
  frame is its t=0. A ``reset`` of a stream being restored finds it not open yet (``StateError``) or
  resets the restored state: it is never lost.
- ``restore`` is all or nothing: the stream appears (with its whole state written) or, on any error,
  does not, and its slot is free again. ``snapshot`` reads a state no step or reset is changing.

Expiry callbacks (``on_expire``) run outside the locks, after the call that released the streams
has finished with the Session (so a callback may call the pool); an exception in one is logged
(logger ``rnnrt``) and kept in :attr:`StreamPool.callback_errors`, and never stops a step or loses a
pending reset. :class:`StreamState` is immutable.
"""

from __future__ import annotations

import heapq
import logging
import numbers
import operator
import threading
import time
from collections import abc
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Optional, Protocol, Union

import numpy as np

from rnnrt.errors import BindingError, ConfigError, RnnrtError, SnapshotError, StateError, fmt
from rnnrt.ir.streams import single_input
from rnnrt.runtime.frames import BATCH, InputSpec, check_host, stream_shape, take_rows
from rnnrt.runtime.snapshot import StreamState, model_digest

__all__ = ["PooledSession", "StreamPool", "StreamState", "model_digest"]

G_LOGGER = logging.getLogger("rnnrt")


class PooledSession(Protocol):
    """What a StreamPool needs from a Session (:class:`rnnrt.runtime.session.Session` provides it)."""

    config: Any
    batch_size: int
    bindings: Any
    outputs: str

    def step(self, frame: Mapping[str, Any], slots: Optional[Iterable[int]] = None,
             out: Optional[Mapping[str, np.ndarray]] = None) -> dict[str, np.ndarray]: ...

    def step_chunk(self, frames: Mapping[str, Any], slots: Optional[Iterable[int]] = None) -> dict[str, np.ndarray]: ...

    def reset(self, slots: Optional[Iterable[int]] = None) -> None: ...

    def read_state(self, slots: Iterable[int]) -> dict[str, np.ndarray]: ...

    def write_state(self, slots: Iterable[int], values: Mapping[str, np.ndarray], start: bool = False) -> None: ...

    @property
    def sequence_starts(self) -> np.ndarray: ...


_NEEDS = ("batch_size", "io", "step", "reset", "read_state", "write_state", "sequence_starts")
_MAX_STEPS = 2**63 - 1  # a step count the pool keeps (int64)


class _Stream:
    # Per-slot bookkeeping (t=0 flag, step count, last use) lives in the pool's arrays, indexed by slot.
    __slots__ = ("id", "slot")

    def __init__(self, stream_id: Hashable, slot: int) -> None:
        self.id = stream_id
        self.slot = slot


class _SlotRoute:
    """What a step needs that depends only on which streams step, and in which order.

    Cached between steps: a step with the same stream ids in the same order, while no stream was opened,
    closed or released, reuses it instead of looking every stream up again.
    """

    __slots__ = ("gen", "keys", "slots", "busy", "dest")

    def __init__(self, gen: int, keys: tuple, slots: list) -> None:
        self.gen = gen
        self.keys = keys
        self.busy = frozenset(slots)  # the slots no new stream may take while this step runs
        self.slots = np.array(slots, dtype=np.intp)
        self.slots.flags.writeable = False  # the Session may then skip re-checking it (same object)
        # Where the rows go after the step: a slice when frame order is slot order from 0.
        n = len(slots)
        self.dest: Any = slice(0, n) if slots == list(range(n)) else self.slots


class _Input:
    """A user input as the pool packs it: its check spec and the packing buffers."""

    __slots__ = ("spec", "name", "axis", "shape", "buffers", "fold")

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.axis = spec.batch_axis
        # One stream's shape: batch dim 1 (outer*inner entries when folded), other dynamic dims None.
        self.shape = tuple(spec.batch_dim(i, 1) if d == BATCH else d for i, d in enumerate(spec.shape))
        self.buffers: dict[tuple, np.ndarray] = {}
        # A folded batch axis (batch_fold): one stream's outer*inner entries go time-major among the others.
        self.fold = spec.fold

    def matches(self, shape: tuple) -> bool:
        if len(shape) != len(self.shape):
            return False
        for got, want in zip(shape, self.shape):
            if want is not None and got != want:
                return False
        return True


class StreamPool:
    """Serves many independent streams through one Session, one batch slot per open stream.

    Example::

        pool = StreamPool(rnnrt.load("model.yaml", batch_size=16), idle_timeout=60)
        pool.open("s1")
        y = pool.step({"s1": frame})["s1"]
        pool.close("s1")
    """

    def __init__(
        self,
        session: PooledSession,
        *,
        shared: Optional[Mapping[str, Any]] = None,
        idle_timeout: Optional[float] = None,
        on_expire: Optional[Callable[[Hashable], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            session (PooledSession): The session (:class:`rnnrt.Session`); its batch size is the number
                of slots. The pool takes it over: step, reset or write its state only through the pool
                from now on. The pool does not close it.
            shared (Mapping[str, Any] | None): One value per input that has no batch axis (e.g.
                Silero's ``sr``, an int64 scalar, when not folded with ``--set sr=16000`` at convert
                time), fed with every step to all streams. Checked here with the Session's frame check;
                frames must not carry these inputs. Defaults to None (the model has no such input).
            idle_timeout (float | None): Seconds after which a stream that neither stepped nor was
                opened is released (closed) to free its slot. Checked at ``open``, ``step`` and
                :meth:`expire`. Defaults to None (never).
            on_expire (Callable[[Hashable], None] | None): Called with the id of each stream released
                for idleness (outside the pool's locks; exceptions are logged, see the module doc).
                Defaults to None.
            clock (Callable[[], float]): Monotonic clock in seconds. Defaults to ``time.monotonic``.

        Raises:
            ConfigError: ``session`` is not a Session, ``idle_timeout`` is not a positive number, an
                output of the model has no batch axis (it cannot be split into per-stream slots), an
                input without a batch axis has no value in ``shared``, or ``shared`` names something
                that is not such an input.
            BindingError: A ``shared`` value has the wrong dtype or shape for its input.
        """
        if idle_timeout is not None and (isinstance(idle_timeout, bool) or not isinstance(idle_timeout, numbers.Real)
                                         or not idle_timeout > 0 or idle_timeout != idle_timeout):
            raise ConfigError(fmt("StreamPool", f"idle_timeout={idle_timeout!r} is not a positive number of seconds",
                                  "Pass None to keep idle streams forever."))
        if on_expire is not None and not callable(on_expire):
            raise ConfigError(fmt("StreamPool", f"on_expire={on_expire!r} is not callable", "Pass a function or None."))
        cfg = getattr(session, "config", None)
        if cfg is None or not hasattr(cfg, "inputs"):
            raise ConfigError(fmt("StreamPool", f"Got a {type(session).__name__}, not a Session",
                                  "Pass rnnrt.load(config, batch_size=N)."))
        for t in cfg.outputs:
            if t.batch_axis is None:
                raise ConfigError(
                    fmt(f"Output {t.name!r}", "Has no batch axis, so StreamPool cannot give each stream its own slot",
                        "Pool only models whose every output has a batch_axis (convert with a batch dim).")
                )
        missing = [name for name in _NEEDS if not hasattr(session, name)]
        if missing:
            raise ConfigError(fmt("StreamPool", f"Got a {type(session).__name__} without {missing}",
                                  "Pass a Session (rnnrt.load(config, batch_size=N))."))
        b = session.io
        self.shared: dict[str, np.ndarray] = _check_shared(b, shared)
        """The checked values of the inputs without a batch axis (read-only), fed with every step."""
        self.session = session
        self.capacity: int = int(session.batch_size)
        self.idle_timeout = idle_timeout
        self._on_expire = on_expire
        self._clock = clock
        self.model: str = model_digest(cfg.model_path)
        self.callback_errors: list[tuple[Hashable, BaseException]] = []
        """The last (up to 100) exceptions raised by ``on_expire``, with the stream id."""

        per_stream = [name for name in b.input_names if name not in self.shared]
        self._inputs = [_Input(b.inputs[name]) for name in per_stream]
        self._input_names = set(per_stream)
        self._cont = b.cont
        self._cont_name = b.cont.spec.name if b.cont is not None else None
        self._single = single_input(per_stream, [self._cont_name])
        self._single_input = next((i for i in self._inputs if i.name == self._single), None)
        self._bare_only = self._single is not None and len(self._inputs) == 1 + (self._cont is not None)
        self._outputs = [(t.name, t.batch_axis) for t in cfg.outputs]
        self._state_outputs = {s.input: s.output for s in cfg.state}
        self._state_axes = {s.input: s.batch_axis for s in cfg.state}
        self._copy_outputs = getattr(session, "outputs", "host") != "host"

        self._lock = threading.Lock()          # the slot table
        self._slot_freed = threading.Condition(self._lock)  # an open waiting for the slots of a running step
        self._session_lock = threading.Lock()  # the Session: the step family, snapshot, restore
        self._streams: dict[Hashable, _Stream] = {}
        self._free = list(range(self.capacity))  # a heap: the lowest free slot is taken first
        self._pending: set[int] = set()          # slots to zero before the next Session call on them
        self._busy: frozenset = frozenset()      # slots of the running Session call
        self._released: list[int] = []           # busy slots whose stream closed: free once the call ends
        self._restoring: set = set()             # ids being restored (not open yet, not free either)
        self._next_sweep = float("inf")
        # Per slot, for the stream in it: frames since open/reset; last use.
        self._steps = np.zeros(self.capacity, dtype=np.int64)
        self._last_used = np.zeros(self.capacity, dtype=np.float64)
        self._gen = 0                       # bumped whenever the set of open streams changes
        self._plans: dict[tuple, _SlotRoute] = {}  # recent plans by stream ids (in order), all of generation _gen
        self._staging_buffers: Optional[dict] = None

    # Streams.
    def open(self, stream_id: Hashable) -> int:
        """Opens a stream in a free slot; its state starts at zero.

        Args:
            stream_id (Hashable): The new stream's id.

        Returns:
            int: The slot the stream occupies.

        Raises:
            BindingError: The id is not hashable.
            StateError: The id is already open, or every slot is taken (after releasing idle streams).
        """
        _check_id(stream_id)
        expired: list = []
        try:
            with self._lock:
                rec = self._publish(stream_id, self._take_slot(stream_id, expired), 0)
                self._pending.add(rec.slot)
        finally:
            self._notify(expired)
        return rec.slot

    def close(self, stream_id: Hashable, missing_ok: bool = False) -> None:
        """Closes a stream and frees its slot.

        Args:
            stream_id (Hashable): The stream.
            missing_ok (bool): Do nothing if the stream is not open. Defaults to False.

        Raises:
            StateError: The stream is not open (unless ``missing_ok``).
        """
        _check_id(stream_id)
        with self._lock:
            rec = self._streams.pop(stream_id, None)
            if rec is None:
                if missing_ok:
                    return
                raise self._not_open(stream_id)
            self._release(rec.slot)
            self._gen += 1

    def reset(self, stream_id: Hashable) -> None:
        """Starts a new sequence on an open stream: zero state, and t=0 for its next frame."""
        _check_id(stream_id)
        with self._lock:
            rec = self._streams.get(stream_id)
            if rec is None:
                raise self._not_open(stream_id)
            self._steps[rec.slot] = 0
            self._pending.add(rec.slot)

    def expire(self) -> list[Hashable]:
        """Releases the streams idle for longer than ``idle_timeout``; returns their ids."""
        expired: list = []
        with self._lock:
            self._sweep(self._clock(), expired, force=True)
        self._notify(expired)
        return expired

    # Stepping.
    def step(self, frames: Mapping[Hashable, Any]) -> dict[Hashable, dict[str, np.ndarray]]:
        """Runs one engine step for the streams that have a frame; the other streams keep their state.

        Args:
            frames (Mapping[Hashable, Any]): One frame per stream id (see the module doc). Streams
                that are open but absent do not advance.

        Returns:
            dict[Hashable, dict[str, np.ndarray]]: Each stepped stream's outputs by name, batch dim 1,
            in the order of ``frames``. The arrays are the caller's (never reused or overwritten by the
            pool): per output, one array holds the stepped streams' rows, and each stream gets a view
            of its row, so keeping one stream's output keeps that array alive.

        Raises:
            BindingError: ``frames`` is not a mapping, or a frame lacks an input, has an unknown one, or
                has the wrong shape or an unsafe dtype. No stream advances then.
            StateError: A stream is not open. No stream advances then.
            EngineError: The engine failed. No stream advances then.
        """
        if not isinstance(frames, abc.Mapping):
            raise BindingError(fmt("StreamPool.step", f"Got a {type(frames).__name__}",
                                   "Pass a mapping {stream id: frame}."))

        def run(plan: _SlotRoute) -> tuple:
            feeds = self._pack(plan, list(frames.values()))
            return self._unpack(plan.keys, self.session.step(feeds, slots=plan.slots)), 1

        return self._run(frames, run)

    def step_batch(self, stream_ids: Iterable[Hashable], feeds: Union[Mapping[str, Any], np.ndarray],
                   out: Optional[Mapping[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
        """Steps the listed streams with frames already packed as one batch (row i is ``stream_ids[i]``'s).

        The batch-level twin of :meth:`step` for callers that hold the frames of many streams in one
        array (a server's request batch, a feature extractor's output): no per-stream packing or
        unpacking, so the pool adds only its id -> slot lookup (cached per sequence of ids) to one
        ``Session.step(feeds, slots=...)``. Streams not listed do not advance.

        Args:
            stream_ids (Iterable[Hashable]): Open streams, each at most once; their order is the row order
                of ``feeds`` and of the outputs. Pass the same tuple again to skip the lookup.
            feeds (Mapping[str, Any] | np.ndarray): What ``Session.step(feeds, slots=...)`` takes: every
                input with a batch axis has ``len(stream_ids)`` rows along it (a bare array when the model
                has one such input besides the continuation input, which the Session fills per slot when
                omitted). Inputs without a batch axis come from ``shared`` and must not be fed.
            out (Mapping[str, np.ndarray] | None): As for ``Session.step``. Defaults to None.

        Returns:
            dict[str, np.ndarray]: The outputs by name, row i for ``stream_ids[i]``, owned as the Session's
            ``outputs=`` says (fresh arrays by default; pinned views valid until the next step with "view").

        Raises:
            BindingError: A stream is listed twice or an id is not hashable; ``feeds`` has the wrong rows,
                an unknown or missing input, a bad shape or an unsafe dtype, or feeds a ``shared`` input.
                No stream advances then.
            StateError: A stream is not open. No stream advances then.
            EngineError: The engine failed. No stream advances then.
        """
        feeds = self._with_shared(stream_ids, feeds, "StreamPool.step_batch", chunk=False)
        return self._run(stream_ids, lambda plan: (self.session.step(feeds, slots=plan.slots, out=out), 1))

    def step_chunk(self, stream_ids: Iterable[Hashable], feeds: Union[Mapping[str, Any], np.ndarray]
                   ) -> dict[str, np.ndarray]:
        """Steps the listed streams K frames at once (``Session.step_chunk``): :meth:`step_batch` with a
        leading frame axis, atomic.

        For callers that hold several frames of each stream (a server's multi-frame request, a file):
        the frames are checked once and the state is read and written once for all K steps, and if any
        step fails no stream has advanced.

        Args:
            stream_ids (Iterable[Hashable]): As for :meth:`step_batch`.
            feeds (Mapping[str, Any] | np.ndarray): Per input, ``[K, *what step_batch takes]``: frame k
                of stream ``stream_ids[i]`` is row i of ``feeds[name][k]`` (a bare array as for
                :meth:`step_batch`). Inputs without a batch axis come from ``shared``.

        Returns:
            dict[str, np.ndarray]: Per output ``[K, *step_batch's output shape]``, fresh arrays.

        Raises:
            BindingError: As for :meth:`step_batch`; also inputs with different K. No stream advances then.
            StateError: A stream is not open. No stream advances then.
            EngineError: The engine failed at some frame. No stream advances then.
        """
        feeds = self._with_shared(stream_ids, feeds, "StreamPool.step_chunk", chunk=True)

        def run(plan: _SlotRoute) -> tuple:
            outs = self.session.step_chunk(feeds, slots=plan.slots)
            # The Session accepted the feeds: every input has the same K along axis 0.
            first = next(iter(feeds.values())) if isinstance(feeds, abc.Mapping) else feeds
            return outs, int(np.shape(first)[0])

        return self._run(stream_ids, run)

    def _with_shared(self, stream_ids: Any, feeds: Any, what: str, chunk: bool) -> Any:
        """The feeds of :meth:`step_batch` / :meth:`step_chunk` with the ``shared`` values added (per frame
        of a chunk: broadcast along its leading axis)."""
        if isinstance(stream_ids, (str, bytes)) or not isinstance(stream_ids, Iterable):
            raise BindingError(fmt(what, f"stream_ids is a {type(stream_ids).__name__}",
                                   "Pass a sequence of stream ids, one per batch row of the feeds."))
        if not self.shared:
            return feeds
        if isinstance(feeds, abc.Mapping):
            fed = next((name for name in feeds if name in self.shared), None)
            if fed is not None:
                raise BindingError(
                    fmt(f"{what} input {fed!r}", "Has no batch axis and the pool feeds it",
                        f"The pool feeds every step the value given as StreamPool(session, shared=...); "
                        f"leave {fed!r} out of the feeds."))
        elif self._single is not None:
            feeds = {self._single: feeds}
        else:
            return feeds  # the Session names what is wrong
        shared: Mapping[str, np.ndarray] = self.shared
        if chunk:
            count = next((np.shape(v)[0] for v in feeds.values() if np.ndim(v)), 1)
            shared = {name: np.broadcast_to(value, (count,) + value.shape) for name, value in shared.items()}
        return {**feeds, **shared}

    def _run(self, stream_ids: Iterable[Hashable], call: Callable[[_SlotRoute], tuple]) -> Any:
        """One step of the family: under the session lock, looks the streams up (releasing idle ones) and
        marks their slots busy in one go under the table lock, zeroes the slots opened or reset since,
        runs ``call(plan) -> (result, frames taken)`` and books the advance. The busy slots are given
        back (with those released meanwhile) whatever happens; expiry callbacks run last."""
        expired: list = []
        try:
            with self._session_lock:
                with self._lock:
                    if self.idle_timeout is not None:
                        self._sweep(self._clock(), expired)
                    plan = self._plan_for(stream_ids)
                    if isinstance(plan, BaseException):
                        raise plan
                    if not plan.keys:
                        return {}
                    self._busy = plan.busy
                    pending = self._take_pending(None)
                try:
                    self._zero(pending)
                    # On failure the Session leaves its state untouched, so no stream advanced.
                    result, count = call(plan)
                    self._advanced(plan, count)
                    return result
                finally:
                    self._end_call()
        finally:
            self._notify(expired)

    def _advanced(self, plan: _SlotRoute, count: int = 1) -> None:
        """Bookkeeping after a successful step of the plan's streams: ``count`` more steps, used now."""
        now = self._clock()
        slots = plan.slots
        with self._lock:
            # A reset() that arrived during the step wins: that stream starts over next time.
            if self._pending:
                advanced = slots[[s not in self._pending for s in slots.tolist()]]
            else:
                advanced = plan.dest  # a slice where it can, cheaper than indexing by slots
            self._steps[advanced] += count
            self._last_used[plan.dest] = now

    def _take_pending(self, slots: Optional[Iterable[int]]) -> list[int]:
        """Takes the pending zeroing of these slots (all when None) off the list (under the table lock)."""
        if not self._pending:
            return []
        if slots is None:
            taken = sorted(self._pending)
            self._pending.clear()
        else:
            taken = sorted(self._pending.intersection(slots))
            self._pending.difference_update(taken)
        return taken

    def _zero(self, pending: list[int]) -> None:
        """Zeroes the slots taken by :meth:`_take_pending` (under the session lock); on failure they stay pending."""
        if not pending:
            return
        try:
            self.session.reset(slots=pending)
        except BaseException:
            with self._lock:
                self._pending.update(pending)
            raise

    def _end_call(self) -> None:
        """The end of a Session call: its slots are no longer busy, and those released meanwhile are free."""
        with self._lock:
            self._busy = frozenset()
            if self._released:
                for slot in self._released:
                    heapq.heappush(self._free, slot)
                self._released.clear()
                self._slot_freed.notify_all()

    def _release(self, slot: int) -> None:
        """Frees the slot of a closed or expired stream (under the table lock); a busy one once its call ends."""
        if slot in self._busy:
            self._released.append(slot)
        else:
            heapq.heappush(self._free, slot)

    def _plan_for(self, frames: Any) -> Any:
        """The plan of a step of these stream ids in this order (cached), or the error to raise."""
        keys = frames if type(frames) is tuple else tuple(frames)
        plans = self._plans
        try:
            plan = plans.get(keys) if plans else None
        except TypeError:  # an unhashable id: the look-up below names it
            plan = None
        if plan is not None and plan.gen == self._gen:
            return plan
        streams = self._streams
        try:
            slots = [streams[sid].slot for sid in keys]
        except KeyError as err:
            return self._not_open(err.args[0])
        except TypeError:
            bad = next(k for k in keys if not _hashable(k))
            return BindingError(fmt(f"Stream id {bad!r}", "Is not hashable", "Use str, int or tuple ids."))
        if len(set(slots)) != len(slots):
            seen: set = set()
            dup = next(sid for sid in keys if sid in seen or seen.add(sid))
            return BindingError(fmt(f"Stream {dup!r}", "Is listed twice in one step",
                                    "Step each stream at most once per call (its frames follow one another)."))
        if plans and next(iter(plans.values())).gen != self._gen:
            plans.clear()  # streams opened or closed since: every cached plan is stale
        elif len(plans) >= _PLAN_CACHE:
            del plans[next(iter(plans))]  # the oldest
        plan = plans[keys] = _SlotRoute(self._gen, keys, slots)
        return plan

    def split(self, stream_ids: Iterable[Hashable], outs: Mapping[str, np.ndarray]) -> dict[Hashable, dict[str, np.ndarray]]:
        """:meth:`step_batch`'s outputs for ``stream_ids`` cut into what :meth:`step` returns: per stream,
        each output's row (batch dim 1; a view where the pool's Session hands out fresh arrays)."""
        return self._unpack(tuple(stream_ids), outs)

    def _unpack(self, keys: tuple, outs: Mapping[str, np.ndarray]) -> dict[Hashable, dict[str, np.ndarray]]:
        """Cuts the outputs (one row per stepped stream, in frame order) into per-stream row views."""
        n = len(keys)
        folds = self.session.io.output_folds
        rows = []
        for name, axis in self._outputs:
            full = outs[name]
            fold = folds.get(name)
            if fold is not None:
                # outer*n*inner entries: stream k's are (o*n + k)*inner + i, copied out as its own array.
                rows.append([take_rows(full, [k], axis, fold) for k in range(n)])
                continue
            if self._copy_outputs:
                full = np.array(full)  # the Session's views are valid only until its next step
            # Row i of `per` is stream i's output, its batch dim (size 1) in place: a strided view of `full`.
            shape, strides = full.shape, full.strides
            per = np.ndarray((n,) + shape[:axis] + (1,) + shape[axis + 1:], full.dtype, full, 0,
                             (strides[axis],) + strides[:axis] + (strides[axis],) + strides[axis + 1:])
            rows.append(list(per))  # the row views, made in one C loop
        if len(rows) == 1:
            name = self._outputs[0][0]
            return {sid: {name: row} for sid, row in zip(keys, rows[0])}
        names = [name for name, _ in self._outputs]
        return {sid: dict(zip(names, row)) for sid, *row in zip(keys, *rows)}

    # Snapshot / restore.
    def snapshot(self, stream_id: Hashable) -> StreamState:
        """Copies an open stream's state (all state rows of its slot) out of the pool.

        The stream stays open; close it after snapshotting to move it elsewhere.

        Raises:
            StateError: The stream is not open.
        """
        return self.snapshot_many([stream_id])[stream_id]

    def snapshot_many(self, stream_ids: Iterable[Hashable]) -> dict[Hashable, StreamState]:
        """:meth:`snapshot` of several streams with one state read (one download on a GPU).

        Raises:
            BindingError: An id is not hashable.
            StateError: A stream is not open (nothing is read then).
        """
        ids = list(stream_ids)
        for sid in ids:
            _check_id(sid)
        if not ids:
            return {}
        with self._session_lock:
            with self._lock:
                recs = []
                for sid in ids:
                    rec = self._streams.get(sid)
                    if rec is None:
                        raise self._not_open(sid)
                    recs.append(rec)
                slots = [rec.slot for rec in recs]
                steps = [int(self._steps[s]) for s in slots]
                self._busy = frozenset(slots)
                pending = self._take_pending(slots)  # opened or reset since the last step: read as zero
            try:
                self._zero(pending)
                rows = self.session.read_state(slots) if self._state_axes else {}
                starts = self.session.sequence_starts[slots].tolist()
            finally:
                self._end_call()
        marks = list(zip(starts, steps))
        # Per stream, its row of each state tensor: a view (batch dim 1) of the one array read for all.
        index = {name: (slice(None),) * self._state_axes[name] for name in rows}
        outputs, axes = self._state_outputs, self._state_axes
        states = {}
        for i, (sid, (at_start, steps)) in enumerate(zip(ids, marks)):
            row = slice(i, i + 1)
            tensors = {name: value[index[name] + (row,)] for name, value in rows.items()}
            states[sid] = StreamState._from_pool(self.model, tensors, dict(outputs), dict(axes), at_start, steps)
        return states

    def restore(self, stream_id: Hashable, state: StreamState, *, check_model: bool = True) -> int:
        """Opens a stream in a free slot with a snapshotted state; it continues where it left off.

        Args:
            stream_id (Hashable): The id of the stream in this pool (need not be the original's).
            state (StreamState): From :meth:`snapshot` of a pool of the same model.
            check_model (bool): Refuse a state from a different model file even if its state shapes
                match. Defaults to True.

        Returns:
            int: The slot the stream occupies.

        Raises:
            SnapshotError: ``state`` is not a StreamState, or its step count is out of range.
            StateError: The id is already open, the pool is full, or the state does not fit this
                model (different state names, shapes or dtypes, or another model).

        The restore is all or nothing: on any error no stream ``stream_id`` is open and no slot is taken.
        """
        _check_id(stream_id)
        if not isinstance(state, StreamState):
            raise SnapshotError(fmt("StreamPool.restore", f"Got a {type(state).__name__}",
                                    "Pass a StreamState (from snapshot() or StreamState.from_bytes())."))
        self._check_fits(state, check_model)
        steps = state.steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 0 <= steps <= _MAX_STEPS:
            raise SnapshotError(fmt("StreamPool.restore", f"The state's step count {steps!r} is out of range",
                                    f"A step count is an int in [0, {_MAX_STEPS}]; pass a StreamState from snapshot()."))
        tensors = {n: np.asarray(a) for n, a in state.tensors.items()}
        expired: list = []
        try:
            with self._session_lock:
                with self._lock:
                    slot = self._take_slot(stream_id, expired)
                    self._restoring.add(stream_id)
                    self._pending.discard(slot)  # the write below replaces the whole slot
                    self._busy = frozenset((slot,))
                done = False
                try:
                    self.session.write_state([slot], tensors, start=bool(state.at_start))
                    done = True
                finally:
                    with self._lock:
                        self._restoring.discard(stream_id)
                        if done:
                            self._publish(stream_id, slot, int(steps))
                        else:
                            self._pending.add(slot)
                            heapq.heappush(self._free, slot)
                    self._end_call()
        finally:
            self._notify(expired)
        return slot

    # Queries.
    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: Hashable) -> bool:
        return _hashable(stream_id) and stream_id in self._streams

    def __iter__(self) -> Iterator[Hashable]:
        with self._lock:
            return iter(list(self._streams))

    @property
    def free_slots(self) -> int:
        """Number of slots no stream occupies."""
        return self.capacity - len(self._streams)

    def slot_of(self, stream_id: Hashable) -> int:
        """The slot an open stream occupies."""
        _check_id(stream_id)
        rec = self._streams.get(stream_id)
        if rec is None:
            raise self._not_open(stream_id)
        return rec.slot

    def __repr__(self) -> str:
        return f"StreamPool(streams={len(self._streams)}, capacity={self.capacity}, idle_timeout={self.idle_timeout})"

    # Helpers.
    def _take_slot(self, stream_id: Hashable, expired: list) -> int:
        """A free slot for a new stream (under the table lock), releasing idle streams if none is free and
        waiting for the running step when its slots are the only ones being freed."""
        while True:
            if stream_id in self._streams or stream_id in self._restoring:
                raise StateError(fmt(f"Stream {stream_id!r}", "Is already open", "Close it first, or use another id."))
            if not self._free:
                self._sweep(self._clock(), expired, force=True)
            if self._free:
                return heapq.heappop(self._free)
            if not self._released:
                raise StateError(
                    fmt("StreamPool", f"All {self.capacity} slots are taken; cannot open stream {stream_id!r}",
                        "Close streams, set idle_timeout, or load the Session with a bigger batch_size.")
                )
            self._slot_freed.wait()

    def _publish(self, stream_id: Hashable, slot: int, steps: int) -> _Stream:
        """Makes the stream open in its slot (under the table lock)."""
        now = self._clock()
        rec = _Stream(stream_id, slot)
        self._streams[stream_id] = rec
        self._gen += 1
        self._steps[slot] = steps
        self._last_used[slot] = now
        if self.idle_timeout is not None:
            self._next_sweep = min(self._next_sweep, now + self.idle_timeout)
        return rec

    def _sweep(self, now: float, expired: list, force: bool = False) -> None:
        if self.idle_timeout is None or (not force and now < self._next_sweep):
            return
        limit = now - self.idle_timeout
        oldest = float("inf")
        last_used = self._last_used.tolist()
        for sid, rec in list(self._streams.items()):
            used = last_used[rec.slot]
            if used < limit:
                del self._streams[sid]
                self._release(rec.slot)
                expired.append(sid)
                self._gen += 1
            else:
                oldest = min(oldest, used)
        # last_used only grows, so this bounds the next expiry from below.
        self._next_sweep = oldest + self.idle_timeout

    def _notify(self, expired: list) -> None:
        """Calls ``on_expire`` for each released stream; an exception is logged and kept, never raised."""
        if self._on_expire is None:
            return
        for sid in expired:
            try:
                self._on_expire(sid)
            except Exception as err:  # noqa: BLE001 - a callback must not break the pool
                G_LOGGER.error(f"StreamPool | on_expire({sid!r}) raised {type(err).__name__}: {err}", exc_info=err)
                self.callback_errors.append((sid, err))
                del self.callback_errors[:-100]

    def _not_open(self, stream_id: Hashable) -> StateError:
        return StateError(fmt(f"Stream {stream_id!r}", "Is not open in this pool",
                              "open() it first (streams idle longer than idle_timeout are released)."))

    def _pack(self, plan: _SlotRoute, values: list) -> dict[str, np.ndarray]:
        """The Session feeds for this step: each input's frames concatenated along its batch axis."""
        single = self._single_input
        if self._bare_only:
            # Fast path: every frame is a bare array of the single user input. Every slot in slot
            # order: packed straight into the Session's input buffer (its pinned staging on a GPU).
            full = len(values) == self.capacity and type(plan.dest) is slice
            packed = self._bulk(single, values, self._staging(single.name) if full else None)
            if packed is not None:
                return {single.name: packed, **self.shared} if self.shared else {single.name: packed}
        # Each frame as a mapping; a bare array stands for the single user input.
        names = self._input_names
        maps = []
        for sid, frame in zip(plan.keys, values):
            if type(frame) is np.ndarray and single is not None:
                maps.append({single.name: frame})
            elif isinstance(frame, abc.Mapping):
                if not frame.keys() <= names:
                    key = next(k for k in frame if k not in names)
                    if key in self.shared:
                        raise BindingError(
                            fmt(f"Stream {sid!r}", f"Frame carries input {key!r}, which has no batch axis",
                                "The pool feeds every step the value given as "
                                f"StreamPool(session, shared={{{key!r}: ...}}); leave it out of frames."))
                    raise BindingError(fmt(f"Stream {sid!r}", f"Frame has unknown input {key!r}",
                                           f"Inputs: {sorted(names)}."))
                maps.append(frame)
            elif single is not None and frame is not None:
                maps.append({single.name: frame})
            else:
                raise BindingError(fmt(f"Stream {sid!r}", f"Got a bare {type(frame).__name__}",
                                       f"Pass a mapping {{input name: array}}; inputs: {sorted(names)}."))
        feeds: dict[str, np.ndarray] = dict(self.shared)
        for inp in self._inputs:
            name = inp.name
            parts = [frame.get(name) for frame in maps]
            is_cont = name == self._cont_name
            if is_cont and all(p is None for p in parts):
                continue  # the Session fills it per slot
            packed = self._bulk(inp, parts)  # the common case, packed in bulk
            if packed is not None:
                feeds[name] = packed
                continue
            fill_like = None
            for i, (sid, value) in enumerate(zip(plan.keys, parts)):
                if value is None:
                    if is_cont:
                        continue
                    raise BindingError(fmt(f"Stream {sid!r}", f"Frame has no input {name!r}",
                                           f"Feed every input of {sorted(names)}."))
                parts[i] = self._check_one(inp, sid, value)
                fill_like = parts[i]
            if is_cont:
                # Some frames feed the continuation input, others omit it: fill those per stream
                # (0 where the Session marks a sequence start).
                starts = self.session.sequence_starts
                for i, value in enumerate(parts):
                    if value is None:
                        cont = np.ones(fill_like.shape, dtype=fill_like.dtype)
                        if starts[int(plan.slots[i])]:
                            self._cont.zero_starts(cont, np.ones(1, dtype=bool))
                        parts[i] = cont
            try:
                feeds[name] = _concat_rows(inp, parts)
            except ValueError as err:
                raise BindingError(fmt(f"Input {name!r}", f"Frames of this step disagree on a dynamic dim: {err}",
                                       "Every stream stepped together must use the same sizes for non-batch dims.")) from err
        return feeds

    def _check_one(self, inp: _Input, stream_id: Hashable, value: Any) -> np.ndarray:
        """One stream's value through the Session's frame check (one batch row); errors name the stream."""
        try:
            return check_host(inp.spec, value, {}, 1)
        except BindingError as err:
            text = str(err)
            subject = f"Input {inp.name!r}"
            if text.startswith(subject):
                text = f"Stream {stream_id!r} input {inp.name!r}" + text[len(subject):]
            raise BindingError(text) from err

    def _staging(self, name: str) -> Optional[np.ndarray]:
        """The Session's input buffer of ``name`` for a whole-batch frame (None if it has none)."""
        staging = self._staging_buffers
        if staging is None:
            try:
                staging = self.session.input_buffers()
            except (AttributeError, RnnrtError):
                staging = {}
            self._staging_buffers = staging
        return staging.get(name)

    def _bulk(self, inp: _Input, parts: list, into: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Packs the frames in one go when each is an array of the input's dtype and a valid shape, else None.

        No check per frame: the first frame's shape is a valid frame (batch dim 1); every frame has its
        size (one C-level pass); ``np.concatenate`` checks every frame's rank and non-batch dims, so each
        frame's batch dim is 1 too, and with ``casting="no"`` that each has exactly the input's dtype.
        The Session then checks the packed array.
        """
        try:
            first = parts[0].shape
            sizes = set(map(_SIZE, parts))
        except AttributeError:
            return None  # None (an omitted input), a list, a mapping ...
        if not inp.matches(first) or inp.fold is not None:
            return None  # folded rows take the per-frame path (_concat_rows)
        size = 1
        for d in first:
            size *= d
        if sizes != {size} or not size:
            return None
        axis = inp.axis
        key = first[:axis] + (len(parts),) + first[axis + 1:]
        if into is not None and into.shape == key and into.dtype == inp.spec.dtype:
            buf = into
        else:
            buf = inp.buffers.get(key)
            if buf is None:
                buf = inp.buffers[key] = np.empty(key, dtype=inp.spec.dtype)
        try:
            np.concatenate(parts, axis=axis, out=buf, casting="no")
        except (TypeError, ValueError):
            return None  # array-likes numpy will not take as they are: the per-frame path says why
        return buf

    def _check_fits(self, state: StreamState, check_model: bool) -> None:
        rows = self.session.config.state
        mine = sorted(
            (s.input, s.output, np.dtype(s.dtype).name,
             tuple(1 if i == s.batch_axis else d for i, d in enumerate(s.shape)), s.batch_axis)
            for s in rows
        )
        theirs = state.signature()
        if mine != theirs:
            diff = next((f"{a} vs {b}" for a, b in zip(theirs, mine) if a != b),
                        f"{len(theirs)} state tensors vs {len(mine)}")
            raise StateError(
                fmt("StreamPool.restore", f"The state does not fit this model: (input, output, dtype, shape, batch_axis) "
                    f"of the snapshot vs this pool: {diff}", "Restore only into a pool of the same model.")
            )
        if check_model and state.model != self.model:
            raise StateError(
                fmt("StreamPool.restore", f"The state comes from model {state.model[:19]!r}... but this pool runs "
                    f"{self.model[:19]!r}...", "Restore into a pool of the same model file, or pass check_model=False "
                    "if the models differ only in ways that keep the state meaning (e.g. a rebuilt plan).")
            )


_SIZE = operator.attrgetter("size")
_PLAN_CACHE = 16  # plans kept per pool: a server cycles through a few patterns of present streams


def _check_shared(bindings: Any, shared: Optional[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The values of the inputs without a batch axis, checked with the Session's frame check (read-only copies)."""
    if shared is None:
        shared = {}
    if not isinstance(shared, abc.Mapping):
        raise ConfigError(fmt("StreamPool", f"shared={shared!r} is a {type(shared).__name__}, not a mapping",
                              "Pass shared={input name: value}, e.g. shared={'sr': 16000}."))
    wanted = [name for name in bindings.input_names if bindings.inputs[name].batch_axis is None]
    for name in shared:
        if name not in wanted:
            if name in bindings.inputs:
                why = "Has a batch axis; each stream feeds its own value in its frame"
            else:
                why = "Is not an input of the model"
            raise ConfigError(fmt(f"StreamPool(shared={{{name!r}: ...}})", why,
                                  f"shared takes only inputs without a batch axis: {wanted}."))
    values: dict[str, np.ndarray] = {}
    for name in wanted:
        if name not in shared:
            raise ConfigError(
                fmt(f"Input {name!r}", "Has no batch axis (one value for all streams) and StreamPool got none",
                    f"Pass StreamPool(session, shared={{{name!r}: value}}), or fold it at convert time "
                    f"(rnnrt convert ... --set {name}=VALUE).")
            )
        arr = np.array(check_host(bindings.inputs[name], shared[name], {}, 1))  # a copy the caller cannot change
        arr.flags.writeable = False
        values[name] = arr
    return values


def _concat_rows(inp: _Input, parts: list) -> np.ndarray:
    """The frames (one stream each) as one array of ``len(parts)`` rows along the input's batch axis.

    A folded batch axis (batch_fold ``(outer, inner)``, e.g. T*N time-major frame rows) interleaves the
    streams: stream k's entry ``o*inner + i`` goes to ``(o*n + k)*inner + i``.
    """
    axis = inp.axis
    if inp.fold is None:
        return np.concatenate(parts, axis=axis)
    views = [p.reshape(stream_shape(p.shape, axis, inp.fold)[0]) for p in parts]
    packed = np.concatenate(views, axis=axis + 1)
    return packed.reshape(packed.shape[:axis] + (-1,) + packed.shape[axis + 3:])


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _check_id(stream_id: Any) -> None:
    if not _hashable(stream_id):
        raise BindingError(fmt(f"Stream id {stream_id!r}", f"Is a {type(stream_id).__name__}, which is not hashable",
                               "Use str, int or tuple ids."))

