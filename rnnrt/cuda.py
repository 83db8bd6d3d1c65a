"""A thin layer over the CUDA runtime (``cuda.bindings.runtime`` from cuda-python).

Device and pinned host buffers, streams, events, memset/memcpy, CUDA graph capture, and a reader for
foreign device arrays (``__cuda_array_interface__`` or DLPack: CuPy, torch, pycuda ...). Every failing
call raises :class:`rnnrt.errors.CudaError` carrying the CUDA error name. cuda-python is imported
lazily: this module imports on machines without it, and :func:`available` says whether a GPU is usable.

Example::

    from rnnrt import cuda

    if cuda.available():
        stream = cuda.Stream()
        buf = cuda.DeviceBuffer(1024)
        cuda.memset_async(buf.ptr, 0, buf.nbytes, stream)
        stream.synchronize()
        buf.free(); stream.destroy()
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from typing import Any, Iterator, Optional

import numpy as np

from rnnrt.errors import BindingError, CudaError, fmt

__all__ = [
    "DeviceArray",
    "DeviceBuffer",
    "Event",
    "ForeignArray",
    "GraphExec",
    "PinnedBuffer",
    "Stream",
    "available",
    "capture",
    "current_device",
    "foreign_array",
    "is_device_array",
    "live_allocations",
    "mem_get_info",
    "memcpy2d_async",
    "memcpy_batch_async",
    "BatchCopier",
    "memcpy_async",
    "memset2d_async",
    "memset_async",
    "raise_status",
    "raw_launcher",
    "raw_synchronizer",
]

_RT: Any = None
_LIVE = {"device": 0, "pinned": 0, "stream": 0, "event": 0, "graph": 0}
_LIVE_LOCK = threading.Lock()


def _rt() -> Any:
    global _RT
    if _RT is None:
        try:
            from cuda.bindings import runtime
        except ImportError as err:
            raise CudaError(
                fmt("rnnrt.cuda", f"Cannot import cuda-python: {err}", "Install it: pip install cuda-python"),
                "ImportError",
            ) from err
        _RT = runtime
    return _RT


def _error_name(err: Any) -> str:
    try:
        status, name = _rt().cudaGetErrorName(err)
        return name.decode() if int(status) == 0 else str(err)
    except Exception:  # naming an error must never hide it
        return str(err)


def _check(result: Any, what: str) -> Any:
    """Unpacks a cuda-python ``(err, *values)`` result; raises CudaError on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = _error_name(err)
        raise CudaError(fmt(f"CUDA {what}", f"Failed with {name}"), name)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _count(kind: str, delta: int) -> None:
    with _LIVE_LOCK:
        _LIVE[kind] += delta


def live_allocations() -> dict[str, int]:
    """How many rnnrt-owned CUDA objects are alive, by kind (device, pinned, stream, event, graph)."""
    with _LIVE_LOCK:
        return dict(_LIVE)


def available() -> bool:
    """Whether cuda-python imports and a CUDA driver with at least one GPU is present (cheap probe)."""
    try:
        rt = _rt()
    except CudaError:
        return False
    err, version = rt.cudaDriverGetVersion()
    if int(err) != 0 or not version:
        return False
    err, count = rt.cudaGetDeviceCount()
    return int(err) == 0 and bool(count)


def current_device() -> int:
    """The current CUDA device ordinal."""
    return int(_check(_rt().cudaGetDevice(), "cudaGetDevice"))


