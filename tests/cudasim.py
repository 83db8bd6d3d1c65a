"""A host simulation of :mod:`rnnrt.cuda` that keeps time, for running the device executor's code in CI.

"Device" and pinned buffers are host memory, but the simulation behaves like the GPU where a missing
synchronisation would matter:

- Work enqueued on a stream (copies, memsets, engine enqueues, graph launches) runs only when the stream
  is synchronised, an event recorded after it is synchronised or queried, a stream waiting on such an
  event is synchronised, or a buffer is freed (``cudaFree`` synchronises the device). A step that reads
  results without waiting reads stale memory.
- Fresh device and pinned memory is filled with ``0xFF`` bytes: NaN as float16, float32 and float64, so
  a read of memory nobody wrote fails any comparison.
- Every copy and memset is checked against the live allocations when it is enqueued (it must lie inside
  one, guard zones around every allocation catch pointers just past one) and again when it runs (the
  allocation must still be live). The memory spaces must match the copy kind (``h2d``: device <- host,
  ``d2h``: host <- device, ``d2d``: device <- device). A violation raises :class:`rnnrt.errors.CudaError`
  instead of corrupting the test process.

Use :func:`install` (a pytest ``monkeypatch``) to put it in place of ``rnnrt.cuda``.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import sys
import types
from collections import deque
from typing import Any, Callable, Optional

import numpy as np

from rnnrt import cuda as real_cuda
from rnnrt.errors import CudaError, fmt

FILL = 0xFF  # fresh memory: every byte 0xFF reads as NaN in float16/32/64
GUARD = 4096  # bytes on either side of every allocation that no access may touch


class Allocation:
    """One simulated ``cudaMalloc``/``cudaHostAlloc``: host memory with guard zones, filled with ``FILL``."""

    def __init__(self, nbytes: int, space: str) -> None:
        self.nbytes, self.space = int(nbytes), space
        self.mem = np.full(self.nbytes + 2 * GUARD, FILL, dtype=np.uint8)
        self.ptr = self.mem.ctypes.data + GUARD
        self.live = True

    @property
    def end(self) -> int:
        return self.ptr + self.nbytes

    def __repr__(self) -> str:
        return f"{self.space} allocation {self.ptr:#x}..+{self.nbytes}"


class Sim:
    """State of one simulated CUDA layer: allocations, streams, the capture in progress, counters."""

    def __init__(self) -> None:
        self.capturing: Optional[tuple[Any, list]] = None  # (stream, captured operations)
        self.launches = 0
        self.copies = 0
        self.memsets = 0
        self.live = {"device": 0, "pinned": 0, "stream": 0, "event": 0, "graph": 0}
        self._starts: list[int] = []  # sorted guard-zone starts of live allocations
        self._allocs: dict[int, Allocation] = {}
        self.streams: dict[int, Any] = {}

    # Memory.
    def allocate(self, nbytes: int, space: str) -> Allocation:
        alloc = Allocation(nbytes, space)
        start = alloc.ptr - GUARD
        bisect.insort(self._starts, start)
        self._allocs[start] = alloc
        return alloc

    def release(self, alloc: Allocation) -> None:
        self.synchronize()  # cudaFree / cudaFreeHost wait for the device
        start = alloc.ptr - GUARD
        self._starts.remove(start)
        del self._allocs[start]
        alloc.live = False

    def find(self, ptr: int) -> Optional[Allocation]:
        """The live allocation whose guarded range holds ``ptr``, or None (pageable host memory)."""
        i = bisect.bisect_right(self._starts, ptr) - 1
        if i < 0:
            return None
        alloc = self._allocs[self._starts[i]]
        return alloc if ptr < alloc.end + GUARD else None

    def space(self, ptr: int) -> str:
        alloc = self.find(ptr)
        return alloc.space if alloc is not None else "host"

    def check(self, what: str, role: str, ptr: int, extent: int, space: Optional[str]) -> Optional[Allocation]:
        """Checks that bytes ``[ptr, ptr + extent)`` lie inside one allocation of ``space`` ("device", or
        None for any host memory: pinned or pageable); returns the allocation (None for pageable memory)."""
        alloc = self.find(ptr)
        if alloc is None:
            if space == "device":
                raise CudaError(fmt(f"CUDA {what}", f"The {role} {ptr:#x} is not device memory",
                                    "Copy kinds must match the pointers' memory spaces."), "cudaErrorInvalidValue")
            return None
        if ptr < alloc.ptr or ptr + extent > alloc.end:
            raise CudaError(fmt(f"CUDA {what}", f"The {role} range {ptr:#x}..+{extent} leaves the {alloc} "
                                f"(by {max(alloc.ptr - ptr, ptr + extent - alloc.end)} bytes)"),
                            "cudaErrorInvalidValue")
        if space == "device" and alloc.space != "device":
            raise CudaError(fmt(f"CUDA {what}", f"The {role} {ptr:#x} is {alloc.space} host memory, not device memory",
                                "Copy kinds must match the pointers' memory spaces."), "cudaErrorInvalidValue")
        if space is None and alloc.space == "device":
            raise CudaError(fmt(f"CUDA {what}", f"The {role} {ptr:#x} is device memory, not host memory",
                                "Copy kinds must match the pointers' memory spaces."), "cudaErrorInvalidValue")
        return alloc

    # Streams.
    def stream(self, stream: Any) -> Any:
        """The simulated stream for a Stream object, a handle, or None/0 (the legacy default stream)."""
        if stream is None or isinstance(stream, int):
            handle = int(stream or 0)
            found = self.streams.get(handle)
            if found is None:
                if handle:
                    raise CudaError(fmt("CUDA stream", f"Handle {handle} is not a live stream"),
                                    "cudaErrorInvalidResourceHandle")
                found = self.streams[0] = _Queue(self, 0)
            return found
        return stream.queue

    def enqueue(self, stream: Any, op: Callable[[], None]) -> None:
        queue = self.stream(stream)
        if self.capturing is not None and self.capturing[0] is queue:
            self.capturing[1].append(op)
        else:
            queue.push(op)

    def synchronize(self) -> None:
        """``cudaDeviceSynchronize``: runs everything enqueued on every stream."""
        for queue in list(self.streams.values()):
            queue.drain()


class _Queue:
    """A stream's pending work, run in order when something waits for it."""

    def __init__(self, sim: Sim, handle: int) -> None:
        self.sim, self.handle = sim, handle
        self.pending: deque = deque()
        self.enqueued = 0  # operations ever enqueued
        self.done = 0  # operations run

    def push(self, op: Callable[[], None]) -> None:
        self.pending.append(op)
        self.enqueued += 1

    def drain(self, upto: Optional[int] = None) -> None:
        """Runs the pending operations (those enqueued before the ``upto``-th, if given)."""
        target = self.enqueued if upto is None else upto
        while self.done < target and self.pending:
            op = self.pending.popleft()
            self.done += 1
            try:
                op()
            except BaseException:
                self.done += len(self.pending)  # a failed stream drops its work (an error is sticky on a GPU)
                self.pending.clear()
                raise


