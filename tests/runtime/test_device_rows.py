"""The device executor's row copies, copy-table cache and fast paths, checked on what they write.

- :class:`DeviceArena.copy_rows_from`: the listed rows of every state (slot axis first or not, one
  byte per row or more) come from the other arena and nothing else changes; read-only slot arrays get
  one cached copy table each (at most 16 kept, the oldest freed first).
- The fast paths of a graph Session (``Session.step`` with ``out=``, with read-only ``slots``, bare
  frames, ``step_async``): taken when the frame and ``out`` match the plan exactly, and every frame or
  ``out`` that does not match goes to the full path, which raises the typed error and leaves the state.

Runs on the CPU simulation of CUDA (tests/cudasim.py) and, marked ``gpu``, on a real GPU.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, CudaError, EngineError, StateError
from rnnrt.runtime.device import DeviceArena
from rnnrt.runtime.frames import RowLayout
from rnnrt.runtime.session import Session
from tests import cudasim
from tests.engines.sim_ort import SimOrtEngine
from tests.models import MODELS
from tests.runtime.test_session_gpu import (ATOL, RTOL, _count_fast_rows, _count_full_steps, backend,  # noqa: F401
                                            converted)

B = 6


def _arena_pair(cuda, states):
    """Two arenas over ``states`` ({name: (shape, dtype, slot axis)}), filled with distinct random rows."""
    layout = [(n, shape, np.dtype(dt)) for n, (shape, dt, _) in states.items()]
    rows = {n: RowLayout(axis, shape, np.dtype(dt).itemsize) for n, (shape, dt, axis) in states.items()}
    stream, copier = cuda.Stream(), cuda.BatchCopier()
    arenas = [DeviceArena(cuda, layout, stream, copier) for _ in range(2)]
    rng = np.random.default_rng(5)
    every = np.arange(B)
    for arena in arenas:
        arena.write_rows(rows, every, {n: rng.uniform(0, 250, shape).astype(dt) for n, (shape, dt, _) in states.items()})
    return arenas, rows, stream, copier


def _expect_rows(dst_before, src, rows, slots, got):
    for n, rl in rows.items():
        want = dst_before[n].copy()
        rl.put(want, slots, rl.take(src[n], slots))
        assert got[n].tobytes() == want.tobytes(), f"{n}: rows {list(slots)}"


GEOMETRIES = {
    # Slot axis first everywhere: one block per state and run (the pool's hot path).
    "first": {"h": ((B, 4), np.float32, 0), "c": ((B, 2, 3), np.float32, 0)},
    # Two strips per row everywhere (LSTM state (layers, batch, hidden)).
    "outer2": {"h": ((2, B, 4), np.float32, 1), "c": ((2, B, 3), np.float32, 1)},
    # One byte per row and three strips: the row size is 1, the slot axis is not first.
    "bytes": {"m": ((3, B), np.uint8, 1), "n": ((3, B), np.uint8, 1)},
    "mixed": {"h": ((B, 4), np.float32, 0), "c": ((3, B, 2), np.float32, 1), "m": ((2, B), np.uint8, 1)},
}


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("read_only", [False, True])
def test_copy_rows_from_copies_exactly_the_listed_rows(backend, geometry, read_only):
    """Each slot set (unsorted, runs, one run, one slot, none) copies those rows of every state, in
    every geometry; rows not listed keep their bytes; a cached table copies the source's current rows."""
    (dst, src), rows, stream, copier = _arena_pair(backend.cuda, GEOMETRIES[geometry])
    try:
        for slots in ([4, 0, 1, 3], [1, 2], [5], [0, 1, 2, 3, 4, 5], [2, 5, 0], []):
            arr = np.array(slots, dtype=np.int64)
            if read_only:
                arr.flags.writeable = False
            before, source = dst.read_all(), src.read_all()
            dst.copy_rows_from(src, rows, arr)
            _expect_rows(before, source, rows, arr, dst.read_all())
            if read_only:  # the cached table again, after the source's rows changed
                src.write_rows(rows, np.arange(B), {n: v + 1 for n, v in source.items()})
                before, source = dst.read_all(), src.read_all()
                dst.copy_rows_from(src, rows, arr)
                _expect_rows(before, source, rows, arr, dst.read_all())
    finally:
        for a in (dst, src):
            a.free()
        copier.free()
        stream.destroy()