def mem_get_info() -> tuple[int, int]:
    """``(free, total)`` bytes of the current device."""
    free, total = _check(_rt().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


class DeviceBuffer:
    """A ``cudaMalloc`` allocation. Free it with :meth:`free` (idempotent).

    Args:
        nbytes (int): Size in bytes (a zero-size buffer allocates nothing and has ``ptr == 0``).
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = 0
        if self.nbytes:
            self.ptr = int(_check(_rt().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))
            _count("device", 1)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            _count("device", -1)
            _check(_rt().cudaFree(ptr), "cudaFree")

    def __repr__(self) -> str:
        return f"DeviceBuffer(ptr={self.ptr:#x}, nbytes={self.nbytes})"


class PinnedBuffer:
    """A page-locked host allocation (``cudaHostAlloc``), viewable as numpy arrays.

    Args:
        nbytes (int): Size in bytes.
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = 0
        self._bytes: Optional[np.ndarray] = None
        if self.nbytes:
            self.ptr = int(_check(_rt().cudaHostAlloc(self.nbytes, 0), f"cudaHostAlloc({self.nbytes})"))
            _count("pinned", 1)
            raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
            self._bytes = np.frombuffer(raw, dtype=np.uint8)

    def view(self, dtype: Any, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
        """A numpy array over the buffer (valid until :meth:`free`)."""
        if self._bytes is None:
            return np.zeros(shape, dtype=dtype)
        return np.ndarray(shape, dtype=dtype, buffer=self._bytes, offset=offset)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._bytes = None
            _count("pinned", -1)
            _check(_rt().cudaFreeHost(ptr), "cudaFreeHost")


class Stream:
    """A non-blocking CUDA stream (it does not synchronise with the legacy default stream)."""

    def __init__(self) -> None:
        rt = _rt()
        self._obj = _check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self.handle = int(self._obj)
        _count("stream", 1)

    def synchronize(self) -> None:
        _check(_rt().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def query(self) -> bool:
        """True when all work enqueued so far has finished (never blocks)."""
        rt = _rt()
        err = rt.cudaStreamQuery(self.handle)[0]
        if int(err) == int(rt.cudaError_t.cudaErrorNotReady):
            return False
        _check((err,), "cudaStreamQuery")
        return True

    def wait_event(self, event: "Event") -> None:
        _check(_rt().cudaStreamWaitEvent(self.handle, event.handle, 0), "cudaStreamWaitEvent")

    def destroy(self) -> None:
        if self.handle:
            self.handle = 0
            _count("stream", -1)
            _check(_rt().cudaStreamDestroy(self._obj), "cudaStreamDestroy")


class Event:
    """A CUDA event without timing (cheapest to record and wait on)."""

    def __init__(self) -> None:
        rt = _rt()
        self._obj = _check(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming), "cudaEventCreateWithFlags")
        self.handle = int(self._obj)
        _count("event", 1)

    def record(self, stream: Any) -> None:
        _check(_rt().cudaEventRecord(self.handle, _handle(stream)), "cudaEventRecord")

    def synchronize(self) -> None:
        _check(_rt().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def query(self) -> bool:
        """True when the work before the last record has finished."""
        err = _rt().cudaEventQuery(self.handle)[0]
        if int(err) == int(_rt().cudaError_t.cudaErrorNotReady):
            return False
        _check((err,), "cudaEventQuery")
        return True

    def destroy(self) -> None:
        if self.handle:
            self.handle = 0
            _count("event", -1)
            _check(_rt().cudaEventDestroy(self._obj), "cudaEventDestroy")


def _handle(stream: Any) -> int:
    return stream.handle if isinstance(stream, Stream) else int(stream or 0)


_KIND = {"h2d": 1, "d2h": 2, "d2d": 3}


def memcpy_async(dst: int, src: int, nbytes: int, kind: str, stream: Any) -> None:
    """``cudaMemcpyAsync``; ``kind`` is ``"h2d"``, ``"d2h"`` or ``"d2d"``."""
    if nbytes:
        rt = _rt()
        _check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind(_KIND[kind]), _handle(stream)),
               f"cudaMemcpyAsync({kind}, {nbytes} bytes)")


def memset_async(ptr: int, value: int, nbytes: int, stream: Any) -> None:
    """``cudaMemsetAsync`` of ``nbytes`` bytes."""
    if nbytes:
        _check(_rt().cudaMemsetAsync(ptr, value, nbytes, _handle(stream)), "cudaMemsetAsync")


def memset2d_async(ptr: int, pitch: int, value: int, width: int, height: int, stream: Any) -> None:
    """``cudaMemset2DAsync``: ``height`` rows of ``width`` bytes, ``pitch`` bytes apart."""
    if width and height:
        _check(_rt().cudaMemset2DAsync(ptr, pitch, value, width, height, _handle(stream)), "cudaMemset2DAsync")


def memcpy2d_async(dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: str,
                   stream: Any) -> None:
    """``cudaMemcpy2DAsync``: ``height`` rows of ``width`` bytes, ``spitch``/``dpitch`` bytes apart."""
    if width and height:
        rt = _rt()
        if height == 1:
            _check(rt.cudaMemcpyAsync(dst, src, width, rt.cudaMemcpyKind(_KIND[kind]), _handle(stream)),
                   f"cudaMemcpyAsync({kind}, {width} bytes)")
            return
        _check(rt.cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, rt.cudaMemcpyKind(_KIND[kind]),
                                    _handle(stream)), f"cudaMemcpy2DAsync({kind}, {height} x {width} bytes)")


