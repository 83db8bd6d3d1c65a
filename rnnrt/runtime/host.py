"""The host executor: runs a Session's steps on an engine that takes numpy arrays (ONNX Runtime).

State lives in two :class:`HostArena` (one numpy buffer each). A step of every slot feeds the frame as
checked; a step of some slots (``Session.step(feeds, slots=...)``) either *gathers* (dynamic batch:
the engine runs only the listed rows, their state rows are gathered before and scattered back after
a successful run) or *scatters* (fixed batch: the frame rows go into whole-batch buffers at their
slots, the engine runs the whole batch, the listed rows of the outputs are returned and only the
listed slots' state is fed back by the Session).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from rnnrt.errors import BindingError, ConfigError, EngineError, fmt
from rnnrt.runtime.frames import RowLayout, check_host, check_out, put_rows, stack_frame, take_rows
from rnnrt.runtime.memory import DoneHandle, aligned_layout, feedback_bindings

__all__ = ["HostArena", "HostExecutor"]


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> Optional[int]:
    """Bytes this process may still map under its address-space limit (``RLIMIT_AS``), or None if unlimited."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, ValueError, IndexError, OSError, AttributeError):  # IndexError: an empty statm
        return None
    return max(0, soft - used)


def memory_limit() -> Optional[tuple[int, str]]:
    """The most host memory a new allocation may take, and what bounds it: the machine's physical memory
    or, when lower, what the process's address-space limit (``ulimit -v``) leaves; None if unknown."""
    limits = []
    physical = _physical_memory()
    if physical is not None:
        limits.append((physical, f"this machine's {physical / 2**30:.1f} GiB"))
    left = _address_space_left()
    if left is not None:
        limits.append((left, f"the {left / 2**30:.1f} GiB this process's address-space limit (RLIMIT_AS) leaves"))
    return min(limits) if limits else None


class HostArena:
    """One contiguous host buffer holding every state tensor, each a view at an aligned offset."""

    def __init__(self, layout: list[tuple[str, tuple[int, ...], np.dtype]]) -> None:
        sizes = [int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for _, shape, dtype in layout]
        offsets, end = aligned_layout(sizes)
        limit = memory_limit()
        if limit is not None and 2 * end > limit[0]:
            raise ConfigError(
                fmt("Session", f"The state needs 2 x {end / 2**30:.1f} GiB for this batch size, more than "
                    f"{limit[1]}", "Use a smaller batch_size.")
            )
        try:
            self.buffer = np.zeros(end, dtype=np.uint8)
        except MemoryError as err:  # the check above cannot see every limit (e.g. memory cgroups)
            raise ConfigError(fmt("Session", f"Cannot allocate the {end / 2**30:.1f} GiB state arena for this "
                                  "batch size: out of memory", "Use a smaller batch_size.")) from err
        self.views: dict[str, np.ndarray] = {
            name: np.ndarray(shape, dtype=dtype, buffer=self.buffer, offset=off)
            for (name, shape, dtype), off in zip(layout, offsets)
        }

    def zero(self) -> None:
        self.buffer.fill(0)

    def zero_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray) -> None:
        for name, view in self.views.items():
            view[rows[name].index(slots)] = 0

    def copy_from(self, other: "HostArena") -> None:
        np.copyto(self.buffer, other.buffer)

    def copy_rows_from(self, other: "HostArena", rows: Mapping[str, RowLayout], slots: np.ndarray) -> None:
        for name, view in self.views.items():
            index = rows[name].index(slots)
            view[index] = other.views[name][index]

    def read_all(self) -> dict[str, np.ndarray]:
        out = {}
        for name, view in self.views.items():
            copy = view.copy()
            copy.flags.writeable = False
            out[name] = copy
        return out

    def read_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray) -> dict[str, np.ndarray]:
        return {name: rows[name].take(view, slots) for name, view in self.views.items()}

    def write_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        for name, view in self.views.items():
            rows[name].put(view, slots, values[name])

    def free(self) -> None:
        self.views = {}


