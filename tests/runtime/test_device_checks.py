"""The device executor's refusals, set-up, teardown and fast launch, checked on what a caller sees.

- ``input_memory``: every refusal compared as its whole typed message, and nothing left allocated.
- A failure at any point of the executor's set-up (stream, copier, synchroniser, event, device, engine
  context) raises that error and releases what was made before it, and nothing else.
- ``close()``: every buffer, graph, stream and event given back, the engine context destroyed and the
  copier freed once; a second close changes nothing; use after close refused.
- Refusals of a step (a step before ``wait()``, ``wait()`` after close, ``out=`` on device outputs, a
  non-finite frame, a device input of a wrong dtype or shape, a dynamic dim that disagrees between a
  device and a host input, a DLPack producer that fails): whole messages, the state bit-identical.
- Sequence starts reach the device step; bare frames and dicts take the plan made for them (no full
  step) and nothing else does; a device input fed through DLPack stays referenced until ``wait()``.

Runs on the CPU simulation of CUDA (tests/cudasim.py); where a test takes ``backend`` it also runs,
marked ``gpu``, on a real GPU.
"""

from __future__ import annotations

import ctypes
import gc

import numpy as np
import pytest

import rnnrt
from rnnrt import cuda as real_cuda  # the module itself: tests put the simulation in its place
from rnnrt.errors import BindingError, ConfigError, CudaError, StateError
from rnnrt.runtime.session import Session
from tests import cudasim
from tests.engines.sim_ort import SimOrtEngine
from tests.models import MODELS
from tests.runtime.test_session_gpu import (ATOL, RTOL, Backend, _count_calls, _count_full_steps, backend,  # noqa: F401
                                            converted)

CASE = "b_lstm_batch_resets"  # batch 3; inputs data (8, 3, 5) and cont (8, 3); output lstm1 (8, 3, 7)


def _x(rng, n=3):
    return rng.uniform(-1, 1, (8, n, 5)).astype(np.float32)


def _same_bytes(state, before):
    assert state.keys() == before.keys()
    for n, v in state.items():
        assert v.tobytes() == before[n].tobytes(), n


def _close(got, want):
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


# input_memory.

BAD_INPUT_MEMORY = [
    ({"zz": "host", 7: "device"}, "input_memory 7 | Is not an input of the model.\nNote: Inputs: ['data', 'cont']."),
    ({"data": "host", "zz": "auto", "yy": "host"},
     "input_memory 'yy' | Is not an input of the model.\nNote: Inputs: ['data', 'cont']."),
    (5, "Session | input_memory=5 is not supported.\n"
        "Note: Use 'auto', 'host', 'device' or a mapping {input name: one of those}."),
    (["host"], "Session | input_memory=['host'] is not supported.\n"
               "Note: Use 'auto', 'host', 'device' or a mapping {input name: one of those}."),
    ({"cont": "gpu"}, "input_memory['cont'] | Is 'gpu'.\nNote: Use 'auto', 'host' or 'device'."),
    ("pinned", "input_memory['data'] | Is 'pinned'.\nNote: Use 'auto', 'host' or 'device'."),
]


@pytest.mark.parametrize("policy, message", BAD_INPUT_MEMORY)
def test_input_memory_refusals(backend, converted, policy, message):
    yaml, d = converted(CASE)
    live = backend.live()
    with pytest.raises(ConfigError) as err:
        backend.session(yaml, d, input_memory=policy)
    assert str(err.value) == message
    assert backend.live() == live, "a refused session leaves nothing allocated"


# Set-up failures and close().

class _Counted:
    """Wraps a session's engine factory: records the contexts the engine made and destroyed."""

    def __init__(self, backend, case_dir, fail_create=None):
        self.made, self.destroyed = [], []
        self._backend, self._dir, self._fail = backend, case_dir, fail_create

    def __call__(self):
        engine = self._backend.engine(self._dir)
        create, destroy = engine.create_context, engine.destroy_context

        def counted_create(*a, **k):
            if self._fail is not None:
                raise self._fail
            ctx = create(*a, **k)
            self.made.append(ctx)
            return ctx

        def counted_destroy(ctx, *a, **k):
            self.destroyed.append(ctx)
            return destroy(ctx, *a, **k)

        engine.create_context, engine.destroy_context = counted_create, counted_destroy
        return engine


def _counted_copiers(monkeypatch, mod):
    freed = []

    class Copier(mod.BatchCopier):
        def free(self):
            freed.append(self)
            super().free()

    monkeypatch.setattr(mod, "BatchCopier", Copier)
    return freed


