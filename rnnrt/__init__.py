"""rnnrt: stateful recurrent inference for TensorRT (and ONNX Runtime on CPU).

The public API: :func:`load` (a model YAML -> a ready :class:`Session`), :class:`Session`, :class:`StreamPool`
(many streams over one Session), :class:`StreamState` (one stream's snapshot) and the errors. ``import rnnrt``
imports numpy and these modules only; the config (pydantic, yaml), onnx and the engines are imported when a
model is loaded.
"""

from rnnrt.errors import (
    BindingError,
    BuildError,
    ConfigError,
    CudaError,
    EngineError,
    ModelImportError,
    PluginError,
    RnnrtError,
    SnapshotError,
    StateError,
    UnsupportedOpError,
)
from rnnrt.runtime.pool import StreamPool
from rnnrt.runtime.session import Session, load
from rnnrt.runtime.snapshot import StreamState

__version__ = "0.1.0"

__all__ = [
    "BindingError",
    "BuildError",
    "ConfigError",
    "CudaError",
    "EngineError",
    "ModelImportError",
    "PluginError",
    "RnnrtError",
    "Session",
    "SnapshotError",
    "StateError",
    "StreamPool",
    "StreamState",
    "UnsupportedOpError",
    "__version__",
    "load",
]