_BATCH_ATTRS: list = []

# One kernel launch for many small copies: each block takes copies from a (dst, src, nbytes) table.
_COPY_KERNEL = r"""
extern "C" __global__ void rnnrt_batch_copy(const long long* table, int count) {
    for (int i = blockIdx.x; i < count; i += gridDim.x) {
        char* dst = (char*)table[3 * i];
        const char* src = (const char*)table[3 * i + 1];
        long long n = table[3 * i + 2];
        if ((((unsigned long long)dst | (unsigned long long)src | (unsigned long long)n) & 15ULL) == 0) {
            int4* d = (int4*)dst;
            const int4* s = (const int4*)src;
            long long m = n >> 4;
            for (long long j = threadIdx.x; j < m; j += blockDim.x) d[j] = s[j];
        } else {
            for (long long j = threadIdx.x; j < n; j += blockDim.x) dst[j] = src[j];
        }
    }
}
"""
_KERNEL: dict = {}  # device ordinal -> CUfunction, or None when it cannot be built here


def _copy_kernel() -> Any:
    """The batch-copy kernel for the current device, compiled once with NVRTC; None if unavailable."""
    dev = current_device()
    if dev in _KERNEL:
        return _KERNEL[dev]
    func = None
    try:
        from cuda.bindings import driver, nvrtc

        rt = _rt()
        major = int(_check(rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, dev), "attr"))
        minor = int(_check(rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, dev), "attr"))
        err, prog = nvrtc.nvrtcCreateProgram(_COPY_KERNEL.encode(), b"rnnrt_batch_copy.cu", 0, [], [])
        if int(err) != 0:
            raise RuntimeError(f"nvrtcCreateProgram: {err}")
        try:
            (err,) = nvrtc.nvrtcCompileProgram(prog, 1, [f"-arch=sm_{major}{minor}".encode()])
            if int(err) != 0:
                raise RuntimeError(f"nvrtcCompileProgram: {err}")
            err, size = nvrtc.nvrtcGetCUBINSize(prog)
            cubin = b" " * size
            (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin)
            if int(err) != 0:
                raise RuntimeError(f"nvrtcGetCUBIN: {err}")
        finally:
            nvrtc.nvrtcDestroyProgram(prog)
        err, module = driver.cuModuleLoadData(cubin)
        if int(err) != 0:
            raise RuntimeError(f"cuModuleLoadData: {err}")
        err, func = driver.cuModuleGetFunction(module, b"rnnrt_batch_copy")
        if int(err) != 0:
            raise RuntimeError(f"cuModuleGetFunction: {err}")
    except Exception as err:  # noqa: BLE001 - any failure means: copy another way
        import logging

        logging.getLogger("rnnrt").info(f"rnnrt.cuda | No batch-copy kernel ({type(err).__name__}: {err}); "
                                        "using cudaMemcpyBatchAsync or single copies.")
        func = None
    _KERNEL[dev] = func
    return func


