"""Engines: run one step graph call on a backend (ONNX Runtime on CPU, TensorRT on the GPU)."""

from rnnrt.engines.base import BaseDeviceEngine, BaseEngine, Binding, DeviceTensor, invoke_if_callable
from rnnrt.engines.onnxruntime import OnnxRuntimeEngine

__all__ = ["BaseDeviceEngine", "BaseEngine", "Binding", "DeviceTensor", "OnnxRuntimeEngine", "invoke_if_callable"]
