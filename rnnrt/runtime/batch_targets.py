"""Where a :class:`~rnnrt.runtime.batcher.StreamBatcher` tick goes: a :class:`~rnnrt.runtime.pool.StreamPool`
in this process (frames checked with the Session's frame check and packed into its input buffers row by row,
outputs handed back as rows) or an ``rnnrt.client.StreamClient`` (one multi-stream request per tick).

Both take the batcher's per-stream records (``id``, ``slot``, ``open``, ``lost``) and answer the same calls:
``open``/``close``/``reset``/``alive`` per stream, ``prepare``/``prepare_chunk`` per submitted frame (the check
and the copy, in the caller's thread) and ``step_many`` per tick.
"""

from __future__ import annotations

from collections import abc
from typing import Any, Hashable, Optional, Sequence

import numpy as np

from rnnrt.errors import BindingError, RnnrtError, fmt
from rnnrt.runtime.frames import check_host, put_rows, take_rows


class PoolTarget:
    """Steps a StreamPool: frames checked with the Session's frame check, packed row by row."""

    def __init__(self, pool: Any) -> None:
        session = pool.session
        b = session.io
        self.pool = pool
        self.capacity = int(pool.capacity)
        self.expires = getattr(pool, "idle_timeout", None) is not None  # streams may vanish behind our back
        self.check_finite = bool(getattr(session, "check_finite", False))
        self.specs = {name: b.inputs[name] for name in b.input_names if name not in pool.shared}
        self.shared = set(pool.shared)
        cont = b.cont.spec.name if b.cont is not None else None
        user = [name for name in self.specs if name != cont]
        self.required = set(user)
        self.single = user[0] if len(user) == 1 else None
        self.outputs = [(t.name, t.batch_axis) for t in session.config.outputs]
        self.folds = dict(b.output_folds)
        self.copy_outputs = getattr(session, "outputs", "host") != "host"  # views valid until the next step
        self._buffers: dict[tuple, np.ndarray] = {}
        self._staging: Optional[dict] = None
        # Shapes a frame of an input already passed the full check with (exact dtype, contiguous): the
        # check depends on nothing else, so a frame like that is only copied. input -> {shape: key item}.
        self._seen: dict[str, dict[tuple, tuple]] = {name: {} for name in self.specs}
        self._dtypes = {name: spec.dtype for name, spec in self.specs.items()}

    # Streams.
    def open(self, stream: Any) -> None:
        stream.slot = self.pool.open(stream.id)

    def close(self, stream: Any) -> None:
        self.pool.close(stream.id, missing_ok=True)

    def reset(self, stream: Any) -> None:
        self.pool.reset(stream.id)

    def alive(self, stream: Any) -> bool:
        return stream.id in self.pool

    # Frames.
    def prepare(self, stream_id: Hashable, frame: Any) -> tuple[tuple, dict]:
        """``(layout key, {input: checked array})`` of one frame (batch dim 1); raises BindingError naming the stream."""
        if type(frame) is np.ndarray and self.single is not None and not self.check_finite:
            # Fast path: a plain array of the exact dtype and a shape that passed the check before.
            name = self.single
            item = self._seen[name].get(frame.shape)
            if item is not None and frame.dtype == self._dtypes[name] and frame.flags.c_contiguous:
                return (item,), {name: frame.copy()}
        key, arrays = self._prepare(stream_id, frame)
        if not self.check_finite:
            for item in key:
                name, shape = item
                seen = self._seen[name]
                if shape not in seen and len(seen) < 64:
                    seen[shape] = item
        return key, arrays

    def _prepare(self, stream_id: Hashable, frame: Any) -> tuple[tuple, dict]:
        """:meth:`prepare` with every check (the first frame of a shape, mappings, casts, non-contiguous ...)."""
        if isinstance(frame, abc.Mapping):
            items = frame.items()
        elif self.single is not None:
            items = ((self.single, frame),)
        else:
            raise BindingError(fmt(f"Stream {stream_id!r}", f"Got a bare {type(frame).__name__}",
                                   f"Pass a mapping {{input name: array}}; inputs: {sorted(self.specs)}."))
        arrays = {}
        for name, value in items:
            spec = self.specs.get(name)
            if spec is None:
                if name in self.shared:
                    raise BindingError(fmt(f"Stream {stream_id!r}", f"Frame carries input {name!r}, which has no "
                                           "batch axis", "The pool feeds it (StreamPool(session, shared=...)); "
                                           "leave it out of frames."))
                raise BindingError(fmt(f"Stream {stream_id!r}", f"Frame has unknown input {name!r}",
                                       f"Inputs: {sorted(self.specs)}."))
            try:
                arr = check_host(spec, value, {}, 1, self.check_finite)
            except BindingError as err:
                raise BindingError(f"Stream {stream_id!r} {err}") from err
            # The caller's own array: copied, so that reusing it for its next chunk cannot change this one.
            arrays[name] = arr.copy() if arr is value else arr
        missing = self.required - arrays.keys()
        if missing:
            raise BindingError(fmt(f"Stream {stream_id!r}", f"Frame has no input {sorted(missing)[0]!r}",
                                   f"Feed every input of {sorted(self.required)}."))
        return tuple((name, arr.shape) for name, arr in arrays.items()), arrays

    def prepare_chunk(self, stream_id: Hashable, frames: Sequence[Any]) -> tuple[tuple, dict]:
        """K frames of one stream, each checked, stacked along a new axis 0 (every frame the same layout)."""
        prepared = []
        for k, frame in enumerate(frames):
            try:
                prepared.append(self.prepare(stream_id, frame))
            except BindingError as err:
                raise BindingError(f"Chunk frame {k}: {err}") from err
        key = prepared[0][0]
        for k, (other, _) in enumerate(prepared):
            if other != key:
                raise BindingError(fmt(f"Stream {stream_id!r}", f"Frame {k} of the chunk has inputs/shapes {other}, "
                                       f"frame 0 has {key}", "Every frame of a chunk must have the same layout."))
        arrays = {name: np.stack([p[1][name] for p in prepared]) for name, _ in key}  # [K, ...] per input
        return (len(frames),) + key, arrays

    # Steps.
    def step(self, streams: list, frames: list, key: tuple) -> list:
        """One engine step of these streams' frames (one layout); per stream, its outputs."""
        n = len(streams)
        staging = self._full_batch(key) if n == self.capacity else None
        if staging is not None:
            # Every slot steps: rows go straight into the Session's input buffers, at each stream's slot.
            order = sorted(range(n), key=lambda i: streams[i].slot)
            for name, _ in key:
                _put_rows(staging[name], self.specs[name], [frames[i][name] for i in order],
                          [streams[i].slot for i in order])
            ids = [streams[i].id for i in order]
            outs = self.pool.split(ids, self.pool.step_batch(ids, {name: staging[name] for name, _ in key}))
            return [outs[s.id] for s in streams]
        feeds = {}
        for name, shape in key:
            spec = self.specs[name]
            buf = self._buffer(name, spec, shape, n)
            _put_rows(buf, spec, [frame[name] for frame in frames], range(n))
            feeds[name] = buf
        ids = [s.id for s in streams]
        outs = self.pool.split(ids, self.pool.step_batch(ids, feeds))
        return [outs[sid] for sid in ids]

    def step_chunk(self, streams: list, chunks: list, key: tuple) -> list:
        """One ``step_chunk`` of these streams' chunks (same K and layout); per stream, its stacked outputs."""
        count, layout = key[0], key[1:]
        n = len(streams)
        feeds = {}
        for name, shape in layout:
            spec = self.specs[name]
            buf = self._buffer(name, spec, shape, n, count)
            for i, chunk in enumerate(chunks):
                for k in range(count):
                    _put_row(buf[k], i, spec, chunk[name][k])
            feeds[name] = buf
        outs = self.pool.step_chunk([s.id for s in streams], feeds)
        results = []
        for i in range(n):
            row = np.array([i])
            per = {}
            for name, axis in self.outputs:
                value = outs[name]
                fold = self.folds.get(name)
                per[name] = np.stack([take_rows(value[k], row, axis, fold) for k in range(count)])
            results.append(per)
        return results

    def block_layout(self, ids: tuple, feeds: Any) -> tuple[Optional[tuple], Any]:
        """``(per-row layout key or None, feeds)`` of a block: the key a single frame of the same inputs and
        shapes has (the block then shares that engine call: host arrays of the exact dtype, one row per
        stream along an unfolded batch axis), else None (the block steps alone and the pool checks it)."""
        if isinstance(feeds, np.ndarray) and self.single is not None:
            feeds = {self.single: feeds}
        if self.check_finite or not isinstance(feeds, abc.Mapping) or not feeds.keys() <= self.specs.keys() \
                or not self.required <= feeds.keys():
            return None, feeds
        n = len(ids)
        key = []
        for name, spec in self.specs.items():
            arr = feeds.get(name)
            if arr is None:
                continue
            axis = spec.batch_axis
            if type(arr) is not np.ndarray or arr.dtype != spec.dtype or spec.fold is not None or \
                    arr.ndim <= axis or arr.shape[axis] != n:
                return None, feeds
            key.append((name, arr.shape[:axis] + (1,) + arr.shape[axis + 1:]))
        return tuple(key), feeds

    def step_parts(self, parts: list, key: tuple) -> list:
        """One engine step of single frames and blocks of one layout (rows in part order); per part, its
        outputs (a single frame's rows with batch dim 1, a block's rows in its stream order)."""
        if len(parts) == 1:  # one block alone: its own arrays, as the caller packed them
            block = parts[0][1]
            outs = self.pool.step_batch(block.ids, block.value)
            return [{name: np.array(v) for name, v in outs.items()} if self.copy_outputs else outs]
        ids: list = []
        values: dict[str, list] = {name: [] for name, _ in key}
        for stream, entry in parts:
            block_ids = getattr(entry, "ids", None)  # a block (``submit_batch``) carries its streams' ids
            if block_ids is not None:
                ids.extend(block_ids)
            else:
                ids.append(stream.id)
            for name in values:
                values[name].append(entry.value[name])
        feeds = {name: np.concatenate(v, axis=self.specs[name].batch_axis) for name, v in values.items()}
        outs = self.pool.step_batch(tuple(ids), feeds)
        results = []
        start = 0
        for _, entry in parts:
            stop = start + entry.count
            rows = np.arange(start, stop)
            results.append({name: take_rows(outs[name], rows, axis, self.folds.get(name))
                            for name, axis in self.outputs})
            start = stop
        return results

    def _full_batch(self, key: tuple) -> Optional[dict]:
        """The Session's input buffers when they have this layout's shapes at full batch, else None."""
        if self._staging is None:
            try:
                self._staging = self.pool.session.input_buffers()
            except (AttributeError, RnnrtError):
                self._staging = {}
        for name, shape in key:
            buf = self._staging.get(name)
            spec = self.specs[name]
            if buf is None or buf.shape != _rows_shape(spec, shape, self.capacity):
                return None
        return self._staging

    def _buffer(self, name: str, spec: Any, shape: tuple, n: int, count: int = 0) -> np.ndarray:
        full = _rows_shape(spec, shape, n)
        if count:
            full = (count,) + full
        buf = self._buffers.get((name, full))
        if buf is None:
            if len(self._buffers) >= 64:
                self._buffers.clear()
            buf = self._buffers[(name, full)] = np.empty(full, dtype=spec.dtype)
        return buf