def test_single_run_of_a_strided_state_is_one_2d_copy(monkeypatch):
    """A single run of slots in a state with strips (dims before the slot axis) is one cudaMemcpy2DAsync."""
    mod = cudasim.install(monkeypatch)
    (dst, src), rows, stream, copier = _arena_pair(mod, {"h": ((2, B, 4), np.float32, 1)})
    before, source = dst.read_all(), src.read_all()
    copies = mod.sim.copies
    dst.copy_rows_from(src, rows, np.array([2, 3, 4]))
    stream.synchronize()
    assert mod.sim.copies - copies == 1
    _expect_rows(before, source, rows, [2, 3, 4], dst.read_all())


def test_copy_tables_are_cached_per_read_only_array_at_most_16(backend):
    """One device copy table per read-only slot array (live device allocations count them), at most
    16: the 17th evicts the oldest, whose array then gets a new table; free() releases every table."""
    (dst, src), rows, stream, copier = _arena_pair(backend.cuda, GEOMETRIES["first"])
    base = backend.live()["device"]
    arrays = []
    for k in range(20):
        arr = np.array([k % B, (k + 2) % B] if k % 2 else [k % B], dtype=np.int64)
        arr.flags.writeable = False
        arrays.append(arr)
        before, source = dst.read_all(), src.read_all()
        dst.copy_rows_from(src, rows, arr)
        _expect_rows(before, source, rows, arr, dst.read_all())
        assert backend.live()["device"] - base == min(k + 1, 16), f"after {k + 1} arrays"
        dst.copy_rows_from(src, rows, arr)  # the same array again: its table, no new one
        assert backend.live()["device"] - base == min(k + 1, 16)
    before, source = dst.read_all(), src.read_all()
    dst.copy_rows_from(src, rows, arrays[0])  # evicted long ago: a new table replaces the oldest
    _expect_rows(before, source, rows, arrays[0], dst.read_all())
    assert backend.live()["device"] - base == 16
    dst.free()
    assert backend.live()["device"] - base == -1  # its own buffer and all 16 tables
    src.free()
    copier.free()
    stream.destroy()


# The fast paths of a graph Session.

def _session(backend, converted, **kw):
    yaml, d = converted("b_lstm_batch_resets")  # batch 3, data (8, 3, 5), one output lstm1 (8, 3, 7)
    return backend.session(yaml, d, cuda_graph=True, **kw), rnnrt.load(yaml, backend="onnxruntime")


def _x(rng, n=3):
    return rng.uniform(-1, 1, (8, n, 5)).astype(np.float32)


def _warm(s, ref, rng):
    """Full-batch steps on both sessions until the graph session has captured and made its plan."""
    for _ in range(4):
        x = _x(rng)
        s.step({"data": x}), ref.step({"data": x})


def _same_state(s, ref):
    for n, v in ref.state.items():
        np.testing.assert_allclose(s.state[n], v, atol=ATOL, rtol=RTOL, err_msg=n)


def _bad_outs(shape):
    ro = np.empty(shape, np.float32)
    ro.flags.writeable = False
    short = (shape[0], shape[1] - 1) + shape[2:]
    return [({"lstm1": np.empty(shape, np.float64)}, r"out\['lstm1'\] \| Is \('float64'"),
            ({"lstm1": np.empty(short, np.float32)}, r"out\['lstm1'\] \| Is \('float32', \(8, %d" % short[1]),
            ({"lstm1": ro}, r"(?s)out\['lstm1'\] \| Is \('float32'.*Expected a writable float32"),
            ({"nope": np.empty(shape, np.float32)}, r"out\['nope'\] \| Is not an output")]