class BatchCopier:
    """Many small device copies per call through one kernel launch (NVRTC), a batch call, or a loop.

    The (dst, src, nbytes) table goes through a pinned buffer and one H2D copy, then one launch of
    ``rnnrt_batch_copy``. Where NVRTC or the driver module API is missing it falls back to
    :func:`memcpy_batch_async`. ``mode`` (or the environment variable ``RNNRT_BATCH_COPY``) forces
    ``"kernel"``, ``"batch"`` or ``"loop"``; the default ``"auto"`` takes the first that works.
    """

    def __init__(self, mode: Optional[str] = None) -> None:
        import os

        self.mode = mode or os.environ.get("RNNRT_BATCH_COPY", "auto")
        self._func: Any = None
        if self.mode in ("auto", "kernel"):
            self._func = _copy_kernel()
        self._pinned: Optional[PinnedBuffer] = None
        self._device: Optional[DeviceBuffer] = None
        self._event: Optional[Event] = None
        self.path = "kernel" if self._func is not None else ("loop" if self.mode == "loop" else "batch")

    def copy(self, dsts: np.ndarray, srcs: np.ndarray, sizes: np.ndarray, stream: Any) -> None:
        count = len(sizes)
        if not count:
            return
        if self._func is None or count == 1:
            if self.path == "loop":
                rt = _rt()
                for dst, src, n in zip(dsts.tolist(), srcs.tolist(), sizes.tolist()):
                    _check(rt.cudaMemcpyAsync(dst, src, n, rt.cudaMemcpyKind.cudaMemcpyDefault, _handle(stream)),
                           "cudaMemcpyAsync")
                return
            memcpy_batch_async(dsts.tolist(), srcs.tolist(), sizes.tolist(), stream)
            return
        need = 24 * count
        if self._pinned is None or self._pinned.nbytes < need:
            self.free()
            cap = max(need, 24 * 1024)
            self._pinned, self._device, self._event = PinnedBuffer(cap), DeviceBuffer(cap), Event()
        else:
            self._event.synchronize()  # the previous table has been uploaded
        table = self._pinned.view(np.int64, (count, 3))
        table[:, 0] = dsts
        table[:, 1] = srcs
        table[:, 2] = sizes
        handle = _handle(stream)
        memcpy_async(self._device.ptr, self._pinned.ptr, need, "h2d", handle)
        self._event.record(handle)
        from cuda.bindings import driver

        err = driver.cuLaunchKernel(self._func, min(count, 65535), 1, 1, 128, 1, 1, 0, handle,
                                    ((self._device.ptr, count), (ctypes.c_void_p, ctypes.c_int)), 0)[0]
        if int(err) != 0:
            raise CudaError(fmt("CUDA cuLaunchKernel(rnnrt_batch_copy)", f"Failed with {err}"), str(err))

    def prepare(self, dsts: np.ndarray, srcs: np.ndarray, sizes: np.ndarray) -> "PreparedCopies":
        """The same copies for replay: the table is uploaded once (now, synchronously), and each
        :meth:`PreparedCopies.launch` is one kernel launch with prebuilt arguments (no table upload, no
        wait). For copies between buffers that stay allocated (a Session's state arenas)."""
        return PreparedCopies(self, np.asarray(dsts, np.int64), np.asarray(srcs, np.int64), np.asarray(sizes, np.int64))

    def free(self) -> None:
        for buf in (self._pinned, self._device, self._event):
            if buf is not None:
                buf.free() if not isinstance(buf, Event) else buf.destroy()
        self._pinned = self._device = self._event = None


class PreparedCopies:
    """Copies of :meth:`BatchCopier.prepare`: a device-resident table and the kernel's bound arguments."""

    def __init__(self, copier: BatchCopier, dsts: np.ndarray, srcs: np.ndarray, sizes: np.ndarray) -> None:
        self.count = count = len(sizes)
        self._func = copier._func if count > 1 else None
        self._table: Optional[DeviceBuffer] = None
        self._copier = copier
        if self._func is None:
            self._arrays = (dsts, srcs, sizes)  # replayed through the copier's batch call or loop
            return
        table = np.ascontiguousarray(np.stack([dsts, srcs, sizes], axis=1))
        self._table = DeviceBuffer(table.nbytes)
        rt = _rt()
        _check(rt.cudaMemcpy(self._table.ptr, table.ctypes.data, table.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice),
               "cudaMemcpy(table)")
        # cuLaunchKernel's kernelParams as a void** address: pointers to the two argument values.
        self._ptr = ctypes.c_void_p(self._table.ptr)
        self._count = ctypes.c_int(count)
        self._params = (ctypes.c_void_p * 2)(ctypes.addressof(self._ptr), ctypes.addressof(self._count))
        self._params_addr = ctypes.addressof(self._params)
        self._grid = min(count, 65535)
        from cuda.bindings import driver

        self._launch = driver.cuLaunchKernel

    def launch(self, stream: Any) -> None:
        """Enqueues the copies on ``stream``."""
        if not self.count:
            return
        if self._func is None:
            self._copier.copy(*self._arrays, stream)
            return
        err = self._launch(self._func, self._grid, 1, 1, 128, 1, 1, 0, _handle(stream), self._params_addr, 0)[0]
        if int(err) != 0:
            raise CudaError(fmt("CUDA cuLaunchKernel(rnnrt_batch_copy)", f"Failed with {err}"), str(err))

    def free(self) -> None:
        if self._table is not None:
            self._table.free()
            self._table = None