class ClientTarget:
    """Steps streams on Triton servers through an ``rnnrt.client.StreamClient``: one ``step_many`` per tick."""

    capacity = None
    expires = False

    def __init__(self, client: Any) -> None:
        self.client = client

    def open(self, stream: Any) -> None:
        self.client.open(stream.id)

    def close(self, stream: Any) -> None:
        self.client.close(stream.id)

    def reset(self, stream: Any) -> None:
        self.client.reset(stream.id)

    def alive(self, stream: Any) -> bool:
        return True

    def prepare(self, stream_id: Hashable, frame: Any) -> tuple[tuple, Any]:
        """A copy of the frame (the client checks it when it sends): the caller may reuse its buffers."""
        try:
            if isinstance(frame, abc.Mapping):
                return (), {name: np.array(value) for name, value in frame.items()}
            return (), np.array(frame)  # also a nested list (the client would take a list as a chunk)
        except (TypeError, ValueError) as err:
            raise BindingError(fmt(f"Stream {stream_id!r}", f"The frame is not an array: {err}",
                                   "Pass numpy arrays (or a mapping of input name to array).")) from err

    def prepare_chunk(self, stream_id: Hashable, frames: Sequence[Any]) -> tuple[tuple, Any]:
        return (len(frames),), [self.prepare(stream_id, f)[1] for f in frames]

    def step_many(self, streams: list, values: list) -> list:
        """One multi-stream request per server; per stream, its outputs or the error it failed with."""
        results = self.client.step_many({s.id: v for s, v in zip(streams, values)})
        out = []
        for s, v in zip(streams, values):
            r = results[s.id]
            if isinstance(v, list) and not isinstance(r, BaseException):
                r = {name: np.stack([o[name] for o in r]) for name in r[0]}
            out.append(r)
        return out


def _rows_shape(spec: Any, shape: tuple, n: int) -> tuple:
    """A frame shape (batch dim 1 or ``outer*inner`` when folded) with ``n`` streams' rows."""
    axis = spec.batch_axis
    return shape[:axis] + (shape[axis] * n,) + shape[axis + 1:]


def _put_rows(buf: np.ndarray, spec: Any, values: list, rows: Sequence[int]) -> None:
    """Writes ``values[i]`` (batch dim 1) at row ``rows[i]`` of ``buf``; rows 0..n-1 in order (every row of
    ``buf``) in one concatenation, straight into ``buf``."""
    if spec.fold is None and len(values) == buf.shape[spec.batch_axis] and \
            all(r == i for i, r in enumerate(rows)):
        np.concatenate(values, axis=spec.batch_axis, out=buf)
        return
    for row, value in zip(rows, values):
        _put_row(buf, row, spec, value)


def _put_row(buf: np.ndarray, row: int, spec: Any, value: np.ndarray) -> None:
    axis = spec.batch_axis
    if spec.fold is None:
        buf[(slice(None),) * axis + (slice(row, row + 1),)] = value
    else:
        put_rows(buf, np.array([row]), axis, spec.fold, value)