def test_fast_step_fills_out_and_sends_bad_out_to_the_full_path(backend, converted):
    """Full-batch steps with out=: the plan fills the given arrays (no full step); a wrong dtype, shape,
    a read-only array or an unknown name raises BindingError from the full path and the state stays."""
    s, ref = _session(backend, converted, feedback="swap")
    rng = np.random.default_rng(31)
    with s, ref:
        _warm(s, ref, rng)
        full = _count_full_steps(s)
        for _ in range(3):
            x = _x(rng)
            out = {"lstm1": np.full((8, 3, 7), np.nan, np.float32)}
            got = s.step({"data": x}, out=out)
            assert got["lstm1"] is out["lstm1"]
            np.testing.assert_allclose(out["lstm1"], ref.step({"data": x})["lstm1"], atol=ATOL, rtol=RTOL)
        assert not full, "out= matching the plan takes the fast path"
        _same_state(s, ref)
        for bad, match in _bad_outs((8, 3, 7)):
            x = _x(rng)
            s.step({"data": x}), ref.step({"data": x})  # an error drops the plan: the full path makes it again
            del full[:]
            before = s.state
            with pytest.raises(BindingError, match=match):
                s.step({"data": _x(rng)}, out=bad)
            assert len(full) == 1, "the fast path declined the out= and the full path raised"
            for n, v in s.state.items():
                assert v.tobytes() == before[n].tobytes(), n
        x = _x(rng)
        np.testing.assert_allclose(s.step({"data": x})["lstm1"], ref.step({"data": x})["lstm1"], atol=ATOL, rtol=RTOL)


def test_device_outputs_refuse_out_on_the_fast_path(backend, converted):
    s, ref = _session(backend, converted, feedback="swap", outputs="device")
    rng = np.random.default_rng(32)
    with s, ref:
        for _ in range(4):
            s.step({"data": _x(rng)})
        assert s.executor._plan is not None
        with pytest.raises(BindingError, match="out= was given but the session returns device arrays"):
            s.step({"data": _x(rng)}, out={"lstm1": np.empty((8, 3, 7), np.float32)})


@pytest.mark.parametrize("outputs", ["host", "view"])
def test_fast_rows_frames_and_out(backend, converted, outputs):
    """Steps of a read-only slot array take the plan for slots with dict frames, bare arrays and out=
    (each equal to the ORT Session's); frames or out that do not match it exactly raise the full path's
    BindingError (wrong dtype, shape, read-only, unknown output) and leave the state."""
    s, ref = _session(backend, converted, feedback="swap", outputs=outputs)
    rng = np.random.default_rng(33)
    rows = np.array([2, 0])
    rows.flags.writeable = False
    with s, ref:
        taken = _count_fast_rows(s)
        _warm(s, ref, rng)

        def both(frame, out=None):
            got = s.step(frame, slots=rows, out=out)
            want = ref.step(frame if not isinstance(frame, types.MappingProxyType) else dict(frame), slots=[2, 0])
            np.testing.assert_allclose(got["lstm1"], want["lstm1"], atol=ATOL, rtol=RTOL)
            _same_state(s, ref)
            return got

        both({"data": _x(rng, 2)})  # checks the slots (full path), then the plan serves them
        del taken[:]
        both({"data": _x(rng, 2)})
        both(_x(rng, 2))
        out = {"lstm1": np.full((8, 2, 7), np.nan, np.float32)}
        assert both({"data": _x(rng, 2)}, out)["lstm1"] is out["lstm1"]
        assert both(_x(rng, 2), out)["lstm1"] is out["lstm1"]
        assert taken == [True] * 4, taken
        # Not the plan's layout: the full path (its checks and errors), the state kept on error.
        both(types.MappingProxyType({"data": _x(rng, 2)}))
        for bad, match in [({"data": _x(rng, 2).astype(np.float64)}, r"Input 'data' \| Received dtype float64"),
                           (_x(rng, 2).astype(np.float64), r"Input 'data' \| Received dtype float64"),
                           ({"data": _x(rng, 1)}, r"Input 'data' \| Received shape \(8, 1, 5\)"),
                           (_x(rng, 1), r"Input 'data' \| Received shape \(8, 1, 5\)")]:
            both(_x(rng, 2))  # an error drops the plan: the full path makes it again
            del taken[:]
            before = s.state
            with pytest.raises(BindingError, match=match):
                s.step(bad, slots=rows)
            assert taken == [False], "the fast path declined the frame and the full path raised"
            for n, v in s.state.items():
                assert v.tobytes() == before[n].tobytes(), n
        for bad, match in _bad_outs((8, 2, 7)):
            both(_x(rng, 2))
            del taken[:]
            before = s.state
            with pytest.raises(BindingError, match=match):
                s.step({"data": _x(rng, 2)}, slots=rows, out=bad)
            assert taken == [False]
            for n, v in s.state.items():
                assert v.tobytes() == before[n].tobytes(), n
        both(_x(rng, 2))  # after an error: the full path makes the plan again
        del taken[:]
        both(_x(rng, 2))
        assert taken == [True]