def _make_module(sim: Sim) -> types.ModuleType:
    mod = types.ModuleType("rnnrt.cuda")
    mod.__doc__ = __doc__
    live = sim.live

    class _Buffer:
        space = "device"

        def __init__(self, nbytes: int) -> None:
            self.nbytes = int(nbytes)
            self._alloc: Optional[Allocation] = None
            self._freed = False
            self.ptr = 0
            if self.nbytes:
                self._alloc = sim.allocate(self.nbytes, self.space)
                self.ptr = self._alloc.ptr
            live[self.space] += 1

        def view(self, dtype: Any, shape: tuple, offset: int = 0) -> np.ndarray:
            if self._alloc is None:
                return np.zeros(shape, dtype=dtype)
            return np.ndarray(shape, dtype=dtype, buffer=self._alloc.mem, offset=GUARD + offset)

        def free(self) -> None:
            if self._freed:
                return
            self._freed = True
            if self._alloc is not None:
                sim.release(self._alloc)
                self._alloc = None
            self.ptr = 0
            live[self.space] -= 1

        def __repr__(self) -> str:
            return f"{type(self).__name__}(ptr={self.ptr or 0:#x}, nbytes={self.nbytes})"

    class DeviceBuffer(_Buffer):
        space = "device"

    class PinnedBuffer(_Buffer):
        space = "pinned"

    class Stream:
        _next = [100]

        def __init__(self) -> None:
            self.handle = Stream._next[0] = Stream._next[0] + 1
            self.queue = sim.streams[self.handle] = _Queue(sim, self.handle)
            live["stream"] += 1

        def synchronize(self) -> None:
            self.queue.drain()

        def query(self) -> bool:
            """False while work is pending (which then completes: time passes between two queries)."""
            if self.queue.pending:
                self.queue.drain()
                return False
            return True

        def wait_event(self, event: "Event") -> None:
            mark = event.mark
            if mark is not None:
                sim.enqueue(self, lambda: mark[0].drain(mark[1]))

        def destroy(self) -> None:
            if self.handle:
                self.queue.drain()
                del sim.streams[self.handle]
                self.handle = 0
                live["stream"] -= 1

    class Event:
        def __init__(self) -> None:
            self.handle = 1
            self.mark: Optional[tuple[_Queue, int]] = None  # (stream, its work count when recorded)
            live["event"] += 1

        def record(self, stream: Any) -> None:
            queue = sim.stream(stream)
            self.mark = (queue, queue.enqueued)

        def synchronize(self) -> None:
            if self.mark is not None:
                self.mark[0].drain(self.mark[1])

        def query(self) -> bool:
            if self.mark is not None and self.mark[0].done < self.mark[1]:
                self.synchronize()
                return False
            return True

        def destroy(self) -> None:
            if self.handle:
                self.handle = 0
                live["event"] -= 1

    _SPACES = {"h2d": ("device", None), "d2h": (None, "device"), "d2d": ("device", "device")}

    def _copy_op(what: str, kind: Optional[str], dst: int, src: int, width: int, height: int = 1, dpitch: int = 0,
                 spitch: int = 0) -> Callable[[], None]:
        if kind is not None and kind not in _SPACES:
            raise CudaError(fmt(f"CUDA {what}", f"Unknown copy kind {kind!r}"), "cudaErrorInvalidMemcpyDirection")
        dspace, sspace = _SPACES[kind] if kind is not None else ("device", "device")
        allocs = [a for a in (sim.check(what, "destination", dst, (height - 1) * dpitch + width, dspace),
                              sim.check(what, "source", src, (height - 1) * spitch + width, sspace)) if a is not None]

        def op() -> None:
            for a in allocs:
                if not a.live:
                    raise CudaError(fmt(f"CUDA {what}", f"Ran after its {a} was freed"), "cudaErrorIllegalAddress")
            sim.copies += 1
            for r in range(height):
                ctypes.memmove(dst + r * dpitch, src + r * spitch, width)

        return op

    def _set_op(what: str, ptr: int, value: int, width: int, height: int = 1, pitch: int = 0) -> Callable[[], None]:
        alloc = sim.check(what, "destination", ptr, (height - 1) * pitch + width, "device")

        def op() -> None:
            if not alloc.live:
                raise CudaError(fmt(f"CUDA {what}", f"Ran after its {alloc} was freed"), "cudaErrorIllegalAddress")
            sim.memsets += 1
            for r in range(height):
                ctypes.memset(ptr + r * pitch, value, width)

        return op

    def _kind(what: str, kind: Any) -> None:
        if kind not in _SPACES:  # rnnrt.cuda maps the kind through a table: anything else is a KeyError there
            raise CudaError(fmt(f"CUDA {what}", f"Unknown copy kind {kind!r}"), "cudaErrorInvalidMemcpyDirection")

    def memcpy_async(dst: int, src: int, nbytes: int, kind: str, stream: Any) -> None:
        _kind("cudaMemcpyAsync", kind)
        if nbytes:
            sim.enqueue(stream, _copy_op(f"cudaMemcpyAsync({kind}, {nbytes} bytes)", kind, dst, src, nbytes))

    def memcpy2d_async(dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: str,
                       stream: Any) -> None:
        _kind("cudaMemcpy2DAsync", kind)
        if width and height:
            sim.enqueue(stream, _copy_op(f"cudaMemcpy2DAsync({kind}, {height} x {width} bytes)", kind, dst, src,
                                         width, height, dpitch, spitch))

    def memset_async(ptr: int, value: int, nbytes: int, stream: Any) -> None:
        if nbytes:
            sim.enqueue(stream, _set_op("cudaMemsetAsync", ptr, value, nbytes))

    def memset2d_async(ptr: int, pitch: int, value: int, width: int, height: int, stream: Any) -> None:
        if width and height:
            sim.enqueue(stream, _set_op("cudaMemset2DAsync", ptr, value, width, height, pitch))

    def _batch_op(dsts: list, srcs: list, sizes: list) -> Callable[[], None]:
        ops = [_copy_op("rnnrt_batch_copy", None, int(d), int(s), int(n)) for d, s, n in zip(dsts, srcs, sizes) if n]

        def op() -> None:
            for one in ops:
                one()

        return op

    def memcpy_batch_async(dsts: list, srcs: list, sizes: list, stream: Any) -> None:
        if len(sizes):
            sim.enqueue(stream, _batch_op(dsts, srcs, sizes))

    class BatchCopier:
        """The many-row device copies of ``rnnrt.cuda.BatchCopier``: each checked, all run as one operation."""

        path = "sim"

        def __init__(self, mode: Optional[str] = None) -> None:
            self.mode = mode

        def copy(self, dsts: np.ndarray, srcs: np.ndarray, sizes: np.ndarray, stream: Any) -> None:
            memcpy_batch_async(dsts.tolist(), srcs.tolist(), sizes.tolist(), stream)

        def prepare(self, dsts: np.ndarray, srcs: np.ndarray, sizes: np.ndarray) -> Any:
            op = _batch_op(np.asarray(dsts).tolist(), np.asarray(srcs).tolist(), np.asarray(sizes).tolist())
            table = DeviceBuffer(24 * max(len(sizes), 1))  # like rnnrt.cuda: the copy table lives on the device

            class Prepared:
                def launch(self, stream: Any) -> None:
                    if not table.ptr:
                        raise CudaError(fmt("rnnrt_batch_copy", "Launched after its copy table was freed"),
                                        "cudaErrorIllegalAddress")
                    sim.enqueue(stream, op)

                def free(self) -> None:
                    table.free()

            return Prepared()

        def free(self) -> None:
            pass

    class GraphExec:
        def __init__(self, ops: list) -> None:
            self.ops = ops
            live["graph"] += 1

        def launch(self, stream: Any) -> None:
            sim.launches += 1
            ops = self.ops

            def replay() -> None:
                for op in ops:
                    op()

            sim.enqueue(stream, replay)

        def destroy(self) -> None:
            if self.ops is not None:
                self.ops = None
                live["graph"] -= 1

    @contextlib.contextmanager
    def capture(stream: Any):
        sim.capturing = (sim.stream(stream), [])
        box: list = []
        try:
            yield box
        finally:
            ops, sim.capturing = sim.capturing[1], None
        box.append(GraphExec(ops))

    def run(fn: Callable[[], None], stream: Any) -> None:
        """Enqueues ``fn`` (an engine's work) on ``stream``."""
        sim.enqueue(stream, fn)

    def raw_launcher(graph: GraphExec, stream: Stream) -> Callable[[], tuple]:
        def launch() -> tuple:
            graph.launch(stream)
            return (0,)

        return launch

    def raw_synchronizer(stream: Stream) -> Callable[[], tuple]:
        def sync() -> tuple:
            stream.synchronize()
            return (0,)

        return sync

    class DeviceArray(real_cuda.DeviceArray):
        def get(self) -> np.ndarray:
            """A host copy once the array's stream has finished (synchronous)."""
            sim.stream(self.stream).drain()
            out = np.empty(self.shape, dtype=self.dtype)
            if out.nbytes:
                _copy_op("cudaMemcpy(d2h)", "d2h", out.ctypes.data, self.ptr, out.nbytes)()
            return out

    mod.DeviceBuffer, mod.PinnedBuffer, mod.Stream, mod.Event = DeviceBuffer, PinnedBuffer, Stream, Event
    mod.memcpy_async, mod.memcpy2d_async, mod.memset_async, mod.memset2d_async = (
        memcpy_async, memcpy2d_async, memset_async, memset2d_async)
    mod.memcpy_batch_async, mod.BatchCopier, mod.GraphExec, mod.capture = (
        memcpy_batch_async, BatchCopier, GraphExec, capture)
    mod.run, mod.raw_launcher, mod.raw_synchronizer = run, raw_launcher, raw_synchronizer
    mod.raise_status = real_cuda.raise_status
    mod.DeviceArray, mod.ForeignArray = DeviceArray, real_cuda.ForeignArray
    mod.is_device_array = real_cuda.is_device_array
    mod.foreign_array = real_cuda.foreign_array
    mod.current_device = lambda: 0
    mod.live_allocations = lambda: dict(live)
    mod.available = lambda: True
    mod.synchronize = sim.synchronize
    mod.sim = sim
    return mod