def memcpy_batch_async(dsts: list[int], srcs: list[int], sizes: list[int], stream: Any) -> None:
    """Many independent copies in one call (``cudaMemcpyBatchAsync``, CUDA 12.8+), in stream order.

    Falls back to one ``cudaMemcpyAsync`` per copy where the runtime lacks the batch call. The copies
    must not overlap one another.
    """
    count = len(sizes)
    if not count:
        return
    rt = _rt()
    if count == 1:
        _check(rt.cudaMemcpyAsync(dsts[0], srcs[0], sizes[0], rt.cudaMemcpyKind.cudaMemcpyDefault, _handle(stream)),
               "cudaMemcpyAsync")
        return
    batch = getattr(rt, "cudaMemcpyBatchAsync", None)
    if batch is not None and _BATCH_ATTRS != [None]:
        if not _BATCH_ATTRS:
            attrs = rt.cudaMemcpyAttributes()
            attrs.srcAccessOrder = rt.cudaMemcpySrcAccessOrder.cudaMemcpySrcAccessOrderStream
            _BATCH_ATTRS.append(attrs)
        err = batch(dsts, srcs, sizes, count, _BATCH_ATTRS, [0], 1, _handle(stream))[0]
        if int(err) == 0:
            return
        if int(err) not in (int(rt.cudaError_t.cudaErrorNotSupported), int(rt.cudaError_t.cudaErrorInvalidValue)):
            _check((err,), f"cudaMemcpyBatchAsync({count} copies)")
        rt.cudaGetLastError()
        _BATCH_ATTRS[:] = [None]  # not supported here: copy one by one from now on
    kind = rt.cudaMemcpyKind.cudaMemcpyDefault
    handle = _handle(stream)
    for dst, src, n in zip(dsts, srcs, sizes):
        _check(rt.cudaMemcpyAsync(dst, src, n, kind, handle), "cudaMemcpyAsync")


def raw_launcher(graph: "GraphExec", stream: "Stream") -> Any:
    """A zero-argument callable that launches ``graph`` on ``stream`` (the Session's per-step hot path).

    It is ``cudaGraphLaunch`` with its arguments bound as cuda-python objects (no per-call conversion)
    and returns cuda-python's raw ``(err,)`` tuple: the caller checks ``err`` (0 is success) and passes
    a failure to :func:`raise_status`. Valid until the graph or the stream is destroyed.
    """
    return functools.partial(_rt().cudaGraphLaunch, graph._exec, stream._obj)


def raw_synchronizer(stream: "Stream") -> Any:
    """Like :func:`raw_launcher`, for ``cudaStreamSynchronize(stream)``."""
    return functools.partial(_rt().cudaStreamSynchronize, stream._obj)


def raise_status(err: Any, what: str) -> None:
    """Raises the CudaError for a failed raw call's status ``err`` (see :func:`raw_launcher`)."""
    _check((err,), what)


