"""Engines: run one step graph call on a backend (ONNX Runtime on CPU, TensorRT on the GPU, or your own).

``base.py`` is the engine interface, ``onnxruntime.py`` and ``trt.py`` the built-in engines, and ``select.py`` the
one registry of backends (``engine_for``, ``backend_names``; third-party engines through the ``rnnrt.engines``
entry-point group).
"""

from rnnrt.engines.base import BaseDeviceEngine, BaseEngine, Binding, DeviceTensor, invoke_if_callable
from rnnrt.engines.onnxruntime import OnnxRuntimeEngine

__all__ = ["BaseDeviceEngine", "BaseEngine", "Binding", "DeviceTensor", "OnnxRuntimeEngine", "invoke_if_callable"]
