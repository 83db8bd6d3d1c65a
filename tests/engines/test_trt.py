"""TrtEngine: plan loading (real tensorrt-rtx), binding and enqueue logic (a fake TensorRT module).

TensorRT engines cannot execute on the CI machine (no GPU) nor on the lent H100 (TensorRT-RTX refuses
sm90; full TensorRT is not installable). What is verified here: a real plan built with tensorrt-rtx is
handed to the runtime and the failure comes back as a typed error naming the plan and TensorRT's
message. What only an engine that deserializes can show — binding enumeration, shape and address
bookkeeping, enqueue errors — runs against a fake module that mimics the TensorRT 10/11 Python API; that
every name those paths call exists in the genuine TensorRT runtime is checked by
tests/engines/test_trt_conformance.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt import cuda
from rnnrt.engines.base import DeviceTensor
from rnnrt.engines.trt import TrtEngine
from rnnrt.errors import BindingError, EngineError
from tests.models import MODELS


# ---------------------------------------------------------------------------------------------------
# A fake TensorRT module: an engine with inputs x (batch, 4) and h0 (batch, 3), outputs y and hT.
class _Mode:
    INPUT, OUTPUT = "in", "out"


class _Ctx:
    def __init__(self, engine):
        self.engine = engine
        self.calls: list = []
        self.shapes: dict = {}
        self.fail_execute = False

    def set_input_shape(self, name, shape):
        self.calls.append(("shape", name, tuple(shape)))
        if shape[0] > 8:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.calls.append(("addr", name, ptr))
        return ptr != 0xBAD

    def get_tensor_shape(self, name):
        b = self.shapes.get("x", (-1,))[0]
        return (b, 5) if name == "y" else (b, 3)

    def execute_async_v3(self, stream):
        self.calls.append(("exec", stream))
        if self.fail_execute:
            self.engine.logger.log("ERROR", "IExecutionContext::enqueueV3: Error Code 1: no kernel image")
            return False
        return True


class _Engine:
    def __init__(self, logger):
        self.logger = logger
        self.tensors = [("x", _Mode.INPUT, (-1, 4)), ("h0", _Mode.INPUT, (-1, 3)),
                        ("y", _Mode.OUTPUT, (-1, 5)), ("hT", _Mode.OUTPUT, (-1, 3))]
        self.contexts: list = []

    num_io_tensors = 4

    def get_tensor_name(self, i):
        return self.tensors[i][0]

    def get_tensor_mode(self, name):
        return {t[0]: t[1] for t in self.tensors}[name]

    def get_tensor_dtype(self, name):
        return "f32"

    def get_tensor_shape(self, name):
        return {t[0]: t[2] for t in self.tensors}[name]

    def create_execution_context(self, *args):
        ctx = _Ctx(self)
        self.contexts.append(ctx)
        return ctx


class FakeTrt:
    __name__ = "fake_tensorrt"
    __version__ = "10.99"
    TensorIOMode = _Mode

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"

        def __init__(self):
            pass

    def __init__(self, accept=True):
        self.accept = accept

    @staticmethod
    def nptype(dtype):
        return np.float32

    def Runtime(self, logger):
        outer = self

        class _Runtime:
            def deserialize_cuda_engine(self, data):
                if not outer.accept or data != b"PLAN":
                    logger.log("ERROR", "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag mismatch)")
                    return None
                return _Engine(logger)

        return _Runtime()


@pytest.fixture
def fake_logger(monkeypatch):
    """Routes the fake module's logger through trt_compat's capture machinery."""
    from rnnrt import trt_compat

    class _Logger:
        def log(self, severity, msg):
            for captured in list(trt_compat._CAPTURES):
                captured.append((severity, msg))

    monkeypatch.setattr(trt_compat, "get_logger", lambda trt: _Logger())


def _t(ptr, shape):
    return DeviceTensor(ptr, np.dtype(np.float32), shape)


def test_fake_bindings_shapes_and_address_caching(fake_logger):
    with TrtEngine(b"PLAN", trt_module=FakeTrt()) as engine:
        assert [(b.name, b.shape) for b in engine.input_bindings()] == [("x", (-1, 4)), ("h0", (-1, 3))]
        assert [b.name for b in engine.output_bindings()] == ["y", "hT"]
        assert engine.input_bindings()[0].dtype == np.float32
        ctx = engine.create_context()
        assert engine.output_shapes(ctx, {"x": (2, 4), "h0": (2, 3)}) == {"y": (2, 5), "hT": (2, 3)}
        feeds = {"x": _t(0x1000, (2, 4)), "h0": _t(0x2000, (2, 3))}
        outs = {"y": _t(0x3000, (2, 5)), "hT": _t(0x4000, (2, 3))}
        engine.enqueue(ctx, feeds, outs, stream=7)
        engine.enqueue(ctx, feeds, outs, stream=7)
        calls = ctx.ctx.calls
        # Shapes were set once (by output_shapes); addresses once; two enqueues on the caller's stream.
        assert [c for c in calls if c[0] == "shape"] == [("shape", "x", (2, 4)), ("shape", "h0", (2, 3))]
        assert len([c for c in calls if c[0] == "addr"]) == 4
        assert [c for c in calls if c[0] == "exec"] == [("exec", 7), ("exec", 7)]
        # Swap mode re-points only the state tensors.
        engine.enqueue(ctx, {**feeds, "h0": _t(0x4000, (2, 3))}, {**outs, "hT": _t(0x2000, (2, 3))}, stream=7)
        assert [c for c in calls if c[0] == "addr"][4:] == [("addr", "h0", 0x4000), ("addr", "hT", 0x2000)]
        # Two contexts (two Sessions) share one engine.
        ctx2 = engine.create_context()
        assert ctx2.ctx is not ctx.ctx
        engine.destroy_context(ctx2)
        engine.destroy_context(ctx)


def test_fake_errors_are_typed(fake_logger):
    # (A plan TensorRT cannot deserialize is shown with the real modules: test_real_plan_deserialize_attempted
    # and tests/engines/test_trt_conformance.py.)
    with TrtEngine(b"PLAN", trt_module=FakeTrt()) as engine:
        ctx = engine.create_context()
        with pytest.raises(BindingError, match=r"Input 'x' \| TensorRT rejected shape \(9, 4\)"):
            engine.output_shapes(ctx, {"x": (9, 4), "h0": (9, 3)})
        outs = {"y": _t(0x3000, (2, 5)), "hT": _t(0x4000, (2, 3))}
        with pytest.raises(BindingError, match=r"Tensor 'x' \| TensorRT rejected address 0xbad"):
            engine.enqueue(ctx, {"x": _t(0xBAD, (2, 4)), "h0": _t(0x2000, (2, 3))}, outs, stream=0)
        ctx.ctx.fail_execute = True
        with pytest.raises(EngineError, match=r"execute_async_v3 failed: IExecutionContext::enqueueV3: Error Code 1"):
            engine.enqueue(ctx, {"x": _t(0x1000, (2, 4)), "h0": _t(0x2000, (2, 3))}, outs, stream=0)
        with pytest.raises(BindingError, match=r"No destination for outputs \['hT'\]"):
            engine.execute({"x": _t(0x1000, (2, 4)), "h0": _t(0x2000, (2, 3))}, {"y": outs["y"]})


def test_missing_plan_is_an_engine_error(tmp_path: Path):
    with pytest.raises(EngineError, match=r"Plan '.*nope.plan' \| Cannot be read: No such file or directory"):
        TrtEngine(tmp_path / "nope.plan", trt_module=FakeTrt()).activate()


# ---------------------------------------------------------------------------------------------------
# Real tensorrt-rtx: a plan built here, deserialization attempted.
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed")
    from rnnrt.build.builder import BuildOptions, plan_from_config

    path = MODELS["lstm_t1"]().save(tmp_path_factory.mktemp("trt"))
    result = plan_from_config(path, options=BuildOptions(trt_module="tensorrt_rtx"))
    return result


def test_real_plan_deserialize_attempted(built):
    engine = TrtEngine(built.plan_path, flavour="tensorrt_rtx")
    if cuda.available():
        # On a GPU TensorRT-RTX supports, the plan loads; bindings come from the engine.
        with engine:
            assert {b.name for b in engine.input_bindings()} >= {"data"}
        return
    with pytest.raises(EngineError) as info:
        engine.activate()
    msg = str(info.value)
    assert f"plan {str(built.plan_path)!r}" in msg
    assert "tensorrt_rtx 1." in msg and "could not deserialize it" in msg
    assert "cudaError 35" in msg or "insufficient" in msg.lower() or "CUDA" in msg, msg
    assert not engine.is_active


def test_load_tensorrt_backend(built, caplog):
    cfg_path = built.config_path
    if cuda.available():
        pytest.skip("covered by GPU runs with a supported GPU")
    # auto falls back to ONNX Runtime with the reason; tensorrt fails with the deserialization error.
    with caplog.at_level(logging.INFO, logger="rnnrt"):
        with rnnrt.load(cfg_path) as s:
            assert type(s.engine).__name__ == "OnnxRuntimeEngine"
    assert any("Using ONNX Runtime: no CUDA driver" in r.getMessage() for r in caplog.records)
    with pytest.raises(EngineError, match=r"could not deserialize it"):
        rnnrt.load(cfg_path, backend="tensorrt")