class GraphExec:
    """An instantiated CUDA graph; :meth:`launch` replays it on a stream."""

    def __init__(self, graph: Any) -> None:
        rt = _rt()
        self._graph = graph
        try:
            self._exec = _check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError:
            rt.cudaGraphDestroy(graph)
            raise
        _count("graph", 1)

    def launch(self, stream: Any) -> None:
        _check(_rt().cudaGraphLaunch(self._exec, _handle(stream)), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self._exec is not None:
            rt = _rt()
            exec_, self._exec = self._exec, None
            _count("graph", -1)
            _check(rt.cudaGraphExecDestroy(exec_), "cudaGraphExecDestroy")
            _check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")


@contextlib.contextmanager
def capture(stream: Stream) -> Iterator[list]:
    """Captures the work enqueued on ``stream`` inside the block; yields a list that holds the
    :class:`GraphExec` afterwards.

    The capture mode is thread-local, so other threads' CUDA calls are not affected. If the block
    raises, the capture is ended and discarded, and the exception propagates.
    """
    rt = _rt()
    _check(rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
           "cudaStreamBeginCapture")
    box: list = []
    try:
        yield box
    except BaseException:
        err, graph = rt.cudaStreamEndCapture(stream.handle)
        if int(err) == 0 and graph is not None:
            rt.cudaGraphDestroy(graph)
        rt.cudaGetLastError()  # a failed capture leaves a sticky-free error behind; clear it
        raise
    graph = _check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
    box.append(GraphExec(graph))


class DeviceArray:
    """A device tensor view exposing ``__cuda_array_interface__`` (what ``outputs="device"`` returns).

    It does not own its memory: the Session that returned it may overwrite it at its next step.
    ``cupy.asarray(a)`` or ``torch.as_tensor(a, device="cuda")`` wrap it without a copy.

    Args:
        ptr (int): Device address.
        dtype (np.dtype): Element type.
        shape (tuple[int, ...]): Shape (C-contiguous).
        stream (int): The stream whose work produces the data; consumers synchronise on it.
    """

    def __init__(self, ptr: int, dtype: Any, shape: tuple[int, ...], stream: int = 0) -> None:
        self.ptr = int(ptr)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.stream = int(stream)

    @classmethod
    def wrap(cls, ptr: int, dtype: np.dtype, shape: tuple, stream: int = 0) -> "DeviceArray":
        """The constructor without normalisation, for per-step use: ``ptr`` and ``stream`` must be ints,
        ``dtype`` an ``np.dtype`` and ``shape`` a tuple of ints (nothing is checked)."""
        obj = object.__new__(cls)
        obj.ptr, obj.dtype, obj.shape, obj.stream = ptr, dtype, shape, stream
        return obj

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict:
        iface = {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "strides": None,
                 "version": 3}
        if self.stream:
            iface["stream"] = self.stream
        return iface

    def get(self) -> np.ndarray:
        """A host copy (synchronous)."""
        out = np.empty(self.shape, dtype=self.dtype)
        if out.nbytes:
            rt = _rt()
            _check(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            _check(rt.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost),
                   "cudaMemcpy(d2h)")
        return out

    def __repr__(self) -> str:
        return f"DeviceArray(ptr={self.ptr:#x}, dtype={self.dtype.name}, shape={self.shape})"


class ForeignArray:
    """A device array handed in by the caller, read through its array protocol.

    Attributes:
        ptr (int): Device address of element 0.
        dtype (np.dtype): Element type.
        shape (tuple[int, ...]): Shape.
        contiguous (bool): Whether the strides are C-contiguous.
        device (int | None): Device ordinal, None if the memory is not device memory.
        stream (int | None): Stream the producer asks consumers to synchronise on.
        keepalive (Any): What must stay referenced while the memory is in use (the DLPack capsule).
    """

    __slots__ = ("ptr", "dtype", "shape", "contiguous", "device", "stream", "keepalive")

    def __init__(self, ptr: int, dtype: np.dtype, shape: tuple, contiguous: bool, device: Optional[int],
                 stream: Optional[int], keepalive: Any = None) -> None:
        self.ptr, self.dtype, self.shape, self.contiguous = ptr, dtype, shape, contiguous
        self.device, self.stream, self.keepalive = device, stream, keepalive


def is_device_array(obj: Any) -> bool:
    """Whether ``obj`` is a (non-numpy) array that exposes a device array protocol."""
    if isinstance(obj, np.ndarray):
        return False
    return hasattr(obj, "__cuda_array_interface__") or (
        hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__") and _dlpack_is_cuda(obj)
    )


def _dlpack_is_cuda(obj: Any) -> bool:
    try:
        kind, _ = obj.__dlpack_device__()
    except Exception:
        return False
    return int(kind) in (2, 13)  # kDLCUDA, kDLCUDAManaged


def _c_strides(shape: tuple, itemsize: int) -> tuple:
    strides, acc = [], itemsize
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(strides))


