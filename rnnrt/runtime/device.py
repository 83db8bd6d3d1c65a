"""The device executor: runs a Session's steps on a device engine (TensorRT, or a stand-in) on its own stream.

State lives in two :class:`DeviceArena` (one ``cudaMalloc`` each) and everything runs on the
executor's CUDA stream. ``copy`` feedback is one device-to-device ``cudaMemcpyAsync`` of the whole
arena per step; ``swap`` re-points the engine's state bindings instead (no copy). ``reset()`` is one
``cudaMemsetAsync``; ``reset(slots)`` one ``cudaMemset2DAsync`` per state tensor and run of
consecutive slots; a step of some slots feeds back one ``cudaMemcpy2DAsync`` per state tensor and run.

Host frames go through pinned staging buffers (:class:`IOSet`: one H2D copy for every staged input,
one D2H copy for every output); device arrays (``__cuda_array_interface__`` or DLPack: CuPy, torch,
pycuda) are read in place when their dtype, shape and contiguity match exactly (no casts on the
device). A step of some slots writes each frame row into the whole-batch staging buffer at its slot
and gathers the listed rows of the outputs. Outputs are numpy arrays the caller owns
(``outputs="host"``), numpy views of the pinned staging valid until the next step (``"view"``), or
:class:`rnnrt.cuda.DeviceArray` views that the next step overwrites (``"device"``).

With ``cuda_graph=True`` the H2D copy, the engine, the feedback copy and the D2H copy are captured once
per set of input shapes (one graph per arena orientation with ``swap``) and replayed; engines that
cannot be captured fall back to plain enqueues with one log line. A step whose numpy frame has exactly
the layout of the previous one (names, dtypes, shapes) reuses a cached :class:`FastPlan`: each array
is checked against it and copied straight into pinned staging (not at all when it *is* the staging
buffer, see ``Session.input_buffers``), and the graph is launched; any other frame takes the full
path (casts, errors, a new plan).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from rnnrt.errors import BindingError, ConfigError, EngineError, StateError, fmt
from rnnrt.ir.streams import fold_entries
from rnnrt.runtime.frames import (RowLayout, check_device, check_host, check_out, check_placement, put_rows, stream_shape,
                                    take_rows)
from rnnrt.runtime.memory import ALIGN, aligned_layout, feedback_bindings

G_LOGGER = logging.getLogger("rnnrt")

__all__ = ["DeviceArena", "DeviceExecutor", "FastPlan", "IOSet", "StepHandle"]


class RowCopies:
    """Collects row copies between tensors and issues them together.

    Per run of consecutive rows, a tensor with dims before its batch axis needs one strip per outer
    index. A single run of a 2-D block is one ``cudaMemcpy2DAsync``; everything else goes out as one
    batch (:class:`rnnrt.cuda.BatchCopier`: one kernel launch, else one ``cudaMemcpyBatchAsync``).
    Runs are found with numpy (no Python loop per slot).
    """

    __slots__ = ("dsts", "srcs", "sizes", "two_d")

    def __init__(self) -> None:
        self.dsts: list[np.ndarray] = []
        self.srcs: list[np.ndarray] = []
        self.sizes: list[np.ndarray] = []
        self.two_d: list[tuple] = []

    def add(self, dst: int, dst_rows: RowLayout, dst_idx: np.ndarray, src: int, src_rows: RowLayout,
            src_idx: np.ndarray) -> None:
        """RowLayout ``src_idx`` of the tensor at ``src`` go to rows ``dst_idx`` of the tensor at ``dst``."""
        outer, inner, dpitch = dst_rows.geometry()
        _, _, spitch = src_rows.geometry()
        dst_idx = np.asarray(dst_idx, dtype=np.int64)
        src_idx = np.asarray(src_idx, dtype=np.int64)
        if not len(dst_idx) or not inner or not outer:
            return
        breaks = np.flatnonzero((np.diff(dst_idx) != 1) | (np.diff(src_idx) != 1)) + 1
        starts = np.concatenate(([0], breaks))
        lengths = np.diff(np.concatenate((starts, [len(dst_idx)])))
        d0, s0 = dst_idx[starts], src_idx[starts]
        if len(starts) == 1 and outer > 1:
            self.two_d.append((dst + int(d0[0]) * inner, dpitch, src + int(s0[0]) * inner, spitch,
                               int(lengths[0]) * inner, outer))
            return
        o = np.arange(outer, dtype=np.int64)[:, None]
        self.dsts.append((dst + o * dpitch + d0 * inner).ravel())
        self.srcs.append((src + o * spitch + s0 * inner).ravel())
        self.sizes.append(np.broadcast_to(lengths * inner, (outer, len(lengths))).ravel())

    def flush(self, cuda: Any, copier: Any, stream: Any) -> None:
        for args in self.two_d:
            cuda.memcpy2d_async(*args, "d2d", stream)
        if self.sizes:
            copier.copy(np.concatenate(self.dsts), np.concatenate(self.srcs), np.concatenate(self.sizes), stream)
        self.dsts, self.srcs, self.sizes, self.two_d = [], [], [], []


def _fits(out: Mapping[str, Any], wanted: Iterable[tuple]) -> bool:
    """Whether ``out`` holds, for every ``(name, shape, dtype)`` wanted and nothing else, a writable C-contiguous
    numpy array of exactly that shape and dtype (what a fast path writes into without a check of its own)."""
    count = 0
    for name, shape, dtype in wanted:
        dst = out.get(name)
        if type(dst) is not np.ndarray or dst.dtype != dtype or dst.shape != tuple(shape) or \
                not dst.flags.writeable or not dst.flags.c_contiguous:
            return False
        count += 1
    return count == len(out)


class DeviceArena:
    """The device twin of :class:`rnnrt.runtime.host.HostArena`: one ``cudaMalloc``, a DeviceTensor per state.

    Every operation is enqueued on the executor's stream; host reads go through a pinned mirror.
    """

    def __init__(self, cuda: Any, layout: list[tuple[str, tuple[int, ...], np.dtype]], stream: Any,
                 copier: Any) -> None:
        from rnnrt.engines.base import DeviceTensor

        self._cuda = cuda
        self._copier = copier
        self.stream = stream
        sizes = [int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for _, shape, dtype in layout]
        offsets, self.nbytes = aligned_layout(sizes)
        self.layout = {name: (off, shape, dtype) for (name, shape, dtype), off in zip(layout, offsets)}
        self.buffer = cuda.DeviceBuffer(self.nbytes)
        self.views = {name: DeviceTensor(self.buffer.ptr + off, dtype, shape)
                      for name, (off, shape, dtype) in self.layout.items()}
        self._mirror: Any = None
        # Row copies of read-only slot arrays seen by copy_rows_from, by id: (the array, source arena, prepared).
        self._blocks: dict[tuple, tuple] = {}  # (id(slots), id(source arena)) -> (slots, source, prepared copies)
        self.zero()

    def zero(self) -> None:
        self._cuda.memset_async(self.buffer.ptr, 0, self.nbytes, self.stream)

    def zero_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray) -> None:
        from rnnrt.runtime.frames import runs

        spans = runs(slots)
        for name, (off, _, _) in self.layout.items():
            outer, inner, pitch = rows[name].geometry()
            for a, b in spans:
                self._cuda.memset2d_async(self.buffer.ptr + off + a * inner, pitch, 0, (b - a) * inner, outer,
                                          self.stream)

    def copy_from(self, other: "DeviceArena") -> None:
        self._cuda.memcpy_async(self.buffer.ptr, other.buffer.ptr, self.nbytes, "d2d", self.stream)

    def copy_rows_from(self, other: "DeviceArena", rows: Mapping[str, RowLayout], slots: np.ndarray) -> None:
        key = (id(slots), id(other))
        blocks = self._blocks.get(key)
        if blocks is not None and blocks[0] is slots and blocks[1] is other:
            blocks[2].launch(self.stream)
            return
        idx = np.sort(slots)
        geometry = [rows[name].geometry() for name in self.layout]
        if all(g[0] == 1 for g in geometry):
            # Every state has its slot axis first: per state and run of slots one contiguous block, the
            # runs found once for all states (the common case, and the hot one for a pool step); kept
            # for a read-only slots array (a Session's cached "other slots" of a pool plan).
            starts = np.flatnonzero(np.diff(idx, prepend=-2) != 1)
            lengths = np.diff(starts, append=len(idx))
            first = idx[starts]
            inner = np.array([g[1] for g in geometry], dtype=np.int64)[:, None]
            offs = (np.array([off for off, _, _ in self.layout.values()], dtype=np.int64)[:, None] + first * inner).ravel()
            sizes = (lengths * inner).ravel()
            if slots.flags.writeable:
                self._copier.copy(self.buffer.ptr + offs, other.buffer.ptr + offs, sizes, self.stream)
                return
            # A read-only slots array (a Session's cached "other slots" of a pool plan) comes back: its
            # copy table goes to the device once and later steps only launch the copy kernel.
            stale = self._blocks.pop(key, None)  # an id reused by a new array: its table goes
            if stale is not None:
                stale[2].free()
            if len(self._blocks) >= 16:
                self._blocks.pop(next(iter(self._blocks)))[2].free()
            prepared = self._copier.prepare(self.buffer.ptr + offs, other.buffer.ptr + offs, sizes)
            self._blocks[key] = (slots, other, prepared)
            prepared.launch(self.stream)
            return
        copies = RowCopies()
        for name, (off, _, _) in self.layout.items():
            r = rows[name]
            copies.add(self.buffer.ptr + off, r, idx, other.buffer.ptr + off, r, idx)
        copies.flush(self._cuda, self._copier, self.stream)

    def _download(self) -> dict[str, np.ndarray]:
        if self._mirror is None:
            self._mirror = self._cuda.PinnedBuffer(self.nbytes)
        self._cuda.memcpy_async(self._mirror.ptr, self.buffer.ptr, self.nbytes, "d2h", self.stream)
        self.stream.synchronize()
        return {name: self._mirror.view(dtype, shape, off) for name, (off, shape, dtype) in self.layout.items()}

    def read_all(self) -> dict[str, np.ndarray]:
        views = {}
        for name, view in self._download().items():
            view = view.copy()
            view.flags.writeable = False
            views[name] = view
        return views

    def read_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray) -> dict[str, np.ndarray]:
        return {name: rows[name].take(view, slots) for name, view in self._download().items()}

    def write_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        for name, view in self._download().items():
            rows[name].put(view, slots, values[name])
        self._cuda.memcpy_async(self.buffer.ptr, self._mirror.ptr, self.nbytes, "h2d", self.stream)
        self.stream.synchronize()

    def free(self) -> None:
        for _, _, prepared in self._blocks.values():
            prepared.free()
        self._blocks.clear()
        self.buffer.free()
        if self._mirror is not None:
            self._mirror.free()
            self._mirror = None


class IOSet:
    """Device buffers (and pinned staging) for one set of input shapes; graphs capture their addresses.

    The device buffer holds the host-staged inputs first, then the device-fed inputs, then the outputs.
    The pinned buffer mirrors the staged inputs at the same offsets, then the outputs (host outputs
    only) at the same offsets relative to the first output. So one H2D copy uploads every staged input
    and one D2H copy downloads every output (fewer copy nodes in a graph, fewer calls when eager).
    """

    def __init__(self, cuda: Any, inputs: list[tuple[str, tuple, np.dtype, bool]],
                 outputs: list[tuple[str, tuple, np.dtype]], host_outputs: bool) -> None:
        from rnnrt.engines.base import DeviceTensor

        staged = [(n, shape, dt) for n, shape, dt, on_host in inputs if on_host]
        fed = [(n, shape, dt) for n, shape, dt, on_host in inputs if not on_host]
        entries = staged + fed + list(outputs)
        sizes = [int(np.prod(shape, dtype=np.int64)) * dt.itemsize for _, shape, dt in entries]
        offsets, total = aligned_layout(sizes)
        ns, no = len(staged), len(outputs)
        staged_end = offsets[ns - 1] + sizes[ns - 1] if ns else 0
        out_start = offsets[len(entries) - no] if no else total
        pin_out = -(-staged_end // ALIGN) * ALIGN  # where the outputs' mirror starts in pinned memory
        self.device = cuda.DeviceBuffer(total)
        try:
            self.pinned = cuda.PinnedBuffer(pin_out + (total - out_start if host_outputs else 0))
        except BaseException:
            self.device.free()
            raise
        self.tensors = {n: DeviceTensor(self.device.ptr + off, dt, shape)
                        for (n, shape, dt), off in zip(entries, offsets)}
        self.host = {n: self.pinned.view(dt, shape, off) for (n, shape, dt), off in zip(staged, offsets)}
        if host_outputs:
            self.host.update({n: self.pinned.view(dt, shape, off - out_start + pin_out)
                              for (n, shape, dt), off in zip(outputs, offsets[len(entries) - no:])})
        # (dst, src, nbytes) of the one upload and the one download.
        self.h2d = (self.device.ptr, self.pinned.ptr, staged_end)
        self.d2h = (self.pinned.ptr + pin_out, self.device.ptr + out_start, total - out_start if host_outputs else 0)
        self.nbytes = {n: size for (n, _, _), size in zip(entries, sizes)}
        self.staged_inputs = [n for n, _, _ in staged]
        self.device_inputs = [n for n, _, _ in fed]
        self.outputs = [n for n, _, _ in outputs]
        self.warm = False
        self.graphs: dict[tuple, Any] = {}
        self.gathered: dict[tuple, Any] = {}  # (name, rows) -> DeviceBuffer of gathered output rows

    def free(self) -> None:
        for g in self.graphs.values():
            g.destroy()
        self.graphs.clear()
        for buf in self.gathered.values():
            buf.free()
        self.gathered.clear()
        self.host = {}
        self.device.free()
        self.pinned.free()


class FastPlan:
    """What a graph-mode step with the same frame layout as the last one needs, resolved once.

    Built after a full-batch step that went the whole way (checks, staging, graph launch) with host
    frames only. A later frame with the same names, each an exact ``np.ndarray`` of the same dtype and
    shape, is copied straight into the pinned staging views and the graph of the current parity is
    launched; anything else takes the full path, which raises the usual errors or builds a new plan.
    Graph mode stages the continuation input too: an auto-filled one stays all ones in pinned memory, so
    it is not copied at all (a step after reset() takes the full path, which writes the zeros;
    ``refill`` then names the staging view to set back to ones before the next launch).
    """

    __slots__ = ("io", "inputs", "nfed", "bare", "launch", "outputs", "refill", "mode", "rows_in", "rows_out")

    def __init__(self, io: IOSet, names: list[str], bare: bool, launch: tuple, mode: str,
                 output_names: list[str], stream: int, refill: Optional[np.ndarray], wrap: Any,
                 in_axes: Mapping[str, Optional[int]], out_axes: Mapping[str, Optional[int]]) -> None:
        self.io = io
        self.refill = refill
        # (name, dtype, shape, pinned staging view)
        self.inputs = tuple((n, io.host[n].dtype, io.host[n].shape, io.host[n]) for n in names)
        # For a step of some slots: (name, dtype, shape before / after the batch axis, index prefix or None
        # when the input has no batch axis, staging view), and (name, batch axis, staging view) per output.
        self.rows_in = tuple((n, io.host[n].dtype, io.host[n].shape[:a] if a is not None else io.host[n].shape,
                              io.host[n].shape[a + 1:] if a is not None else (),
                              (slice(None),) * a if a is not None else None, io.host[n])
                             for n, a in ((n, in_axes[n]) for n in names))
        self.rows_out = tuple((n, out_axes[n], io.host[n]) for n in output_names) if mode != "device" else ()
        self.nfed = len(names)
        self.bare = bare
        self.launch = launch  # per parity (the input arena's index): a raw cudaGraphLaunch, or None
        self.mode = mode
        if mode != "device":
            self.outputs = tuple((n, io.host[n]) for n in output_names)
        else:
            # The same DeviceArray objects every step: each step's outputs overwrite the last's anyway.
            self.outputs = tuple((n, wrap(io.tensors[n].ptr, np.dtype(io.tensors[n].dtype),
                                          tuple(int(d) for d in io.tensors[n].shape), stream)) for n in output_names)


class StepHandle:
    """An enqueued device step; :meth:`wait` returns its outputs (see ``Session.step_async``)."""

    __slots__ = ("_executor", "_finish", "_keep", "_result")

    def __init__(self, executor: Optional["DeviceExecutor"], finish: Any, keep: Any) -> None:
        self._executor = executor
        self._finish = finish
        self._keep = keep
        self._result: Any = None

    def done(self) -> bool:
        """Whether the step has finished on the GPU (never blocks)."""
        if self._result is not None:
            return True
        return self._executor is None or self._executor.query()

    def wait(self) -> dict[str, Any]:
        """Blocks until the step has finished and returns its outputs (what ``Session.step`` returns).

        Raises:
            StateError: The session was closed before the step was waited for.
            CudaError: The GPU reported an error for this step.
        """
        if self._result is not None:
            return self._result
        executor = self._executor
        if executor is None or executor.closed:
            raise StateError(fmt("StepHandle", "wait() was called after the session was closed",
                                 "Wait for a step before closing its session."))
        try:
            executor.finish(self)
        finally:
            self._keep = None
        self._result = self._finish()
        self._executor = None
        return self._result


class DeviceExecutor:
    """Runs steps on a device engine for one Session (see the module doc)."""

    def __init__(self, session: Any, engine: Any, input_memory: Any) -> None:
        from rnnrt import cuda

        self._cuda = cuda
        self._b = b = session.io
        self._engine = engine
        self._mode = session.outputs
        self._swap = session.feedback == "swap" and bool(b.state_rows)
        self._check_finite = session.check_finite
        self.fast: Any = None
        self.fast_rows: Any = None
        self.closed = False
        self._pending: Optional[StepHandle] = None
        self._plan: Optional[FastPlan] = None
        self._io_sets: dict[tuple, IOSet] = {}
        self._arenas: list = []
        self._ctx: Any = None
        self._event: Any = None
        self._stream: Any = None
        policy = input_memory
        names = b.input_names
        if isinstance(policy, str):
            policy = {n: policy for n in names}
        elif isinstance(policy, Mapping):
            unknown = sorted(set(policy) - set(names), key=str)
            if unknown:
                raise ConfigError(fmt(f"input_memory {unknown[0]!r}", "Is not an input of the model", f"Inputs: {names}."))
            policy = {n: policy.get(n, "auto") for n in names}
        else:
            raise ConfigError(fmt("Session", f"input_memory={input_memory!r} is not supported",
                                  "Use 'auto', 'host', 'device' or a mapping {input name: one of those}."))
        for n, where in policy.items():
            if where not in ("auto", "host", "device"):
                raise ConfigError(fmt(f"input_memory[{n!r}]", f"Is {where!r}", "Use 'auto', 'host' or 'device'."))
        self._policy = policy
        self._copier: Any = None
        try:
            self._stream = cuda.Stream()
            self._copier = cuda.BatchCopier()
            self._sync = cuda.raw_synchronizer(self._stream)
            self._event = cuda.Event()
            self._device_id = cuda.current_device()
            self._ctx = engine.create_context()
        except BaseException:
            self.close()
            raise
        self._graphs_ok = session.cuda_graph

    @property
    def copy_path(self) -> str:
        """How many-row copies run here: ``"kernel"`` (one NVRTC kernel launch), ``"batch"``
        (``cudaMemcpyBatchAsync``) or ``"loop"``."""
        return getattr(self._copier, "path", "none")

    # Arenas.
    def make_arena(self, layout: list) -> DeviceArena:
        arena = DeviceArena(self._cuda, layout, self._stream, self._copier)
        self._arenas.append(arena)
        return arena

    def bind_arenas(self, arenas: tuple) -> None:
        pairs = self._b.state_outputs
        self._state_feeds, self._state_dests = feedback_bindings(pairs, arenas)
        self._state_shapes = {pairs[n]: tuple(arenas[0].views[n].shape) for n in pairs}

    # Stream.
    def query(self) -> bool:
        return self._stream.query()

    def sync(self) -> None:
        if self._stream is not None and self._stream.handle:
            self._stream.synchronize()

    def finish(self, handle: StepHandle) -> None:
        """Waits for the pending step (one step in flight: the stream's end is its end)."""
        try:
            self._stream.synchronize()
        finally:
            if self._pending is handle:
                self._pending = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.fast = self.fast_rows = None
        self._plan = None
        self._pending = None
        stream = self._stream
        try:
            if stream is not None and stream.handle:
                stream.synchronize()
        finally:
            for io in self._io_sets.values():
                io.free()
            self._io_sets = {}
            for arena in self._arenas:
                arena.free()
            self._arenas = []
            if self._ctx is not None:
                self._engine.destroy_context(self._ctx)
                self._ctx = None
            if self._event is not None:
                self._event.destroy()
            if self._copier is not None:
                self._copier.free()
            if stream is not None:
                stream.destroy()

    # The fast path.
    def _fast_step(self, frame: Any, parity: int, out: Optional[Mapping[str, np.ndarray]] = None) -> Any:
        """Stages ``frame``, launches the graph through the plan and waits; None, having done nothing,
        when the frame (or ``out``: every output, exactly its dtype and shape) does not match the plan
        exactly or a step is pending (the full path then runs)."""
        if out is not None:
            plan = self._plan
            if plan is None or plan.mode == "device" or not _fits(out, ((n, v.shape, v.dtype) for n, v in plan.outputs)):
                return None
        plan = self._fast_launch(frame, parity)
        if plan is None:
            return None
        err = self._sync()[0]
        if err:
            self._cuda.raise_status(err, "cudaStreamSynchronize")
        if out is not None:
            for name, view in plan.outputs:
                np.copyto(out[name], view)
            return dict(out)
        if plan.mode == "host":
            return {name: view.copy() for name, view in plan.outputs}
        return dict(plan.outputs)

    def _plan_launch(self, parity: int) -> tuple[Any, Any]:
        """The fast-path plan and its graph launch for input arena ``parity``; (None, None) when there is none
        (no plan, a step pending, or no graph captured for that arena yet)."""
        plan = self._plan
        if self._pending is not None or plan is None:
            return None, None
        return plan, plan.launch[parity]

    def _fast_launch(self, frame: Any, parity: int) -> Optional[FastPlan]:
        plan, launch = self._plan_launch(parity)
        if launch is None:
            return None
        if type(frame) is dict:
            if len(frame) != plan.nfed:
                return None
            for name, dtype, shape, _ in plan.inputs:
                value = frame.get(name)
                if type(value) is not np.ndarray or value.dtype != dtype or value.shape != shape:
                    return None
            for name, _, _, staging in plan.inputs:
                value = frame[name]
                if value is not staging:
                    staging[...] = value
        elif plan.bare and type(frame) is np.ndarray:
            _, dtype, shape, staging = plan.inputs[0]
            if frame.dtype != dtype or frame.shape != shape:
                return None
            if frame is not staging:
                staging[...] = frame
        else:
            return None
        self._launch(plan, launch)
        return plan

    def _launch(self, plan: FastPlan, launch: Any) -> None:
        """Launches a fast-path graph once its frame is staged (setting a refilled continuation back to ones)."""
        if plan.refill is not None:
            plan.refill[...] = 1
            plan.refill = None
        err = launch()[0]
        if err:
            self._cuda.raise_status(err, "cudaGraphLaunch")

    def _fast_rows(self, frame: Any, parity: int, rows: np.ndarray, out: Optional[Mapping[str, np.ndarray]] = None) -> Any:
        """Like :meth:`_fast_step` for a step of some slots (swap feedback, numpy outputs): each frame
        row goes into the whole-batch staging at its slot, the full graph runs, and the outputs are the
        listed rows (gathered into ``out``'s arrays when given). None, having done nothing, when the
        frame or ``out`` does not match the plan exactly."""
        plan, launch = self._plan_launch(parity)
        if launch is None:
            return None
        n = len(rows)
        if out is not None and not _fits(out, ((name, view.shape[:axis] + (n,) + view.shape[axis + 1:]
                                                if axis is not None else view.shape, view.dtype)
                                               for name, axis, view in plan.rows_out)):
            return None
        if type(frame) is dict:
            if len(frame) != plan.nfed:
                return None
            for name, dtype, head, tail, prefix, _ in plan.rows_in:
                value = frame.get(name)
                if type(value) is not np.ndarray or value.dtype != dtype or \
                        value.shape != (head + (n,) + tail if prefix is not None else head):
                    return None
            for name, _, _, _, prefix, staging in plan.rows_in:
                if prefix is None:
                    staging[...] = frame[name]
                else:
                    staging[prefix + (rows,)] = frame[name]
        elif plan.bare and type(frame) is np.ndarray:
            _, dtype, head, tail, prefix, staging = plan.rows_in[0]
            if prefix is None or frame.dtype != dtype or frame.shape != head + (n,) + tail:
                return None
            staging[prefix + (rows,)] = frame
        else:
            return None
        self._launch(plan, launch)
        err = self._sync()[0]
        if err:
            self._cuda.raise_status(err, "cudaStreamSynchronize")
        if out is not None:
            for name, axis, view in plan.rows_out:
                if axis is None:
                    np.copyto(out[name], view)
                else:
                    np.take(view, rows, axis=axis, out=out[name], mode="clip")  # rows are checked; "raise" would buffer
            return dict(out)
        return {name: (np.take(view, rows, axis=axis) if axis is not None else
                       (view.copy() if plan.mode == "host" else view)) for name, axis, view in plan.rows_out}

    def _plan_outputs(self, plan: FastPlan) -> dict[str, Any]:
        if plan.mode == "host":
            return {name: view.copy() for name, view in plan.outputs}
        return dict(plan.outputs)

    # The full path.
    def run(self, frame: Mapping[str, Any], slots: Optional[np.ndarray], n: int, starts: Optional[np.ndarray],
            parity: int, fuse_copy: bool, out: Optional[Mapping[str, np.ndarray]], wait: bool) -> tuple[Any, bool]:
        if self._pending is not None:
            raise StateError(fmt("Session", "A step was started before the previous step_async() was waited for",
                                 "Call wait() on the previous handle first."))
        if slots is None and out is None and starts is None:
            if wait:
                result = self._fast_step(frame, parity)
                if result is not None:
                    return result, fuse_copy
            else:
                plan = self._fast_launch(frame, parity)
                if plan is not None:
                    handle = StepHandle(self, lambda: self._plan_outputs(plan), None)
                    self._pending = handle
                    return handle, fuse_copy
        handle = self._step(frame, slots, n, starts, parity, fuse_copy, out)
        return (handle.wait() if wait else handle), fuse_copy

    def _check(self, frame: Mapping[str, Any], n: int, starts: Optional[np.ndarray]) -> tuple[dict, dict]:
        cuda = self._cuda
        b = self._b
        host: dict[str, np.ndarray] = {}
        foreign: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        policy = self._policy
        for name, value in frame.items():
            spec = b.inputs.get(name)
            if spec is None:
                raise b.unknown_input(name)
            on_device = not isinstance(value, np.ndarray) and cuda.is_device_array(value)
            check_placement(name, value, on_device, policy[name])
            if on_device:
                fa = cuda.foreign_array(value, name, self._stream.handle)
                foreign[name] = check_device(spec, fa, sizes, n, self._device_id)
            else:
                host[name] = check_host(spec, value, sizes, n, self._check_finite)
        b.complete(frame, host, len(host) + len(foreign), n, sizes, starts)
        return host, foreign

    def _step(self, frame: Mapping[str, Any], slots: Optional[np.ndarray], n: int, starts: Optional[np.ndarray],
              parity: int, fused: bool, out: Optional[Mapping[str, np.ndarray]]) -> StepHandle:
        cuda = self._cuda
        b = self._b
        B = b.batch_size
        # The staging buffers may change below: no plan until this step has gone through.
        self._plan = None
        self.fast = self.fast_rows = None
        host, foreign = self._check(frame, n, starts)
        stream = self._stream

        def full(name: str, shape: tuple) -> tuple:
            spec = b.inputs[name]
            axis = spec.batch_axis
            return shape if (slots is None or axis is None) else \
                shape[:axis] + (spec.batch_dim(axis, B),) + shape[axis + 1:]

        key = tuple((name, full(name, host[name].shape if name in host else foreign[name].shape), name in host)
                    for name in b.input_names)
        io = self._io_sets.get(key)
        if io is None:
            io = self._make_io(key)
        if out:
            if self._mode == "device":
                raise BindingError(fmt("Session.step", "out= was given but the session returns device arrays",
                                       "Use outputs='host' or 'view' to fill numpy arrays."))
            check_out(out, {name: self._gathered_like(io, name, slots, n) for name in io.outputs})
        for name, arr in host.items():
            staging = io.host[name]
            if slots is None or b.inputs[name].batch_axis is None:
                if arr is not staging:
                    np.copyto(staging, arr, casting="no")
            else:
                spec = b.inputs[name]
                put_rows(staging, slots, spec.batch_axis, spec.fold, arr)
        for fa in foreign.values():
            # The producer asked consumers to order after its stream (CUDA Array Interface v3).
            if fa.stream is not None and fa.stream != stream.handle:
                self._event.record(fa.stream)
                stream.wait_event(self._event)
        scatter = slots is not None
        if scatter:
            for name, fa in foreign.items():
                spec = b.inputs[name]
                dst = io.tensors[name]
                if spec.batch_axis is None:
                    cuda.memcpy_async(dst.ptr, fa.ptr, io.nbytes[name], "d2d", stream)
                    continue
                # On a folded axis the rows are the middle of (outer, rows, inner): same copies, more strips.
                dst_shape, axis = stream_shape(tuple(dst.shape), spec.batch_axis, spec.fold)
                src_shape, _ = stream_shape(fa.shape, spec.batch_axis, spec.fold)
                copies = RowCopies()
                copies.add(dst.ptr, RowLayout(axis, dst_shape, fa.dtype.itemsize), slots, fa.ptr,
                           RowLayout(axis, src_shape, fa.dtype.itemsize), np.arange(n))
                copies.flush(cuda, self._copier, stream)

        graph = io.graphs.get((parity, fused)) if self._graphs_ok else None
        if graph is None and self._graphs_ok and io.warm:
            graph = self._capture(io, parity, fused)
        if graph is not None:
            if not scatter:
                for name, fa in foreign.items():
                    cuda.memcpy_async(io.tensors[name].ptr, fa.ptr, io.nbytes[name], "d2d", stream)
            graph.launch(stream)
        else:
            self._enqueue(io, parity, {} if scatter else foreign, fused)
            io.warm = True
        if scatter and self._mode == "device":
            gathered = self._gather_device(io, slots, n)
        else:
            gathered = None

        # A slots step leaves the same plan for swap feedback (its graphs are the full step's); with copy
        # feedback a full step's graphs carry the feedback copy, which a slots step must not run.
        if graph is not None and (slots is None or self._swap) and not foreign and \
                all(type(v) is np.ndarray for v in frame.values()):
            # A layout that _fast_step accepts. The staging buffers now hold this frame and, if
            # auto-filled, a continuation of ones unless slots were reset before this step.
            cont = b.cont
            auto_cont = cont is not None and cont.spec.name not in frame
            # A slots step wrote its rows only: other rows may hold the zeros of an earlier start.
            wrote_zeros = slots is not None or (starts is not None and bool(starts.any()))
            refill = io.host[cont.spec.name] if auto_cont and wrote_zeros else None
            self._set_plan(io, list(frame), list(frame) == [b.single_input], refill, fused)
        mode = self._mode
        names = b.output_names
        outputs_axes = b.output_axes
        folds = b.output_folds
        handle_stream = stream.handle

        def finish() -> dict[str, Any]:
            if mode == "device":
                if gathered is not None:
                    return gathered
                return {name: cuda.DeviceArray(io.tensors[name].ptr, io.tensors[name].dtype, io.tensors[name].shape,
                                               handle_stream) for name in names}
            result = {}
            for name in names:
                src = io.host[name]
                dst = out.get(name) if out else None
                axis = outputs_axes[name]
                if slots is not None and axis is not None:
                    result[name] = take_rows(src, slots, axis, folds.get(name), out=dst)
                elif dst is not None:
                    np.copyto(dst, src, casting="no")
                    result[name] = dst
                else:
                    result[name] = np.array(src) if mode == "host" else src
            return result

        handle = StepHandle(self, finish, [fa.keepalive for fa in foreign.values()] or None)
        self._pending = handle
        return handle

    def _gathered_shape(self, name: str, shape: tuple, n: int) -> tuple:
        """The shape of output ``name`` (full batch ``shape``) with ``n`` rows on its batch axis (folded or not)."""
        axis = self._b.output_axes[name]
        fold = self._b.output_folds.get(name)
        return shape[:axis] + (fold_entries(fold, n),) + shape[axis + 1:]

    def _gathered_like(self, io: IOSet, name: str, slots: Optional[np.ndarray], n: int) -> np.ndarray:
        t = io.tensors[name]
        shape = tuple(t.shape)
        if slots is not None and self._b.output_axes[name] is not None:
            shape = self._gathered_shape(name, shape, n)
        return np.empty(shape, dtype=t.dtype)

    def _gather_device(self, io: IOSet, slots: np.ndarray, n: int) -> dict[str, Any]:
        """Device outputs of some slots: their rows copied (2-D copies per run) into per-IOSet buffers."""
        cuda, stream = self._cuda, self._stream
        result = {}
        for name in self._b.output_names:
            t = io.tensors[name]
            axis = self._b.output_axes[name]
            dtype = np.dtype(t.dtype)
            if axis is None:
                result[name] = cuda.DeviceArray(t.ptr, dtype, t.shape, stream.handle)
                continue
            full, row_axis = stream_shape(tuple(t.shape), axis, self._b.output_folds.get(name))
            rows = full[:row_axis] + (n,) + full[row_axis + 1:]
            shape = self._gathered_shape(name, tuple(t.shape), n)
            buf = io.gathered.get((name, n))
            if buf is None:
                buf = io.gathered[(name, n)] = cuda.DeviceBuffer(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            copies = RowCopies()
            copies.add(buf.ptr, RowLayout(row_axis, rows, dtype.itemsize), np.arange(n), t.ptr,
                       RowLayout(row_axis, full, dtype.itemsize), slots)
            copies.flush(cuda, self._copier, stream)
            result[name] = cuda.DeviceArray(buf.ptr, dtype, shape, stream.handle)
        return result

    def _set_plan(self, io: IOSet, names: list[str], bare: bool, refill: Optional[np.ndarray], fused: bool) -> None:
        launch = tuple(self._cuda.raw_launcher(io.graphs[(j, fused)], self._stream) if (j, fused) in io.graphs
                       else None for j in (0, 1))
        b = self._b
        self._plan = FastPlan(io, names, bare, launch, self._mode, b.output_names, self._stream.handle, refill,
                              self._cuda.DeviceArray.wrap, {n: b.inputs[n].batch_axis for n in names}, b.output_axes)
        self.fast = self._fast_step
        self.fast_rows = self._fast_rows if self._swap and self._mode != "device" and not b.folded else None

    def _enqueue(self, io: IOSet, parity: int, foreign: Mapping[str, Any], fused: bool) -> None:
        from rnnrt.engines.base import DeviceTensor

        cuda, stream = self._cuda, self._stream
        cuda.memcpy_async(*io.h2d, "h2d", stream)  # every staged input (nothing if none)
        feeds = dict(self._state_feeds[parity])
        for name in self._b.input_names:
            fa = foreign.get(name)
            feeds[name] = DeviceTensor(fa.ptr, fa.dtype, fa.shape) if fa is not None else io.tensors[name]
        dests = dict(self._state_dests[parity])
        for name in io.outputs:
            dests[name] = io.tensors[name]
        self._engine.enqueue(self._ctx, feeds, dests, stream.handle)
        if fused:
            self._arenas[parity].copy_from(self._arenas[1 - parity])
        cuda.memcpy_async(*io.d2h, "d2h", stream)  # every output (nothing with outputs="device")

    def _capture(self, io: IOSet, parity: int, fused: bool) -> Any:
        from rnnrt.errors import RnnrtError

        if not getattr(self._engine, "capturable", True):
            G_LOGGER.info(f"Session | Engine {self._engine.name!r} cannot be captured into a CUDA graph; "
                          "running plain enqueues.")
            self._graphs_ok = False
            return None
        try:
            with self._cuda.capture(self._stream) as box:
                self._enqueue(io, parity, {}, fused)
        except (RnnrtError, RuntimeError) as err:
            G_LOGGER.info(f"Session | CUDA graph capture failed for engine {self._engine.name!r} "
                          f"({str(err).splitlines()[0]}); running plain enqueues.")
            self._graphs_ok = False
            return None
        io.graphs[(parity, fused)] = box[0]
        return box[0]

    def _make_io(self, key: tuple) -> IOSet:
        shapes = {name: shape for name, shape, _ in key}
        for name, view in self._state_feeds[0].items():
            shapes[name] = tuple(view.shape)
        out_shapes = self._engine.output_shapes(self._ctx, shapes)
        for out, want in self._state_shapes.items():
            if tuple(out_shapes[out]) != tuple(want):
                raise EngineError(
                    fmt(f"State output {out!r}", f"The engine makes shape {tuple(out_shapes[out])}",
                        f"Expected the state shape {tuple(want)}.")
                )
        outs = {o.name: o for o in self._engine.output_bindings()}
        inputs = [(name, shape, self._b.inputs[name].dtype, on_host) for name, shape, on_host in key]
        outputs = [(name, tuple(out_shapes[name]), np.dtype(outs[name].dtype)) for name in self._b.output_names]
        io = IOSet(self._cuda, inputs, outputs, self._mode != "device")
        self._io_sets[key] = io
        return io

    def input_buffers(self, shapes: Optional[Mapping[str, tuple]]) -> dict[str, np.ndarray]:
        b = self._b
        key = []
        for name, spec in b.inputs.items():
            shape = tuple(shapes[name]) if shapes and name in shapes else spec.full_shape(b.batch_size, {})
            if shape is None:
                raise BindingError(fmt(f"Input {name!r}", f"Has dynamic dims {spec.display(b.batch_size)}",
                                       "Pass its full shape in shapes={name: shape}."))
            key.append((name, shape, True))
        key_t = tuple(key)
        io = self._io_sets.get(key_t)
        if io is None:
            io = self._make_io(key_t)
        return {name: io.host[name] for name in b.input_names}