FAIL_AT = ["Stream", "BatchCopier", "raw_synchronizer", "Event", "current_device", "create_context"]


@pytest.mark.parametrize("where", FAIL_AT)
def test_a_failed_set_up_raises_its_error_and_releases_what_was_made(monkeypatch, converted, where):
    mod = cudasim.install(monkeypatch)
    backend = Backend("sim", mod, mod.sim)
    freed = _counted_copiers(monkeypatch, mod)
    yaml, d = converted(CASE)
    boom = CudaError(f"CUDA {where} | Failed (injected by the test).", "cudaErrorMemoryAllocation")

    def fail(*a, **k):
        raise boom

    if where != "create_context":
        monkeypatch.setattr(mod, where, fail)
    engines = _Counted(backend, d, boom if where == "create_context" else None)
    live = backend.live()
    with pytest.raises(CudaError) as err:
        Session(yaml, engines)
    assert err.value is boom
    assert backend.live() == live, "what was made before the failure is given back"
    assert engines.destroyed == [], "no context was made, none destroyed"
    made_copier = FAIL_AT.index(where) > FAIL_AT.index("BatchCopier")
    assert len(freed) == int(made_copier), "the copier is freed when it was made"


def test_close_gives_everything_back_once(monkeypatch, converted):
    mod = cudasim.install(monkeypatch)
    backend = Backend("sim", mod, mod.sim)
    freed = _counted_copiers(monkeypatch, mod)
    yaml, d = converted(CASE)
    engines = _Counted(backend, d)
    live = backend.live()
    rng = np.random.default_rng(50)
    s = Session(yaml, engines, cuda_graph=True, feedback="swap")
    for _ in range(3):
        s.step({"data": _x(rng)})
    s.step({"data": _x(rng, 2)}, slots=[2, 0])
    s.input_buffers()
    assert backend.live() != live
    h = s.step_async({"data": _x(rng)})  # pending at close: close waits for it, then frees
    s.close()
    assert s.executor.closed
    assert backend.live() == live, "buffers, graphs, the stream and the event are given back"
    assert len(engines.made) == 1 and engines.destroyed == engines.made, "the context is destroyed once"
    assert len(freed) == 1, "the copier is freed once"
    s.close()
    assert backend.live() == live and engines.destroyed == engines.made and len(freed) == 1, "a second close: nothing"
    with pytest.raises(StateError) as err:
        h.wait()
    assert str(err.value) == ("StepHandle | wait() was called after the session was closed.\n"
                              "Note: Wait for a step before closing its session.")
    with pytest.raises(StateError) as err:
        s.step({"data": _x(rng)})
    assert str(err.value) == "Session | step() was called after close().\nNote: Create a new Session."


# Refusals of a step leave the state.

def test_a_step_before_wait_is_refused_and_changes_nothing(backend, converted):
    yaml, d = converted(CASE)
    rng = np.random.default_rng(51)
    with backend.session(yaml, d, cuda_graph=True) as s, rnnrt.load(yaml, backend="onnxruntime") as ref:
        for _ in range(3):
            x = _x(rng)
            _close(s.step({"data": x})["lstm1"], ref.step({"data": x})["lstm1"])
        x = _x(rng)
        h = s.step_async({"data": x})
        for call in (lambda: s.step({"data": _x(rng)}), lambda: s.step_async({"data": _x(rng)}),
                     lambda: s.step(_x(rng)), lambda: s.step({"data": _x(rng, 2)}, slots=[0, 2])):
            with pytest.raises(StateError) as err:
                call()
            assert str(err.value) == ("Session | A step was started before the previous step_async() was waited "
                                      "for.\nNote: Call wait() on the previous handle first.")
        _close(h.wait()["lstm1"], ref.step({"data": x})["lstm1"])
        for n, v in ref.state.items():
            _close(s.state[n], v)
        x = _x(rng)
        _close(s.step({"data": x})["lstm1"], ref.step({"data": x})["lstm1"])