def test_fast_path_errors_name_the_failed_call(backend, converted):
    """A failed graph launch or stream synchronisation on a fast path raises CudaError naming that call,
    and the state does not advance."""
    s, ref = _session(backend, converted, feedback="swap")
    rng = np.random.default_rng(34)
    rows = np.array([1, 2])
    rows.flags.writeable = False
    with s, ref:
        for _ in range(4):
            s.step({"data": _x(rng)})
        s.step({"data": _x(rng, 2)}, slots=rows)
        ex = s.executor
        real_sync, real_launch = ex._sync, ex._plan.launch
        for slots, n in ((None, 3), (rows, 2)):
            before, k_in = s.state, s.in_arena
            ex._sync = lambda: (1,)  # cudaErrorInvalidValue
            with pytest.raises(CudaError, match=r"\bcudaStreamSynchronize\b"):
                s.step({"data": _x(rng, n)}, slots=slots)
            ex._sync = real_sync
            ex.sync()
            assert s.in_arena == k_in
            for name, v in s.state.items():
                assert v.tobytes() == before[name].tobytes(), name
        ex._plan.launch = (lambda: (1,), lambda: (1,))
        with pytest.raises(CudaError, match=r"\bcudaGraphLaunch\b"):
            s.step({"data": _x(rng, 2)}, slots=rows)
        ex._plan.launch = real_launch


@pytest.mark.parametrize("outputs", ["host", "view"])
def test_step_async_on_the_plan(backend, converted, outputs):
    """step_async on the plan: "host" outputs are fresh arrays per step, "view" ones the staging itself;
    done() is False while the simulated stream still has the step's work, then True, and after wait()."""
    s, ref = _session(backend, converted, feedback="swap", outputs=outputs)
    rng = np.random.default_rng(35)
    with s, ref:
        _warm(s, ref, rng)
        full = _count_full_steps(s)
        got = []
        for _ in range(2):
            x = _x(rng)
            h = s.step_async({"data": x})
            if backend.kind == "sim":
                assert h.done() is False, "the simulated stream runs the step only when waited for or queried"
            for _ in range(1000):
                if h.done():
                    break
            assert h.done()
            res = h.wait()
            assert h.done() and h.wait() is res
            np.testing.assert_allclose(res["lstm1"], ref.step({"data": x})["lstm1"], atol=ATOL, rtol=RTOL)
            got.append(res["lstm1"])
        assert not full
        if outputs == "host":
            assert not np.shares_memory(got[0], got[1]) and got[0].flags.owndata
        else:
            assert np.shares_memory(got[0], got[1]), "outputs='view' returns the staging buffer itself"