def _pointer_device(ptr: int) -> Optional[int]:
    """The device ordinal that owns ``ptr``, or None for host memory."""
    rt = _rt()
    err, attrs = rt.cudaPointerGetAttributes(ptr)
    if int(err) != 0:
        rt.cudaGetLastError()
        return None
    kind = int(attrs.type)
    if kind in (int(rt.cudaMemoryType.cudaMemoryTypeDevice), int(rt.cudaMemoryType.cudaMemoryTypeManaged)):
        return int(attrs.device)
    return None


def foreign_array(obj: Any, name: str, stream: int = 0) -> ForeignArray:
    """Reads a device array's address, dtype, shape, strides and device without copying.

    Args:
        obj (Any): An object exposing ``__cuda_array_interface__`` (CuPy, torch, pycuda, Numba) or
            ``__dlpack__`` with a CUDA device.
        name (str): The binding it is fed to (for messages).
        stream (int): The consumer's stream (passed to ``__dlpack__``). Defaults to 0.

    Returns:
        ForeignArray: The description.

    Raises:
        BindingError: The object's protocol data cannot be read or its dtype has no numpy equivalent.
    """
    iface = getattr(obj, "__cuda_array_interface__", None)
    if iface is not None:
        try:
            dtype = np.dtype(iface["typestr"])
            shape = tuple(int(d) for d in iface["shape"])
            ptr = int(iface["data"][0] or 0)
            strides = iface.get("strides")
            contiguous = strides is None or tuple(strides) == _c_strides(shape, dtype.itemsize) or int(
                np.prod(shape, dtype=np.int64)) <= 1
            prod_stream = iface.get("stream")
        except (KeyError, TypeError, ValueError) as err:
            raise BindingError(fmt(f"Input {name!r}", f"Has an unreadable __cuda_array_interface__: {err}")) from err
        device = _pointer_device(ptr) if ptr else current_device()
        return ForeignArray(ptr, dtype, shape, contiguous, device, None if prod_stream is None else int(prod_stream))
    return _from_dlpack(obj, name, stream)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


# DLPack type codes: 0 int, 1 uint, 2 float, 6 bool.
_DL_KINDS = {0: "i", 1: "u", 2: "f", 6: "b"}


def _from_dlpack(obj: Any, name: str, stream: int) -> ForeignArray:
    try:
        capsule = obj.__dlpack__(stream=stream or None)
    except Exception as err:
        raise BindingError(fmt(f"Input {name!r}", f"__dlpack__() failed: {err}")) from err
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    try:
        addr = get(capsule, b"dltensor")
    except ValueError as err:
        raise BindingError(fmt(f"Input {name!r}", f"Its DLPack capsule cannot be read: {err}")) from err
    # DLManagedTensor starts with its DLTensor; the capsule keeps it alive (we never rename it, so the
    # capsule's destructor calls the producer's deleter).
    t = _DLTensor.from_address(addr)
    kind = _DL_KINDS.get(t.dtype.code)
    if kind is None or t.dtype.lanes != 1:
        raise BindingError(fmt(f"Input {name!r}", f"Has DLPack dtype code {t.dtype.code} (lanes {t.dtype.lanes})",
                               "Use a float, int, uint or bool array."))
    dtype = np.dtype(f"{kind}{t.dtype.bits // 8}") if kind != "b" else np.dtype(np.bool_)
    shape = tuple(int(t.shape[i]) for i in range(t.ndim))
    if t.strides:
        strides = tuple(int(t.strides[i]) * dtype.itemsize for i in range(t.ndim))
        contiguous = strides == _c_strides(shape, dtype.itemsize) or int(np.prod(shape, dtype=np.int64)) <= 1
    else:
        contiguous = True
    device = int(t.device.device_id) if t.device.device_type in (2, 13) else None
    ptr = int(t.data or 0) + int(t.byte_offset)
    return ForeignArray(ptr, dtype, shape, contiguous, device, None, keepalive=capsule)