def test_out_on_device_outputs_is_refused_and_changes_nothing(backend, converted):
    yaml, d = converted(CASE)
    rng = np.random.default_rng(52)
    with backend.session(yaml, d, outputs="device") as s:
        s.step({"data": _x(rng)})
        before = s.state
        for slots in (None, [1]):
            x = _x(rng, 3 if slots is None else 1)
            out = {"lstm1": np.empty((8, 3 if slots is None else 1, 7), np.float32)}
            with pytest.raises(BindingError) as err:
                s.step({"data": x}, slots=slots, out=out)
            assert str(err.value) == ("Session.step | out= was given but the session returns device arrays.\n"
                                      "Note: Use outputs='host' or 'view' to fill numpy arrays.")
            _same_bytes(s.state, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_refuses_a_non_finite_frame_on_device(backend, converted, bad):
    yaml, d = converted(CASE)
    rng = np.random.default_rng(53)
    with backend.session(yaml, d, check_finite=True, cuda_graph=True) as s, \
            backend.session(yaml, d, cuda_graph=True) as unchecked:
        s.step({"data": _x(rng)})
        before = s.state
        x = _x(rng)
        x[5, 2, 1] = bad
        with pytest.raises(BindingError) as err:
            s.step({"data": x})
        assert str(err.value).startswith("Input 'data' | Holds NaN or infinite values")
        _same_bytes(s.state, before)
        unchecked.step({"data": x})  # without check_finite the frame is taken as it is


def test_device_inputs_of_a_wrong_dtype_or_shape_change_nothing(backend, converted):
    yaml, d = converted(CASE)
    rng = np.random.default_rng(54)
    with backend.session(yaml, d, input_memory={"data": "device"}) as s:
        s.step({"data": backend.device_array(_x(rng))})
        before = s.state
        x = _x(rng)
        for bad, message in [
                (x.astype(np.float64), "Input 'data' | Received a device array of dtype float64"),
                (np.ascontiguousarray(x[:, :2]), "Input 'data' | Received shape (8, 2, 5)"),
                (np.ascontiguousarray(x[..., :4]), "Input 'data' | Received shape (8, 3, 4): dim 2 is 4, not 5")]:
            with pytest.raises(BindingError) as err:
                s.step({"data": backend.device_array(bad)})
            assert str(err.value).startswith(message), str(err.value)
            _same_bytes(s.state, before)
        with pytest.raises(BindingError) as err:
            s.step({"data": x})
        assert str(err.value).startswith("Input 'data' | Received a host ndarray"), str(err.value)
        _same_bytes(s.state, before)


def test_dynamic_dims_of_device_and_host_inputs_must_agree(monkeypatch, tmp_path):
    """A device input sets the dynamic time dim: a host input of another length is refused (whole message,
    state unchanged), an omitted continuation input is made that long."""
    mod = cudasim.install(monkeypatch)
    yaml = MODELS["lstm_scan"](batch=2, time="T").save(tmp_path / "m")
    with Session(yaml, lambda: SimOrtEngine(yaml, mod), input_memory="auto") as s, \
            rnnrt.load(yaml, backend="onnxruntime", threads=1) as ref:
        name, cont = s.io.single_input, s.io.cont.spec.name
        rng = np.random.default_rng(55)
        for t in (4, 2):
            x = rng.uniform(-1, 1, (t, 2, 5)).astype(np.float32)
            _close(s.step({name: cudasim.device_array(mod, x)})["lstm1"], ref.step({name: x})["lstm1"])
        before = s.state
        x = rng.uniform(-1, 1, (4, 2, 5)).astype(np.float32)
        with pytest.raises(BindingError) as err:
            s.step({name: cudasim.device_array(mod, x), cont: np.ones((5, 2), np.float32)})
        assert str(err.value) == (f"Input {cont!r} | Received shape (5, 2).\n"
                                  f"Note: Expected shape ['T', 2] (batch size 2), dynamic dims so far {{'T': 4}}.")
        _same_bytes(s.state, before)


class _DLPackProducer:
    """A device array offered only through DLPack, as torch or CuPy do: ``__dlpack__`` records the stream it
    is asked to order after, and the capsule's destructor hands the memory back to its producer, which
    reuses it at once (a caching allocator: the bytes change)."""

    _DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # PyCapsule_Destructor(PyObject *)

    def __init__(self, mod, arr: np.ndarray, fail: bool = False):
        self.buf = mod.DeviceBuffer(arr.nbytes)
        self.view = self.buf.view(arr.dtype, arr.shape)
        self.view[...] = arr
        self.arr, self.fail, self.streams = arr, fail, []

    def __dlpack__(self, stream=None):
        self.streams.append(stream)
        if self.fail:
            raise BufferError("the producer's stream is gone")
        shape = (ctypes.c_int64 * self.arr.ndim)(*self.arr.shape)
        tensor = real_cuda._DLTensor(ctypes.c_void_p(self.buf.ptr), real_cuda._DLDevice(2, 0), self.arr.ndim,
                                     real_cuda._DLDataType(2, 8 * self.arr.itemsize, 1), shape, None, 0)
        view = self.view

        def reuse(_capsule):
            view[...] = np.nan  # the producer's next tensor takes the block

        keep = (tensor, shape, self._DESTRUCTOR(reuse))
        self._keep = keep
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(tensor), b"dltensor", ctypes.cast(keep[2], ctypes.c_void_p))

    def __dlpack_device__(self):
        return (2, 0)