def test_capture_failure_falls_back_once(backend, converted, caplog):
    """A capture that raises logs the error's first line once and the session runs plain enqueues
    (no second capture attempt), with results equal to the ORT Session's."""
    s, ref = _session(backend, converted, feedback="copy")
    rng = np.random.default_rng(36)
    attempts = []

    def failing(stream):
        attempts.append(stream)
        raise RuntimeError("capture refused by the test\nsecond line")

    with s, ref, caplog.at_level("INFO", logger="rnnrt"):
        ex = s.executor
        ex._cuda = types.SimpleNamespace(**{k: getattr(ex._cuda, k) for k in dir(ex._cuda) if not k.startswith("__")})
        ex._cuda.capture = failing
        for _ in range(5):
            x = _x(rng)
            np.testing.assert_allclose(s.step({"data": x})["lstm1"], ref.step({"data": x})["lstm1"], atol=ATOL,
                                       rtol=RTOL)
    lines = [r.getMessage() for r in caplog.records if "CUDA graph capture failed" in r.getMessage()]
    assert len(attempts) == 1 and len(lines) == 1, (attempts, lines)
    assert "(capture refused by the test); running plain enqueues" in lines[0]


def test_input_buffers_of_dynamic_dims(monkeypatch, tmp_path):
    """input_buffers() names the input whose dims are dynamic; with shapes= it returns staging buffers of
    those shapes, the same ones on every call, that a step reads."""
    mod = cudasim.install(monkeypatch)
    yaml = MODELS["lstm_scan"](batch=2, time="T").save(tmp_path / "m")
    with Session(yaml, lambda: SimOrtEngine(yaml, mod), cuda_graph=True, feedback="swap") as s, \
            rnnrt.load(yaml, backend="onnxruntime", threads=1) as ref:
        name = s.io.single_input
        with pytest.raises(BindingError, match=rf"Input '{name}' \| Has dynamic dims \['T', 2, 5\]\.\n"
                                               r"Note: Pass its full shape in shapes=\{name: shape\}\."):
            s.input_buffers()
        shape, shapes = (4, 2, 5), {name: (4, 2, 5), s.io.cont.spec.name: (4, 2)}
        bufs = s.input_buffers(shapes)
        assert {n: b.shape for n, b in bufs.items()} == shapes
        assert s.input_buffers(shapes)[name] is bufs[name]
        rng = np.random.default_rng(37)
        for _ in range(5):
            x = rng.uniform(-1, 1, shape).astype(np.float32)
            bufs[name][...] = x
            np.testing.assert_allclose(s.step({name: bufs[name]})["lstm1"], ref.step({name: x})["lstm1"],
                                       atol=ATOL, rtol=RTOL)


def test_device_outputs_name_the_session_stream(backend, converted):
    """outputs="device": every DeviceArray (full path, the plan's, gathered rows of some slots) names the
    session's stream in its CUDA Array Interface, so consumers order after the step that wrote it."""
    s, ref = _session(backend, converted, feedback="swap", outputs="device")
    rng = np.random.default_rng(38)
    with s, ref:
        handle = s.executor._stream.handle
        full = _count_full_steps(s)
        for k in range(6):
            x = _x(rng)
            got = s.step({"data": x})["lstm1"]
            assert got.__cuda_array_interface__["stream"] == handle, f"call {k}"
            np.testing.assert_allclose(backend.to_host(got), ref.step({"data": x})["lstm1"], atol=ATOL, rtol=RTOL)
        assert len(full) < 6, "the plan served the last steps"
        x = _x(rng, 2)
        got = s.step({"data": x}, slots=[2, 0])["lstm1"]
        assert got.__cuda_array_interface__["stream"] == handle and got.shape == (8, 2, 7)
        np.testing.assert_allclose(backend.to_host(got), ref.step({"data": x}, slots=[2, 0])["lstm1"], atol=ATOL,
                                   rtol=RTOL)


