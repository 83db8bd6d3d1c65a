"""rnnrt: stateful recurrent inference for TensorRT (and ONNX Runtime on CPU)."""

from rnnrt.errors import (
    BindingError,
    BuildError,
    ConfigError,
    CudaError,
    ModelImportError,
    PluginError,
    RnnrtError,
    StateError,
    UnsupportedOpError,
)

__version__ = "0.1.0"

__all__ = [
    "BindingError",
    "BuildError",
    "ConfigError",
    "CudaError",
    "ModelImportError",
    "PluginError",
    "RnnrtError",
    "StateError",
    "UnsupportedOpError",
    "__version__",
]