class HostExecutor:
    """Runs steps on a host engine for one Session (see the module doc)."""

    fast = None
    fast_rows = None

    def __init__(self, session: Any, engine: Any, input_memory: Any) -> None:
        if session.outputs == "device":
            raise ConfigError(fmt("Session", f"outputs='device' needs a device engine; {engine.name!r} runs on the host",
                                  "Use outputs='host' or 'view'."))
        self._b = session.io
        self._engine = engine
        self._check_finite = session.check_finite
        self._scatter: dict[tuple, np.ndarray] = {}
        self._buffers: dict[tuple, np.ndarray] = {}
        self._arenas: list = []
        # Full-batch steps without sequence starts skip the per-input checks when the frame is exactly
        # what they would accept (see _fast_step); check_finite needs the full check.
        self._copy_back = session.feedback != "swap" and bool(self._b.state_rows)
        self._fast_plan: Any = None
        if not self._check_finite:
            self.fast = self._fast_step

    def make_arena(self, layout: list) -> HostArena:
        arena = HostArena(layout)
        self._arenas.append(arena)
        return arena

    def bind_arenas(self, arenas: tuple) -> None:
        pairs = self._b.state_outputs
        self._state_feeds, self._state_dests = feedback_bindings(pairs, arenas)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self.fast = None  # a closed Session's step goes the full way (and says it is closed)
        for arena in self._arenas:
            arena.free()
        self._arenas = []
        self._scatter.clear()
        self._buffers.clear()

    def input_buffers(self, shapes: Optional[Mapping[str, tuple]]) -> dict[str, np.ndarray]:
        b = self._b
        out = {}
        for name, spec in b.inputs.items():
            shape = tuple(shapes[name]) if shapes and name in shapes else spec.full_shape(b.batch_size, {})
            if shape is None:
                raise BindingError(fmt(f"Input {name!r}", f"Has dynamic dims {spec.display(b.batch_size)}",
                                       "Pass its full shape in shapes={name: shape}."))
            buf = self._buffers.get((name, shape))
            if buf is None:
                buf = self._buffers[(name, shape)] = np.zeros(shape, dtype=spec.dtype)
            out[name] = buf
        return out

    def _plan_fast(self) -> Any:
        """``(required names, {name: (dtype, full shape)}, continuation name, its fill of ones)`` of a
        full-batch frame whose every input has a fixed shape; False when some input's shape is dynamic."""
        b = self._b
        shapes = {}
        for name in b.required:
            spec = b.inputs[name]
            shape = spec.full_shape(b.batch_size, {})
            if shape is None or 0 in shape:
                return False
            shapes[name] = (spec.dtype, shape)
        cont = b.cont
        ones = None
        if cont is not None:
            try:
                ones = cont.ones(cont.shape(b.batch_size, {}))
            except BindingError:
                return False
        return frozenset(shapes), shapes, cont.spec.name if cont is not None else None, ones

    def _fast_step(self, frame: Any, k: int, out: Optional[Mapping[str, np.ndarray]] = None) -> Optional[dict]:
        """A full-batch step of a frame that is exactly what the checks accept (numpy arrays of the input's
        dtype and full shape, C-contiguous, every required input, continuation omitted), with no slot at a
        sequence start (the Session calls it only then): the checks are skipped, the rest is :meth:`run`'s.
        Returns None (the Session takes the full path) for any other frame."""
        plan = self._fast_plan
        if plan is None:
            plan = self._fast_plan = self._plan_fast()
        if plan is False or out:
            return None
        names, shapes, cont_name, ones = plan
        b = self._b
        if type(frame) is np.ndarray:
            if b.single_input is None:
                return None
            frame = {b.single_input: frame}
        elif type(frame) is not dict or frame.keys() != names:
            return None
        for name, value in frame.items():
            dtype, shape = shapes[name]
            if type(value) is not np.ndarray or value.dtype != dtype or value.shape != shape or \
                    not value.flags.c_contiguous:
                return None
        feeds = dict(frame)
        if cont_name is not None:
            feeds[cont_name] = ones
        feeds.update(self._state_feeds[k])
        results = self._engine.execute(feeds, self._state_dests[k])
        if self._copy_back:
            self._arenas[k].copy_from(self._arenas[1 - k])
        return {name: results[name] for name in b.output_names}

    def _check(self, frame: Mapping[str, Any], n: int, starts: Optional[np.ndarray]) -> tuple[dict, dict]:
        b = self._b
        feeds: dict[str, np.ndarray] = {}
        sizes: dict[str, int] = {}
        for name, value in frame.items():
            spec = b.inputs.get(name)
            if spec is None:
                raise b.unknown_input(name)
            feeds[name] = check_host(spec, value, sizes, n, self._check_finite)
        b.complete(frame, feeds, len(feeds), n, sizes, starts)
        return feeds, sizes

    def run(self, frame: Mapping[str, Any], slots: Optional[np.ndarray], n: int, starts: Optional[np.ndarray],
            parity: int, fuse_copy: bool, out: Optional[Mapping[str, np.ndarray]], wait: bool) -> tuple[Any, bool]:
        feeds, _ = self._check(frame, n, starts)
        b = self._b
        if slots is None:
            feeds.update(self._state_feeds[parity])
            results = self._engine.execute(feeds, self._state_dests[parity])
            outputs = self._finish(results, out)
            if fuse_copy:
                self._arenas[parity].copy_from(self._arenas[1 - parity])
            return (outputs if wait else DoneHandle(outputs)), fuse_copy
        if b.dynamic_batch:
            # Gather: the engine runs the listed rows only.
            rows = b.state_rows
            feeds.update(self._arenas[parity].read_rows(rows, slots))
            results = self._engine.execute(feeds)
            new_state = self._new_state(results, n)
            outputs = self._finish(results, out)
            self._arenas[parity].write_rows(rows, slots, new_state)
            return (outputs if wait else DoneHandle(outputs)), True
        # Scatter: the whole (fixed) batch runs; the listed rows are written at their slots.
        self._scatter_rows(feeds, slots)
        feeds.update(self._state_feeds[parity])
        results = self._engine.execute(feeds, self._state_dests[parity])
        outputs = self._finish(self._take_rows(results, slots), out)
        return (outputs if wait else DoneHandle(outputs)), False

    def run_chunk(self, frames: Mapping[str, np.ndarray], count: int, slots: Optional[np.ndarray], n: int,
                  starts: Optional[np.ndarray], parity: int) -> tuple[dict, bool]:
        """``count`` successive steps (``Session.step_chunk``): the frames are checked once, the state is
        carried from run to run in the engine's own output arrays and lands in the arenas only with the
        last run, so a failure at any frame leaves the state as it was. Returns ``(outputs stacked along
        a new axis 0, whether the state was fed back here)``."""
        b = self._b
        chunk: dict[str, np.ndarray] = {}
        sizes: dict[str, int] = {}
        for name, value in frames.items():
            chunk[name] = check_host(b.inputs[name], value, sizes, n, self._check_finite, chunk=True)
        b.missing(chunk)
        cont = b.cont if b.cont is not None and b.cont.spec.name not in chunk else None
        gather = slots is not None and b.dynamic_batch
        state = self._arenas[parity].read_rows(b.state_rows, slots) if gather else self._state_feeds[parity]
        stacked: dict[str, np.ndarray] = {}
        for j in range(count):
            feeds = {name: arr[j, ...] for name, arr in chunk.items()}  # [j, ...]: a 0-d array stays an array
            if cont is not None:
                feeds[cont.spec.name] = cont.make(n, sizes, starts if j == 0 else None)
            if slots is not None and not gather:
                self._scatter_rows(feeds, slots)
            feeds.update(state)
            last = j == count - 1
            try:
                results = self._engine.execute(feeds, self._state_dests[parity] if last and not gather else None)
            except EngineError as err:
                raise EngineError(fmt("Session.step_chunk", f"The engine failed at frame {j + 1} of {count}: {err}",
                                      "No slot advanced: the state is as before the chunk.")) from err
            if not last:
                state = {name: results[output] for name, output in b.state_outputs.items()}
            outputs = results if slots is None or gather else self._take_rows(results, slots)
            stack_frame(stacked, j, count, {name: outputs[name] for name in b.output_names})
        if gather:
            self._arenas[parity].write_rows(b.state_rows, slots, self._new_state(results, n))
        return stacked, gather

    def _new_state(self, results: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The state outputs of a gathered run of ``n`` rows by state input name (shapes and dtypes checked)."""
        b = self._b
        rows = b.state_rows
        new_state = {}
        for name, (_, shape, dtype) in zip(rows, b.state_layout):
            value = results[b.state_outputs[name]]
            want = list(shape)
            want[rows[name].axis] = n
            if tuple(value.shape) != tuple(want) or value.dtype != dtype:
                raise EngineError(fmt(f"State output {b.state_outputs[name]!r}",
                                      f"The engine returned {value.dtype.name}{tuple(value.shape)}",
                                      f"Expected {dtype.name}{tuple(want)}."))
            new_state[name] = value
        return new_state

    def _scatter_rows(self, feeds: dict, slots: np.ndarray) -> None:
        """Replaces each batched feed by a whole-batch buffer holding its rows at ``slots`` (fixed batch)."""
        b = self._b
        B = b.batch_size
        for name, value in list(feeds.items()):
            spec = b.inputs[name]
            if spec.batch_axis is None:
                continue
            axis = spec.batch_axis
            shape = value.shape[:axis] + (spec.batch_dim(axis, B),) + value.shape[axis + 1:]
            buf = self._scatter.get((name, shape))
            if buf is None:
                buf = self._scatter[(name, shape)] = np.zeros(shape, dtype=spec.dtype)
            put_rows(buf, slots, axis, spec.fold, value)
            feeds[name] = buf

    def _take_rows(self, results: Mapping[str, np.ndarray], slots: np.ndarray) -> dict[str, np.ndarray]:
        """The user outputs' rows of ``slots`` from a whole-batch run."""
        b = self._b
        taken = {}
        for name in b.output_names:
            axis = b.output_axes[name]
            taken[name] = results[name] if axis is None else take_rows(results[name], slots, axis,
                                                                       b.output_folds.get(name))
        return taken

    def _finish(self, results: Mapping[str, np.ndarray], out: Optional[Mapping[str, np.ndarray]]) -> dict:
        names = self._b.output_names
        if not out:
            return {name: results[name] for name in names}
        check_out(out, {name: results[name] for name in names})
        outputs = {}
        for name in names:
            dst = out.get(name)
            if dst is None:
                outputs[name] = results[name]
            else:
                np.copyto(dst, results[name], casting="no")
                outputs[name] = dst
        return outputs