@pytest.fixture(scope="module")
def unbatched_yaml(tmp_path_factory):
    """shared_sr_onnx (batch 4) with one more output first, ``scale``: a scalar with no batch axis, like the
    input ``sr`` (what the fast path for slots stages and returns whole)."""
    import onnx.helper as oh
    from onnx import TensorProto

    from rnnrt.importers.onnx.importer import convert_onnx
    from rnnrt.ir.config import load_config, save_step_graph
    from tests.models.onnx_sources import shared_sr_onnx

    model = shared_sr_onnx(4)
    outs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend([oh.make_tensor_value_info("scale", TensorProto.FLOAT, [])] + outs)
    path = save_step_graph(convert_onnx(model), tmp_path_factory.mktemp("unbatched"))
    axes = {t.name: t.batch_axis for t in load_config(path).inputs + load_config(path).outputs}
    assert axes["sr"] is None and axes["scale"] is None and axes["y"] == 0
    return path


@pytest.mark.parametrize("outputs", ["host", "view", "device"])
def test_slots_steps_with_unbatched_input_and_output(monkeypatch, unbatched_yaml, outputs):
    """Steps of a read-only slot array on a model with an input and an output without a batch axis: the
    input is staged whole, the output returned whole (a fresh array for "host", the staging for "view",
    a DeviceArray on the session's stream for "device"), equal to the ORT Session's; out= gets both."""
    mod = cudasim.install(monkeypatch)
    rows = np.array([3, 1])
    rows.flags.writeable = False
    rng = np.random.default_rng(39)
    with Session(unbatched_yaml, lambda: SimOrtEngine(unbatched_yaml, mod), feedback="swap", cuda_graph=True,
                 outputs=outputs) as s, rnnrt.load(unbatched_yaml, backend="onnxruntime", threads=1) as ref:
        assert s.io.output_names[0] == "scale"
        taken = _count_fast_rows(s)
        host = (lambda v: v.get()) if outputs == "device" else (lambda v: v)
        seen = []
        for k in range(8):
            n = 4 if k < 3 else 2
            frame = {"x": rng.uniform(-1, 1, (n, 4)).astype(np.float32), "sr": np.array(8000 * (k + 1), np.int64)}
            slots = None if k < 3 else rows
            out = {"scale": np.full((), np.nan, np.float32), "y": np.full((2, 3), np.nan, np.float32)} \
                if k >= 6 and outputs != "device" else None
            got = s.step(frame, slots=slots, out=out)
            want = ref.step(frame, slots=None if slots is None else [3, 1])
            for name in ("scale", "y"):
                np.testing.assert_allclose(host(got[name]), want[name], atol=ATOL, rtol=RTOL, err_msg=f"{name} {k}")
                if out is not None:
                    assert got[name] is out[name]
            if outputs == "device":
                assert got["scale"].__cuda_array_interface__["stream"] == s.executor._stream.handle
                assert got["scale"].shape == () and got["scale"].dtype == np.float32
            elif k >= 4 and out is None:
                seen.append(got["scale"])
        if outputs != "device":
            assert taken[-4:] == [True] * 4, taken
            shared = np.shares_memory(seen[0], seen[1])
            assert shared == (outputs == "view"), "a fresh scalar for 'host', the staging itself for 'view'"


def test_fast_step_bare_frames(backend, converted):
    """Full-batch bare arrays take the plan made by a bare array (no full step); a bare array of another
    dtype or shape, or a frame that is a mapping but not a dict, goes to the full path (its error or its
    result), and the state stays on error."""
    s, ref = _session(backend, converted, feedback="swap")
    rng = np.random.default_rng(40)
    with s, ref:
        _warm(s, ref, rng)
        full = _count_full_steps(s)

        def both(frame):
            got = s.step(frame)
            want = ref.step(dict(frame) if isinstance(frame, types.MappingProxyType) else frame)
            np.testing.assert_allclose(got["lstm1"], want["lstm1"], atol=ATOL, rtol=RTOL)
            _same_state(s, ref)

        for _ in range(3):
            both(_x(rng))
        assert not full, "bare arrays take the plan of a frame of the single input"
        both(types.MappingProxyType({"data": _x(rng)}))
        assert len(full) == 1
        for bad, match in [(_x(rng).astype(np.float64), r"Input 'data' \| Received dtype float64"),
                           (_x(rng)[:, :2].copy(), r"Input 'data' \| Received shape \(8, 2, 5\)")]:
            both(_x(rng))
            del full[:]
            before = s.state
            with pytest.raises(BindingError, match=match):
                s.step(bad)
            assert len(full) == 1
            for n, v in s.state.items():
                assert v.tobytes() == before[n].tobytes(), n