def make_module(sim: Optional[Sim] = None) -> types.ModuleType:
    """A module with ``rnnrt.cuda``'s API over ``sim`` (a new :class:`Sim` if None); ``module.sim`` is it."""
    return _make_module(sim if sim is not None else Sim())


def install(monkeypatch: Any, sim: Optional[Sim] = None) -> types.ModuleType:
    """Puts a simulated ``rnnrt.cuda`` in place for one test; returns the module (``module.sim``: its state)."""
    import rnnrt

    mod = make_module(sim)
    monkeypatch.setitem(sys.modules, "rnnrt.cuda", mod)
    monkeypatch.setattr(rnnrt, "cuda", mod, raising=False)
    # foreign_array asks the driver which device owns a pointer: simulated device memory is device 0.
    monkeypatch.setattr(real_cuda, "_pointer_device", lambda ptr: 0 if mod.sim.space(ptr) == "device" else None)
    return mod


def device_array(mod: types.ModuleType, arr: np.ndarray) -> Any:
    """A simulated device array holding a copy of ``arr`` (written at once, like a finished producer)."""
    buf = mod.DeviceBuffer(arr.nbytes)
    buf.view(arr.dtype, arr.shape)[...] = arr
    da = mod.DeviceArray(buf.ptr, arr.dtype, arr.shape)
    da._buf = buf
    return da
