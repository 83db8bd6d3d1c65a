"""rnnrt.cuda: error naming, array protocols (CPU), and buffers, copies, memsets, graphs (GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnrt import cuda
from rnnrt.errors import BindingError, CudaError

needs_gpu = pytest.mark.skipif(not cuda.available(), reason="no CUDA GPU (cudaDriverGetVersion() == 0)")


def test_errors_carry_the_cuda_name():
    from cuda.bindings import runtime as rt

    with pytest.raises(CudaError, match=r"CUDA cudaMalloc\(8\) \| Failed with cudaErrorMemoryAllocation") as info:
        cuda._check((rt.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc(8)")
    assert info.value.error_name == "cudaErrorMemoryAllocation"
    assert cuda._check((rt.cudaError_t.cudaSuccess, 5), "x") == 5


@pytest.mark.skipif(cuda.available(), reason="checks the no-GPU path")
def test_no_gpu_is_reported():
    assert not cuda.available()
    with pytest.raises(CudaError, match="Failed with cudaErrorInsufficientDriver"):
        cuda.DeviceBuffer(16)
    assert cuda.live_allocations()["device"] == 0


class _Iface:
    def __init__(self, **iface):
        self.__cuda_array_interface__ = iface


def test_cuda_array_interface_parsing(monkeypatch):
    monkeypatch.setattr(cuda, "_pointer_device", lambda ptr: 0)
    a = cuda.foreign_array(_Iface(shape=(2, 3), typestr="<f4", data=(0x1000, False), version=3, strides=None,
                                  stream=1), "x")
    assert (a.ptr, a.dtype, a.shape, a.contiguous, a.device, a.stream) == (0x1000, np.float32, (2, 3), True, 0, 1)
    b = cuda.foreign_array(_Iface(shape=(2, 3), typestr="<f4", data=(0x1000, False), version=3, strides=(4, 8)), "x")
    assert not b.contiguous
    c = cuda.foreign_array(_Iface(shape=(2, 3), typestr="<f4", data=(0x1000, False), version=3, strides=(12, 4)), "x")
    assert c.contiguous
    with pytest.raises(BindingError, match=r"Input 'x' \| Has an unreadable __cuda_array_interface__"):
        cuda.foreign_array(_Iface(shape=(2,), data=(1, False)), "x")
    assert not cuda.is_device_array(np.zeros(3))
    assert cuda.is_device_array(_Iface(shape=(1,), typestr="<f4", data=(1, False)))


def test_dlpack_parsing_reads_the_struct():
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = cuda._from_dlpack(t, "x", 0)
    assert (a.ptr, a.dtype, a.shape, a.contiguous, a.device) == (t.data_ptr(), np.float32, (3, 4), True, None)
    a = cuda._from_dlpack(t.t(), "x", 0)
    assert a.shape == (4, 3) and not a.contiguous
    base = torch.zeros(5, dtype=torch.int64)
    a = cuda._from_dlpack(base[1:], "x", 0)
    assert (a.dtype, a.shape, a.ptr) == (np.int64, (4,), base.data_ptr() + 8)
    assert not cuda.is_device_array(t)  # a CPU tensor is not a device array


def test_device_array_interface():
    d = cuda.DeviceArray(0x2000, np.float16, (4, 2), stream=9)
    iface = d.__cuda_array_interface__
    assert iface == {"shape": (4, 2), "typestr": "<f2", "data": (0x2000, False), "strides": None, "version": 3,
                     "stream": 9}
    assert d.nbytes == 16


# ---------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_gpu
def test_buffers_copies_memsets_and_graphs():
    live0 = cuda.live_allocations()
    stream = cuda.Stream()
    dev = cuda.DeviceBuffer(4 * 64)
    pin = cuda.PinnedBuffer(4 * 64)
    ev = cuda.Event()
    try:
        host = pin.view(np.float32, (8, 8))
        host[...] = np.arange(64, dtype=np.float32).reshape(8, 8)
        cuda.memcpy_async(dev.ptr, pin.ptr, 256, "h2d", stream)
        cuda.memset2d_async(dev.ptr + 4 * 2, 32, 0, 8, 8, stream)  # zero columns 2 and 3 of every row
        host[...] = -1
        cuda.memcpy_async(pin.ptr, dev.ptr, 256, "d2h", stream)
        ev.record(stream)
        ev.synchronize()
        assert ev.query()
        want = np.arange(64, dtype=np.float32).reshape(8, 8)
        want[:, 2:4] = 0
        np.testing.assert_array_equal(host, want)

        # A captured graph replays the copy every launch (and does nothing at capture time).
        other = cuda.DeviceBuffer(256)
        with cuda.capture(stream) as box:
            cuda.memcpy_async(other.ptr, dev.ptr, 256, "d2d", stream)
            cuda.memset_async(dev.ptr, 0, 256, stream)
        graph = box[0]
        graph.launch(stream)
        cuda.memcpy_async(pin.ptr, other.ptr, 256, "d2h", stream)
        stream.synchronize()
        np.testing.assert_array_equal(host, want)
        cuda.memcpy_async(pin.ptr, dev.ptr, 256, "d2h", stream)
        stream.synchronize()
        assert not host.any()
        graph.destroy()
        other.free()

        # A failed capture is discarded and the stream stays usable.
        with pytest.raises(ValueError):
            with cuda.capture(stream):
                raise ValueError("boom")
        cuda.memset_async(dev.ptr, 0, 256, stream)
        stream.synchronize()

        torch = pytest.importorskip("torch")
        t = torch.arange(6, dtype=torch.float32, device="cuda").reshape(2, 3)
        a = cuda.foreign_array(t, "x")
        assert (a.ptr, a.shape, a.device, a.contiguous) == (t.data_ptr(), (2, 3), cuda.current_device(), True)

        class _OnlyDlpack:
            def __init__(self, t):
                self.t = t

            def __dlpack__(self, stream=None):
                return self.t.__dlpack__(stream=stream)

            def __dlpack_device__(self):
                return self.t.__dlpack_device__()

        assert cuda.is_device_array(_OnlyDlpack(t))
        a = cuda.foreign_array(_OnlyDlpack(t), "x", stream.handle)
        assert (a.ptr, a.shape, a.device, a.dtype) == (t.data_ptr(), (2, 3), cuda.current_device(), np.float32)
        x = np.zeros(3, np.float32)
        assert cuda._pointer_device(x.ctypes.data) is None
        np.testing.assert_array_equal(cuda.DeviceArray(t.data_ptr(), np.float32, (2, 3)).get(), t.cpu().numpy())
    finally:
        for obj in (dev, pin):
            obj.free()
        ev.destroy()
        stream.destroy()
    assert cuda.live_allocations() == live0


@pytest.mark.gpu
@needs_gpu
def test_cupy_arrays_are_device_arrays():
    cp = pytest.importorskip("cupy")
    x = cp.arange(10, dtype=cp.float32)
    a = cuda.foreign_array(x, "x")
    assert (a.ptr, a.shape, a.dtype, a.contiguous) == (x.data.ptr, (10,), np.float32, True)
    assert not cuda.foreign_array(x[::2], "x").contiguous


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("mode", ["kernel", "batch", "loop"])
def test_2d_and_batched_copies(mode):
    """memcpy2d_async moves a strided block; BatchCopier (kernel, batch call or loop) many scattered rows."""
    _check_2d_and_batched_copies(cuda, mode)


def test_2d_and_batched_copies_on_the_simulation():
    """The same on the host simulation the CPU tests use (tests/cudasim.py)."""
    from tests import cudasim

    _check_2d_and_batched_copies(cudasim.make_module(), "sim")


def _check_2d_and_batched_copies(cuda, mode):
    stream = cuda.Stream()
    rows, width = 64, 256
    src, dst = cuda.DeviceBuffer(rows * width), cuda.DeviceBuffer(rows * width)
    host = cuda.PinnedBuffer(rows * width)
    try:
        data = np.arange(rows * width, dtype=np.uint32).astype(np.uint8).reshape(rows, width)
        host.view(np.uint8, (rows, width))[...] = data
        cuda.memcpy_async(src.ptr, host.ptr, rows * width, "h2d", stream)
        cuda.memset_async(dst.ptr, 0, rows * width, stream)
        # Rows 2..9, bytes 16..47 of each, into rows 0..7 of dst at byte 100.
        cuda.memcpy2d_async(dst.ptr + 100, width, src.ptr + 2 * width + 16, width, 32, 8, "d2d", stream)
        picked = [1, 5, 6, 7, 30, 63]
        copier = cuda.BatchCopier(mode)
        if mode == "kernel":
            assert copier.path == "kernel", "NVRTC and the driver module API are expected on a GPU machine"
        copier.copy(np.array([dst.ptr + (40 + i) * width for i in range(len(picked))], np.int64),
                    np.array([src.ptr + r * width for r in picked], np.int64),
                    np.array([width - (i % 2) * 3 for i in range(len(picked))], np.int64), stream)
        cuda.memcpy_async(host.ptr, dst.ptr, rows * width, "d2h", stream)
        stream.synchronize()
        got = host.view(np.uint8, (rows, width))
        want = np.zeros_like(data)
        want[0:8, 100:132] = data[2:10, 16:48]
        for i, r in enumerate(picked):
            n = width - (i % 2) * 3  # odd sizes take the kernel's byte path
            want[40 + i, :n] = data[r, :n]
        np.testing.assert_array_equal(got, want)
        # The same copies prepared once (table on the device) and replayed: after a source change the
        # replay copies the new bytes, and the table is not re-uploaded.
        cuda.memset_async(dst.ptr, 0, rows * width, stream)
        prepared = copier.prepare(np.array([dst.ptr + (40 + i) * width for i in range(len(picked))], np.int64),
                                  np.array([src.ptr + r * width for r in picked], np.int64),
                                  np.array([width - (i % 2) * 3 for i in range(len(picked))], np.int64))
        for value in (7, 9):
            cuda.memset_async(src.ptr, value, rows * width, stream)
            prepared.launch(stream)
            cuda.memcpy_async(host.ptr, dst.ptr, rows * width, "d2h", stream)
            stream.synchronize()
            want = np.zeros_like(data)
            for i in range(len(picked)):
                want[40 + i, :width - (i % 2) * 3] = value
            np.testing.assert_array_equal(host.view(np.uint8, (rows, width)), want)
        prepared.free()
        copier.free()
    finally:
        src.free()
        dst.free()
        host.free()
        stream.destroy()