def test_check_finite_on_a_device_session(backend, converted):
    s, ref = _session(backend, converted, feedback="copy", check_finite=True)
    rng = np.random.default_rng(41)
    with s, ref:
        x = _x(rng)
        x[3, 1, 2] = np.nan
        with pytest.raises(BindingError, match=r"Input 'data' \| Holds NaN or infinite values"):
            s.step({"data": x})


def test_wait_after_close_names_the_handle_and_the_fix(backend, converted):
    s, ref = _session(backend, converted)
    with s, ref:
        h = s.step_async({"data": _x(np.random.default_rng(42))})
    with pytest.raises(StateError) as err:
        h.wait()
    assert str(err.value) == ("StepHandle | wait() was called after the session was closed.\n"
                              "Note: Wait for a step before closing its session.")


def test_a_step_before_wait_names_the_session_and_the_fix(backend, converted):
    s, ref = _session(backend, converted)
    rng = np.random.default_rng(43)
    with s, ref:
        h = s.step_async({"data": _x(rng)})
        with pytest.raises(StateError) as err:
            s.step({"data": _x(rng)})
        assert str(err.value) == ("Session | A step was started before the previous step_async() was waited for.\n"
                                  "Note: Call wait() on the previous handle first.")
        h.wait()


def test_reset_writes_zero_bytes(backend, converted):
    """A reset leaves exact zero bytes in the state (a fill of tiny non-zero values would pass any
    tolerance): every slot after ``reset()``, only the listed slots after ``reset(slots)``, on the
    graph Session and on one without graphs."""
    rng = np.random.default_rng(21)
    for graph in (True, False):
        yaml, d = converted("b_lstm_batch_resets")
        with backend.session(yaml, d, cuda_graph=graph) as s:
            for _ in range(3):
                s.step({"data": _x(rng)})
            assert all(v.any() for v in s.state.values())
            s.reset()
            for n, v in s.state.items():
                assert not v.tobytes().strip(b"\0"), f"{n}: non-zero bytes after reset() (cuda_graph={graph})"
            for _ in range(3):
                s.step({"data": _x(rng)})
            before = s.state
            s.reset([1])
            for n, v in s.state.items():
                rows = RowLayout(0 if v.shape[0] == 3 else 1, v.shape, v.dtype.itemsize)
                assert not rows.take(v, np.array([1])).tobytes().strip(b"\0"), f"{n}: slot 1 after reset([1])"
                others = np.array([0, 2])
                assert rows.take(v, others).tobytes() == rows.take(before[n], others).tobytes(), n


def test_engine_making_another_state_shape_is_refused_by_name(backend, converted, monkeypatch):
    """An engine whose state output has another shape than the state it feeds back (a plan built for
    other dims) is refused at the first step with the output, the engine's shape and the state's, and
    the state stays as it was."""
    yaml, d = converted("b_lstm_batch_resets")
    with backend.session(yaml, d) as s:
        state_out = next(iter(s._executor._state_shapes))
        want = tuple(s._executor._state_shapes[state_out])
        engine = s._engine
        real = engine.output_shapes

        def skewed(context, shapes):
            out = dict(real(context, shapes))
            out[state_out] = want[:-1] + (want[-1] + 1,)
            return out

        monkeypatch.setattr(engine, "output_shapes", skewed)
        before = s.state
        with pytest.raises(EngineError) as err:
            s.step({"data": _x(np.random.default_rng(2))})
        bad = want[:-1] + (want[-1] + 1,)
        assert str(err.value) == (f"State output {state_out!r} | The engine makes shape {bad}.\n"
                                  f"Note: Expected the state shape {want}.")
        for n, v in s.state.items():
            assert v.tobytes() == before[n].tobytes(), n