def test_dlpack_inputs_name_the_input_order_after_the_session_stream_and_stay_referenced(monkeypatch, converted):
    mod = cudasim.install(monkeypatch)
    backend = Backend("sim", mod, mod.sim)
    yaml, d = converted(CASE)
    rng = np.random.default_rng(56)
    with backend.session(yaml, d, input_memory={"data": "device"}) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        x = _x(rng)
        producer = _DLPackProducer(mod, x)
        h = s.step_async({"data": producer})
        assert producer.streams == [s.executor._stream.handle], "DLPack is asked to order after the session stream"
        gc.collect()
        assert not np.isnan(producer.view).any(), "the capsule is held while the step is in flight"
        _close(h.wait()["lstm1"], ref.step({"data": x})["lstm1"])
        gc.collect()
        assert np.isnan(producer.view).all(), "wait() lets the capsule go"
        before = s.state
        failing = _DLPackProducer(mod, x, fail=True)
        with pytest.raises(BindingError) as err:
            s.step({"data": failing})
        assert str(err.value) == "Input 'data' | __dlpack__() failed: the producer's stream is gone."
        _same_bytes(s.state, before)


# Sequence starts, and which frames take the plan.

@pytest.mark.parametrize("feedback", ["copy", "swap"])
def test_sequence_starts_reach_the_device_step(backend, converted, feedback):
    """write_state(start=True) makes the next step a sequence start (the continuation input is zero there,
    the LSTM ignores the written state); start=False carries the written state on. The first write is on a
    fresh session: its first step has no sequence start, makes the plan, and the next step takes it."""
    yaml, d = converted(CASE)
    rng = np.random.default_rng(57)
    with backend.session(yaml, d, cuda_graph=True, feedback=feedback) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        for start in (False, True, False, True):
            values = {n: rng.uniform(-1, 1, v.shape).astype(np.float32) for n, v in ref.state.items()}
            for sess in (s, ref):
                sess.write_state(range(3), values, start=start)
            for _ in range(2):
                x = _x(rng)
                _close(s.step({"data": x})["lstm1"], ref.step({"data": x})["lstm1"])
            for n, v in ref.state.items():
                _close(s.state[n], v)


def test_plans_for_dicts_and_bare_frames(backend, converted):
    """A dict frame of the last layout and a bare array after a bare-array step take the plan (no full step);
    a bare array after a step that fed the continuation input, or one of another dtype or shape, takes the
    full path (its result, its refusal with the state unchanged)."""
    yaml, d = converted(CASE)
    rng = np.random.default_rng(58)
    with backend.session(yaml, d, cuda_graph=True, feedback="swap") as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:

        def both(frame):
            _close(s.step(frame)["lstm1"], ref.step(frame)["lstm1"])

        for _ in range(3):
            both({"data": _x(rng)})
        full = _count_full_steps(s)
        for _ in range(2):
            both({"data": _x(rng)})
        assert not full, "a dict of the last layout takes the plan"
        cont = np.ones((8, 3), np.float32)
        cont[0, 1] = 0
        for _ in range(2):
            both({"data": _x(rng), "cont": cont})
        del full[:]
        runs = _count_calls(s, "run")  # the executor's full entry: the Session's plan declined the frame
        both(_x(rng))
        assert len(full) == 1, "a bare array does not take the plan of a frame with the continuation input"
        both(_x(rng))
        both(_x(rng))
        assert len(full) == 1 and len(runs) == 1, "a bare array takes the plan a bare array made, as it is"
        for bad, message in [(_x(rng).astype(np.float64), "Input 'data' | Received dtype float64"),
                             (_x(rng)[:, :2].copy(), "Input 'data' | Received shape (8, 2, 5)")]:
            del full[:]
            before = s.state
            with pytest.raises(BindingError) as err:
                s.step(bad)
            assert str(err.value).startswith(message), str(err.value)
            assert len(full) == 1, "the plan declined it; the full path refused it"
            _same_bytes(s.state, before)
            both(_x(rng))
        for n, v in ref.state.items():
            _close(s.state[n], v)
