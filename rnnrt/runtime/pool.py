"""Many independent streams through one Session: one batch slot per stream, one engine call per tick.

A :class:`StreamPool` binds each open stream (any hashable id) to one batch slot of a Session.
``pool.step({stream_id: frame, ...})`` packs the frames of the streams that have one into their
slots, runs one ``Session.step`` and returns each stream's outputs. Streams without a frame this tick
do not advance: their state rows are copied out before the step and written back after it, so they
stay bit-identical. :meth:`StreamPool.snapshot` and :meth:`StreamPool.restore` move a stream's state
between pools of the same model (in this process or, through :meth:`StreamState.to_bytes`, another).

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
dim has size 1. Outputs come back the same way, with batch dim 1. When the model has a continuation
input with ``fill: auto`` and a frame omits it, the pool fills it per stream: 0 at t=0 of a stream's
first frame after :meth:`~StreamPool.open` or :meth:`~StreamPool.reset`, else 1.

Threads: a Session is not thread-safe; once pooled, use it only through its pool. Every method of
:class:`StreamPool` may be called from any thread. ``open``, ``close``, ``reset``, ``expire`` and the
queries only touch the slot table under a short lock and never wait for a running step; the Session
work they imply (zeroing a slot) is applied at the start of the next step. ``step``, ``snapshot`` and
``restore`` touch the Session and run one at a time. :class:`StreamState` is immutable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import operator
import struct
import threading
import time
from collections import abc
from typing import Any, Callable, Hashable, Iterator, Mapping, Optional

import numpy as np

from rnnrt.errors import BindingError, ConfigError, StateError, fmt

__all__ = ["StreamPool", "StreamState"]

# Serialized StreamState: magic, u32 header length, JSON header, then the raw tensor bytes in header order.
_MAGIC = b"RNNRTSS1"
_FORMAT = 1
_SAFE_DTYPES = {"float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"}


def model_digest(path: Any) -> str:
    """Returns ``"sha256:<hex>"`` of a model file: the identity snapshots carry."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as err:
        raise ConfigError(fmt(f"Model {str(path)!r}", f"Cannot be read: {err.strerror}")) from err
    return "sha256:" + h.hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class StreamState:
    """One stream's recurrent state, detached from any pool.

    Args:
        model (str): Identity of the model that produced it (:func:`model_digest` of its ONNX file).
        tensors (Mapping[str, np.ndarray]): State rows keyed by state input name; each has the
            state's shape with batch dim 1.
        outputs (Mapping[str, str]): State output name of each state input (the pairing).
        batch_axes (Mapping[str, int]): Batch axis of each state tensor.
        at_start (bool): True when the stream's next frame is its t=0 (opened or reset, not stepped since).
        steps (int): Frames the stream has taken since it was opened or reset.
    """

    model: str
    tensors: Mapping[str, np.ndarray]
    outputs: Mapping[str, str]
    batch_axes: Mapping[str, int]
    at_start: bool = False
    steps: int = 0

    def signature(self) -> list[tuple]:
        """``(input, output, dtype, shape, batch_axis)`` of every state tensor, sorted by name."""
        return sorted(
            (name, self.outputs[name], arr.dtype.name, tuple(arr.shape), self.batch_axes[name])
            for name, arr in self.tensors.items()
        )

    def to_bytes(self) -> bytes:
        """Serializes the state (no pickle: a JSON header and the raw little-endian rows)."""
        header = {
            "format": _FORMAT,
            "model": self.model,
            "at_start": bool(self.at_start),
            "steps": int(self.steps),
            "tensors": [
                {"input": n, "output": self.outputs[n], "dtype": a.dtype.name, "shape": list(a.shape),
                 "batch_axis": self.batch_axes[n]}
                for n, a in self.tensors.items()
            ],
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        body = [np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes() for a in self.tensors.values()]
        return b"".join([_MAGIC, struct.pack("<I", len(head)), head, *body])

    @classmethod
    def from_bytes(cls, data: bytes) -> "StreamState":
        """Reads what :meth:`to_bytes` wrote.

        Raises:
            StateError: The bytes are not a serialized StreamState, or are truncated or corrupt.
        """
        data = bytes(data)
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
            raise StateError(fmt("StreamState.from_bytes", "The data is not a serialized StreamState",
                                 "Pass what StreamState.to_bytes() returned."))
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        try:
            header = json.loads(data[start:start + n])
            if header["format"] != _FORMAT:
                raise StateError(fmt("StreamState.from_bytes", f"Format {header['format']!r} is not supported",
                                     f"This rnnrt reads format {_FORMAT}."))
            offset = start + n
            tensors, outputs, axes = {}, {}, {}
            for t in header["tensors"]:
                if t["dtype"] not in _SAFE_DTYPES:
                    raise ValueError(f"dtype {t['dtype']!r}")
                dtype = np.dtype(t["dtype"]).newbyteorder("<")
                shape = tuple(int(d) for d in t["shape"])
                size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if offset + size > len(data):
                    raise ValueError("truncated")
                arr = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
                tensors[t["input"]] = arr.astype(arr.dtype.newbyteorder("="))
                outputs[t["input"]] = str(t["output"])
                axes[t["input"]] = int(t["batch_axis"])
                offset += size
            if offset != len(data):
                raise ValueError(f"{len(data) - offset} trailing bytes")
            return cls(model=str(header["model"]), tensors=tensors, outputs=outputs, batch_axes=axes,
                       at_start=bool(header["at_start"]), steps=int(header["steps"]))
        except StateError:
            raise
        except (ValueError, KeyError, TypeError) as err:
            raise StateError(fmt("StreamState.from_bytes", f"The data is corrupt: {err}",
                                 "Pass what StreamState.to_bytes() returned, unmodified.")) from err

    def __repr__(self) -> str:
        sig = ", ".join(f"{n}{list(s)}" for n, _, _, s, _ in self.signature())
        return f"StreamState(model={self.model[:19]!r}, at_start={self.at_start}, steps={self.steps}, state=[{sig}])"


class _Stream:
    # Per-slot bookkeeping (t=0 flag, step count, last use) lives in the pool's arrays, indexed by slot.
    __slots__ = ("id", "slot")

    def __init__(self, stream_id: Hashable, slot: int) -> None:
        self.id = stream_id
        self.slot = slot


class _Plan:
    """What a step needs that depends only on which streams step, and in which order.

    Cached between steps: a step with the same stream ids in the same order, while no stream was opened,
    closed or released, reuses it instead of looking every stream up again.
    """

    __slots__ = ("gen", "keys", "slots", "dest", "idle")

    def __init__(self, gen: int, keys: tuple, slots: list, open_slots: list) -> None:
        self.gen = gen
        self.keys = keys
        n = len(slots)
        self.slots = np.asarray(slots, dtype=np.intp)
        # Where the packed rows (frame order) go along the batch axis: a slice when frame order is slot
        # order from 0 (rows are concatenated in place), else the slots (one scatter).
        self.dest: Any = slice(0, n) if slots == list(range(n)) else self.slots
        self.idle = sorted(set(open_slots) - set(slots)) if len(open_slots) > n else []


_SIZE = operator.attrgetter("size")


class _Input:
    """A user input as the pool packs it: per-stream shape (batch dim 1) and the packed buffers."""

    __slots__ = ("name", "dtype", "axis", "shape", "buffers", "ones", "start", "mask_shape")

    def __init__(self, name: str, dtype: np.dtype, axis: int, shape: list) -> None:
        self.name = name
        self.dtype = dtype
        self.axis = axis
        # Per-stream shape: batch dim 1, other dynamic dims None (any size, checked by the Session).
        self.shape = tuple(1 if i == axis else (d if isinstance(d, int) else None) for i, d in enumerate(shape))
        self.buffers: dict[tuple, np.ndarray] = {}
        # Continuation input only: the whole batch of ones and of t=0 values, and the shape of a per-slot mask.
        self.ones: Optional[np.ndarray] = None
        self.start: Optional[np.ndarray] = None
        self.mask_shape: tuple = ()

    def matches(self, shape: tuple) -> bool:
        if len(shape) != len(self.shape):
            return False
        for got, want in zip(shape, self.shape):
            if want is not None and got != want:
                return False
        return True

    def index(self, dest: Any) -> tuple:
        return (slice(None),) * self.axis + (dest,)


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
        session: Any,
        *,
        idle_timeout: Optional[float] = None,
        on_expire: Optional[Callable[[Hashable], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            session (rnnrt.Session): The session; its batch size is the number of slots. The pool
                takes it over: step, reset or write its state only through the pool from now on.
                The pool does not close it.
            idle_timeout (float | None): Seconds after which a stream that neither stepped nor was
                opened is released (closed) to free its slot. Checked at ``open``, ``step`` and
                :meth:`expire`. Defaults to None (never).
            on_expire (Callable[[Hashable], None] | None): Called with the id of each stream released
                for idleness (outside the pool's locks). Defaults to None.
            clock (Callable[[], float]): Monotonic clock in seconds. Defaults to ``time.monotonic``.

        Raises:
            ConfigError: An input or output of the model has no batch axis, so it cannot be split
                into per-stream slots.
        """
        if idle_timeout is not None and not idle_timeout > 0:
            raise StateError(fmt("StreamPool", f"idle_timeout={idle_timeout!r} is not a positive number of seconds",
                                 "Pass None to keep idle streams forever."))
        cfg = session.config
        for role, tensors in (("Input", cfg.inputs), ("Output", cfg.outputs)):
            for t in tensors:
                if t.batch_axis is None:
                    raise ConfigError(
                        fmt(f"{role} {t.name!r}", "Has no batch axis, so StreamPool cannot give each stream its own slot",
                            "Pool only models whose every input and output has a batch_axis (convert with a batch dim).")
                    )
        self.session = session
        self.capacity: int = int(session.batch_size)
        self.idle_timeout = idle_timeout
        self._on_expire = on_expire
        self._clock = clock
        self.model: str = model_digest(cfg.model_path)

        cont = cfg.continuation
        self._cont_name = cont.input if (cont is not None and cont.fill == "auto") else None
        self._inputs = [_Input(t.name, np.dtype(t.dtype), t.batch_axis, t.shape) for t in cfg.inputs]
        self._input_names = {t.name for t in cfg.inputs}
        self._by_name = {spec.name: spec for spec in self._inputs}
        user = [t.name for t in cfg.inputs if cont is None or t.name != cont.input]
        self._single = user[0] if len(user) == 1 else None
        if self._cont_name is not None:
            spec = self._by_name[self._cont_name]
            if None in spec.shape:
                self._cont_name = None  # dynamic non-batch dims: the caller must feed it
            else:
                full = spec.shape[:spec.axis] + (self.capacity,) + spec.shape[spec.axis + 1:]
                spec.ones = np.ones(full, spec.dtype)
                spec.start = spec.ones.copy()
                if cont.time_axis is not None:
                    index: list[Any] = [slice(None)] * len(full)
                    index[cont.time_axis] = 0
                    spec.start[tuple(index)] = 0
                else:
                    spec.start[...] = 0
                spec.mask_shape = tuple(self.capacity if i == spec.axis else 1 for i in range(len(full)))
        self._cont_spec = self._by_name[self._cont_name] if self._cont_name is not None else None
        self._single_spec = self._by_name[self._single] if self._single is not None else None
        self._outputs = [(t.name, t.batch_axis) for t in cfg.outputs]
        self._state_outputs = {s.input: s.output for s in cfg.state}
        self._state_axes = {s.input: s.batch_axis for s in cfg.state}

        self._lock = threading.Lock()          # the slot table
        self._session_lock = threading.RLock()  # the Session: step, snapshot, restore
        self._streams: dict[Hashable, _Stream] = {}
        self._free = list(range(self.capacity))  # a heap: the lowest free slot is taken first
        self._pending: set[int] = set()          # slots to zero before the next step
        self._next_sweep = float("inf")
        # Per slot, for the stream in it: its next frame is its t=0; frames since open/reset; last use.
        self._at_start = np.ones(self.capacity, dtype=bool)
        self._steps = np.zeros(self.capacity, dtype=np.int64)
        self._last_used = np.zeros(self.capacity, dtype=np.float64)
        self._gen = 0                       # bumped whenever the set of open streams changes
        self._plan: Optional[_Plan] = None  # the last step's plan

    # Streams.
    def open(self, stream_id: Hashable) -> int:
        """Opens a stream in a free slot; its state starts at zero.

        Args:
            stream_id (Hashable): The new stream's id.

        Returns:
            int: The slot the stream occupies.

        Raises:
            StateError: The id is already open, or every slot is taken (after releasing idle streams).
        """
        expired: list = []
        with self._lock:
            rec = self._open_locked(stream_id, expired)
            self._pending.add(rec.slot)
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
        with self._lock:
            rec = self._streams.pop(stream_id, None)
            if rec is None:
                if missing_ok:
                    return
                raise self._not_open(stream_id)
            heapq.heappush(self._free, rec.slot)
            self._gen += 1

    def reset(self, stream_id: Hashable) -> None:
        """Starts a new sequence on an open stream: zero state, and t=0 for its next frame."""
        with self._lock:
            rec = self._streams.get(stream_id)
            if rec is None:
                raise self._not_open(stream_id)
            self._at_start[rec.slot] = True
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
        """Runs one engine step for every stream that has a frame; the other streams keep their state.

        Args:
            frames (Mapping[Hashable, Any]): One frame per stream id (see the module doc). Streams
                that are open but absent do not advance.

        Returns:
            dict[Hashable, dict[str, np.ndarray]]: Each stepped stream's outputs by name, batch dim 1,
            in the order of ``frames``. The arrays are the caller's (never reused or overwritten by the
            pool): per output, one array is made for this step with the stepped streams' rows, and each
            stream gets a view of its row, so keeping one stream's output keeps that array alive.

        Raises:
            StateError: A stream is not open, or the Session failed. No stream advances then.
            BindingError: A frame lacks an input, has an unknown one, or has the wrong shape or an
                unsafe dtype. No stream advances then.
        """
        expired: list = []
        with self._session_lock:
            try:
                with self._lock:
                    if self.idle_timeout is not None:
                        self._sweep(self._clock(), expired)
                    plan = self._plan_for(frames)
                    pending, self._pending = self._pending, set()
                    at_start = self._at_start.copy() if self._cont_spec is not None else None
            finally:
                self._notify(expired)
            if pending:
                self.session.reset(slots=sorted(pending))
            if not plan.keys:
                return {}
            feeds = self._pack(plan, list(frames.values()), at_start)
            saved = self.session.read_state(plan.idle) if (plan.idle and self._state_axes) else None
            # On failure the Session leaves its state untouched, so no stream advanced.
            outs = self.session.step(feeds)
            if saved is not None:
                self.session.write_state(plan.idle, saved)
            now = self._clock()
            slots = plan.slots
            with self._lock:
                # A reset() or open() that arrived during the step wins: that slot starts over next time.
                if self._pending:
                    advanced = slots[[s not in self._pending for s in slots.tolist()]]
                else:
                    advanced = plan.dest  # a slice where it can, cheaper than indexing by slots
                self._at_start[advanced] = False
                self._steps[advanced] += 1
                self._last_used[plan.dest] = now
            return self._unpack(plan, outs)

    def _plan_for(self, frames: Mapping[Hashable, Any]) -> _Plan:
        keys = tuple(frames)
        plan = self._plan
        if plan is not None and plan.gen == self._gen and plan.keys == keys:
            return plan
        streams = self._streams
        try:
            slots = [streams[sid].slot for sid in keys]
        except KeyError as err:
            raise self._not_open(err.args[0]) from None
        open_slots = [rec.slot for rec in streams.values()] if len(streams) > len(slots) else []
        plan = _Plan(self._gen, keys, slots, open_slots)
        self._plan = plan
        return plan

    def _unpack(self, plan: _Plan, outs: Mapping[str, np.ndarray]) -> dict[Hashable, dict[str, np.ndarray]]:
        """Cuts the batch outputs into per-stream rows, in frame order: one copy per output, then views."""
        n = len(plan.keys)
        rows = []
        for name, axis in self._outputs:
            arr = outs[name]
            if type(plan.dest) is slice:
                # The Session may reuse its buffers: copy what the streams get.
                full = np.array(arr[(slice(None),) * axis + (slice(0, n),)])
            else:
                full = np.take(arr, plan.slots, axis=axis)
            # Row i of `per` is stream i's output, its batch dim (size 1) in place: a strided view of `full`.
            shape, strides = full.shape, full.strides
            per = np.ndarray((n,) + shape[:axis] + (1,) + shape[axis + 1:], full.dtype, full, 0,
                             (strides[axis],) + strides[:axis] + (strides[axis],) + strides[axis + 1:])
            rows.append(per)  # iterating it yields the row views
        if len(rows) == 1:
            name = self._outputs[0][0]
            return {sid: {name: row} for sid, row in zip(plan.keys, rows[0])}
        names = [name for name, _ in self._outputs]
        return {sid: dict(zip(names, row)) for sid, *row in zip(plan.keys, *rows)}

    # Snapshot / restore.
    def snapshot(self, stream_id: Hashable) -> StreamState:
        """Copies an open stream's state (all state rows of its slot) out of the pool.

        The stream stays open; close it after snapshotting to move it elsewhere.

        Raises:
            StateError: The stream is not open.
        """
        with self._session_lock:
            with self._lock:
                rec = self._streams.get(stream_id)
                if rec is None:
                    raise self._not_open(stream_id)
                pending, self._pending = self._pending, set()
                slot, at_start, steps = rec.slot, bool(self._at_start[rec.slot]), int(self._steps[rec.slot])
            if pending:
                self.session.reset(slots=sorted(pending))
            rows = self.session.read_state([slot]) if self._state_axes else {}
        return StreamState(model=self.model, tensors=rows, outputs=dict(self._state_outputs),
                           batch_axes=dict(self._state_axes), at_start=at_start, steps=steps)

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
            StateError: The id is already open, the pool is full, or the state does not fit this
                model (different state names, shapes or dtypes, or another model).
        """
        if not isinstance(state, StreamState):
            raise StateError(fmt("StreamPool.restore", f"Got a {type(state).__name__}",
                                 "Pass a StreamState (from snapshot() or StreamState.from_bytes())."))
        self._check_fits(state, check_model)
        expired: list = []
        with self._session_lock:
            with self._lock:
                rec = self._open_locked(stream_id, expired)
                self._at_start[rec.slot], self._steps[rec.slot] = bool(state.at_start), int(state.steps)
                pending, self._pending = self._pending - {rec.slot}, set()
            self._notify(expired)
            try:
                if pending:
                    self.session.reset(slots=sorted(pending))
                if self._state_axes:
                    self.session.write_state([rec.slot], {n: np.asarray(a) for n, a in state.tensors.items()})
            except BaseException:
                self.close(stream_id, missing_ok=True)
                raise
        return rec.slot

    # Queries.
    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: Hashable) -> bool:
        return stream_id in self._streams

    def __iter__(self) -> Iterator[Hashable]:
        with self._lock:
            return iter(list(self._streams))

    @property
    def free_slots(self) -> int:
        """Number of slots no stream occupies."""
        return self.capacity - len(self._streams)

    def slot_of(self, stream_id: Hashable) -> int:
        """The slot an open stream occupies."""
        rec = self._streams.get(stream_id)
        if rec is None:
            raise self._not_open(stream_id)
        return rec.slot

    def __repr__(self) -> str:
        return f"StreamPool(streams={len(self._streams)}, capacity={self.capacity}, idle_timeout={self.idle_timeout})"

    # Helpers.
    def _open_locked(self, stream_id: Hashable, expired: list) -> _Stream:
        if stream_id in self._streams:
            raise StateError(fmt(f"Stream {stream_id!r}", "Is already open", "Close it first, or use another id."))
        now = self._clock()
        if not self._free:
            self._sweep(now, expired, force=True)
        if not self._free:
            raise StateError(
                fmt("StreamPool", f"All {self.capacity} slots are taken; cannot open stream {stream_id!r}",
                    "Close streams, set idle_timeout, or load the Session with a bigger batch_size.")
            )
        rec = _Stream(stream_id, heapq.heappop(self._free))
        self._streams[stream_id] = rec
        self._gen += 1
        self._at_start[rec.slot] = True
        self._steps[rec.slot] = 0
        self._last_used[rec.slot] = now
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
                heapq.heappush(self._free, rec.slot)
                expired.append(sid)
                self._gen += 1
            else:
                oldest = min(oldest, used)
        # last_used only grows, so this bounds the next expiry from below.
        self._next_sweep = oldest + self.idle_timeout

    def _notify(self, expired: list) -> None:
        if self._on_expire is not None:
            for sid in expired:
                self._on_expire(sid)

    def _not_open(self, stream_id: Hashable) -> StateError:
        return StateError(fmt(f"Stream {stream_id!r}", "Is not open in this pool",
                              "open() it first (streams idle longer than idle_timeout are released)."))

    def _pack(self, plan: _Plan, values: list, at_start: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        """The Session feeds for this step: each input's frames in their slots, whole-batch arrays."""
        spec = self._single_spec
        if spec is not None and len(self._inputs) == 1 + (self._cont_spec is not None):
            # Fast path: every frame is a bare array of the single user input.
            packed = self._bulk(spec, values, plan.dest)
            if packed is not None:
                feeds = {spec.name: packed}
                if self._cont_spec is not None:
                    feeds[self._cont_spec.name] = self._fill_cont(at_start)
                return feeds
        # Each frame as a mapping; a bare array stands for the single user input.
        names = self._input_names
        single = self._single
        maps = []
        for sid, frame in zip(plan.keys, values):
            if type(frame) is np.ndarray and single is not None:
                maps.append({single: frame})
            elif isinstance(frame, abc.Mapping):
                if not frame.keys() <= names:
                    key = next(k for k in frame if k not in names)
                    raise BindingError(fmt(f"Stream {sid!r}", f"Frame has unknown input {key!r}",
                                           f"Inputs: {sorted(names)}."))
                maps.append(frame)
            elif single is not None:
                maps.append({single: frame})
            else:
                raise BindingError(fmt(f"Stream {sid!r}", f"Got a bare {type(frame).__name__}",
                                       f"Pass a mapping {{input name: array}}; inputs: {sorted(names)}."))
        feeds: dict[str, np.ndarray] = {}
        for spec in self._inputs:
            name = spec.name
            parts = [frame.get(name) for frame in maps]
            packed = self._bulk(spec, parts, plan.dest)  # the common case, checked in bulk
            if packed is not None:
                feeds[name] = packed
                continue
            fill = spec is self._cont_spec
            fed = []
            for i, (sid, value) in enumerate(zip(plan.keys, parts)):
                if value is None:
                    if fill:
                        continue
                    raise BindingError(fmt(f"Stream {sid!r}", f"Frame has no input {name!r}",
                                           f"Feed every input of {sorted(names)}."))
                parts[i] = self._convert(spec, sid, value)
                fed.append(i)
            if len(fed) == len(parts):
                feeds[name] = self._gather(spec, parts, plan.dest)
            else:
                # Some frames omit the continuation input: fill every slot, then write the fed values.
                buf = self._fill_cont(at_start)
                if fed:
                    self._gather(spec, [parts[i] for i in fed], plan.slots[fed], buf)
                feeds[name] = buf
        return feeds

    def _fill_cont(self, at_start: np.ndarray) -> np.ndarray:
        """The continuation input of the whole batch: 1, and the t=0 value in slots at the start of a sequence."""
        spec = self._cont_spec
        buf = self._buffer(spec, spec.shape)
        np.copyto(buf, spec.ones)
        if at_start.any():
            np.copyto(buf, spec.start, where=at_start.reshape(spec.mask_shape))
        return buf

    def _convert(self, spec: _Input, stream_id: Hashable, value: Any) -> np.ndarray:
        name = spec.name
        if not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value, dtype=spec.dtype)
            except (TypeError, ValueError) as err:
                raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}",
                                       f"Cannot be converted to {spec.dtype.name}: {err}")) from err
        elif value.dtype != spec.dtype and not np.can_cast(value.dtype, spec.dtype, casting="safe"):
            raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Received dtype {value.dtype.name}",
                                   f"Expected {spec.dtype.name} (or one that casts to it safely)."))
        if not spec.matches(value.shape):
            shown = [d if d is not None else "*" for d in spec.shape]
            raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Received shape {value.shape}",
                                   f"Expected one stream's frame: shape {shown} (batch dim {spec.axis} is 1)."))
        return value

    def _bulk(self, spec: _Input, parts: list, dest: Any) -> Optional[np.ndarray]:
        """Packs the frames in one go when each is an array of the input's dtype and a valid shape, else None.

        No check per frame: the first frame's shape is a valid frame (batch dim 1); every frame has its
        size (one C-level pass); ``np.concatenate`` checks every frame's rank and non-batch dims, so each
        frame's batch dim is 1 too, and with ``casting="no"`` that each has exactly the input's dtype.
        """
        try:
            first = parts[0].shape
            sizes = set(map(_SIZE, parts))
        except AttributeError:
            return None  # None (an omitted input), a list, a mapping ...
        if not spec.matches(first):
            return None
        size = 1
        for d in first:
            size *= d
        if sizes != {size} or not size:
            return None
        buf = self._buffer(spec, first)
        try:
            if type(dest) is slice:
                np.concatenate(parts, axis=spec.axis, out=buf[spec.index(dest)], casting="no")
            else:
                buf[spec.index(dest)] = np.concatenate(parts, axis=spec.axis, dtype=spec.dtype, casting="no")
        except (TypeError, ValueError):
            return None  # array-likes numpy will not take as they are: the per-frame path says why
        return buf

    def _buffer(self, spec: _Input, shape: tuple) -> np.ndarray:
        key = shape[:spec.axis] + (self.capacity,) + shape[spec.axis + 1:]
        buf = spec.buffers.get(key)
        if buf is None:
            # Zero-filled once; slots without a frame keep finite old values (their state is restored).
            buf = spec.buffers[key] = np.zeros(key, dtype=spec.dtype)
        return buf

    def _gather(self, spec: _Input, parts: list, dest: Any, buf: Optional[np.ndarray] = None) -> np.ndarray:
        """Writes the frames (batch dim 1 each) into the whole-batch buffer at ``dest`` along the batch axis."""
        axis = spec.axis
        if buf is None:
            buf = self._buffer(spec, parts[0].shape)
        try:
            if type(dest) is slice:
                np.concatenate(parts, axis=axis, out=buf[spec.index(dest)])
            else:
                buf[spec.index(dest)] = np.concatenate(parts, axis=axis)
        except ValueError as err:
            raise BindingError(fmt(f"Input {spec.name!r}", f"Frames of this step disagree on a dynamic dim: {err}",
                                   "Every stream stepped together must use the same sizes for non-batch dims.")) from err
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
