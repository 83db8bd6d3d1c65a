"""The host simulation of rnnrt.cuda (tests/cudasim.py) keeps time and checks every access: what lets the
simulated GPU tests catch a missing synchronisation, a missing event wait, a wrong copy kind or an
out-of-bounds copy."""

from __future__ import annotations

import numpy as np
import pytest

from rnnrt.errors import CudaError
from tests import cudasim


@pytest.fixture
def mod():
    return cudasim.make_module()


def test_fresh_memory_is_nan_in_every_float_width(mod):
    for buf in (mod.DeviceBuffer(64), mod.PinnedBuffer(64)):
        for dtype in (np.float16, np.float32, np.float64):
            assert np.isnan(buf.view(dtype, (64 // np.dtype(dtype).itemsize,))).all()
        buf.free()


def test_work_runs_when_waited_for(mod):
    s1, s2 = mod.Stream(), mod.Stream()
    pin, dev, out = mod.PinnedBuffer(16), mod.DeviceBuffer(16), mod.PinnedBuffer(16)
    pin.view(np.float32, (4,))[...] = [1, 2, 3, 4]
    mod.memcpy_async(dev.ptr, pin.ptr, 16, "h2d", s1)
    mod.memcpy_async(out.ptr, dev.ptr, 16, "d2h", s1)
    assert np.isnan(out.view(np.float32, (4,))).all(), "nothing runs before a wait"
    assert not s1.query()  # work was pending (and has run since)
    assert s1.query()
    np.testing.assert_array_equal(out.view(np.float32, (4,)), [1, 2, 3, 4])
    # s2 waits on an event recorded on s1: synchronising s2 runs s1's earlier work first, not its later work.
    pin.view(np.float32, (4,))[...] = 7
    mod.memcpy_async(dev.ptr, pin.ptr, 16, "h2d", s1)
    ev = mod.Event()
    ev.record(s1)
    mod.memset_async(dev.ptr, 0, 8, s1)  # after the record
    s2.wait_event(ev)
    mod.memcpy_async(out.ptr, dev.ptr, 16, "d2h", s2)
    s2.synchronize()
    np.testing.assert_array_equal(out.view(np.float32, (4,)), [7, 7, 7, 7])
    s1.synchronize()
    np.testing.assert_array_equal(dev.view(np.float32, (4,)), [0, 0, 7, 7])
    # Without the wait, the reader sees what was there before.
    mod.memset_async(dev.ptr, 0, 16, s1)
    mod.memcpy_async(out.ptr, dev.ptr, 16, "d2h", s2)
    s2.synchronize()
    np.testing.assert_array_equal(out.view(np.float32, (4,)), [0, 0, 7, 7])
    s1.synchronize()
    # A graph captures work and replays it only when its launch is waited for.
    with mod.capture(s1) as box:
        mod.memcpy_async(dev.ptr, pin.ptr, 16, "h2d", s1)
    graph = box[0]
    assert dev.view(np.float32, (4,)).tolist() == [0, 0, 0, 0]
    graph.launch(s1)
    assert dev.view(np.float32, (4,)).tolist() == [0, 0, 0, 0]
    s1.synchronize()
    assert dev.view(np.float32, (4,)).tolist() == [7, 7, 7, 7]
    graph.destroy()
    for b in (pin, dev, out):
        b.free()
    s1.destroy()
    s2.destroy()
    ev.destroy()
    assert mod.live_allocations() == {"device": 0, "pinned": 0, "stream": 0, "event": 0, "graph": 0}


def test_out_of_bounds_and_wrong_kinds_are_typed_errors(mod):
    s = mod.Stream()
    pin, dev, dev2 = mod.PinnedBuffer(512), mod.DeviceBuffer(256), mod.DeviceBuffer(256)
    host = np.zeros(64, np.uint8)
    with pytest.raises(CudaError, match=r"source range .* leaves the device allocation .*\(by 64 bytes\)"):
        mod.memcpy_async(pin.ptr, dev.ptr, 320, "d2h", s)
    with pytest.raises(CudaError, match="destination range .* leaves the pinned allocation"):
        mod.memcpy_async(pin.ptr + 320, dev.ptr, 256, "d2h", s)
    with pytest.raises(CudaError, match="leaves the device allocation"):
        mod.memcpy_async(dev.ptr + 256 + 64, dev2.ptr, 16, "d2d", s)  # just past the end: in the guard zone
    with pytest.raises(CudaError, match="leaves the device allocation"):
        mod.memset2d_async(dev.ptr, 128, 0, 64, 3, s)
    with pytest.raises(CudaError, match="is pinned host memory, not device memory"):
        mod.memcpy_async(pin.ptr, dev.ptr, 16, "h2d", s)  # kinds swapped
    with pytest.raises(CudaError, match="is device memory, not host memory"):
        mod.memcpy_async(dev.ptr, dev2.ptr, 16, "d2h", s)
    with pytest.raises(CudaError, match="is not device memory"):
        mod.memcpy_async(dev.ptr, host.ctypes.data, 16, "d2d", s)
    with pytest.raises(CudaError, match="is not device memory"):
        mod.BatchCopier().copy(np.array([dev.ptr]), np.array([host.ctypes.data]), np.array([16]), s)
    mod.memcpy_async(dev.ptr, host.ctypes.data, 64, "h2d", s)  # pageable host memory is fine
    # A graph replayed after a buffer it copies into was freed fails when it runs.
    with mod.capture(s) as box:
        mod.memcpy_async(dev2.ptr, dev.ptr, 16, "d2d", s)
    dev2.free()
    box[0].launch(s)
    with pytest.raises(CudaError, match="Ran after its device allocation .* was freed"):
        s.synchronize()
    box[0].destroy()
    for b in (pin, dev):
        b.free()
    s.destroy()


def test_copy_kinds_are_checked_and_copy_tables_are_device_memory(mod):
    """A copy kind other than h2d/d2h/d2d is refused (rnnrt.cuda maps kinds through a table); a prepared
    batch copy holds a device allocation until freed, and launching it after free is an error."""
    s = mod.Stream()
    a, b = mod.DeviceBuffer(16), mod.DeviceBuffer(16)
    for bad in (None, "D2D", "h2h"):
        with pytest.raises(CudaError, match="Unknown copy kind"):
            mod.memcpy_async(a.ptr, b.ptr, 16, bad, s)
        with pytest.raises(CudaError, match="Unknown copy kind"):
            mod.memcpy2d_async(a.ptr, 8, b.ptr, 8, 8, 2, bad, s)
    b.view(np.float32, (4,))[...] = [1, 2, 3, 4]
    live = mod.live_allocations()["device"]
    copier = mod.BatchCopier()
    table = copier.prepare(np.array([a.ptr, a.ptr + 8]), np.array([b.ptr + 8, b.ptr]), np.array([8, 8]))
    assert mod.live_allocations()["device"] == live + 1
    table.launch(s)
    s.synchronize()
    np.testing.assert_array_equal(a.view(np.float32, (4,)), [3, 4, 1, 2])
    table.free()
    table.free()  # twice: harmless
    assert mod.live_allocations()["device"] == live
    with pytest.raises(CudaError, match="after its copy table was freed"):
        table.launch(s)
