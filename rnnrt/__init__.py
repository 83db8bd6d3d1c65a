"""rnnrt: stateful recurrent inference for TensorRT (and ONNX Runtime on CPU)."""

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

__version__ = "0.1.0"


def __getattr__(name: str):
    # `load` and `Session` pull in numpy, pydantic and onnx; import them on first use so that
    # `import rnnrt` (and `rnnrt --help`) stays fast.
    if name in ("load", "Session"):
        from rnnrt.runtime import session

        return getattr(session, name)
    if name in ("StreamPool", "StreamState"):
        from rnnrt.runtime import pool

        return getattr(pool, name)
    if name == "StreamBatcher":
        from rnnrt.runtime.batcher import StreamBatcher

        return StreamBatcher
    raise AttributeError(f"module 'rnnrt' has no attribute {name!r}")

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
    "StreamBatcher",
    "StreamPool",
    "StreamState",
    "UnsupportedOpError",
    "__version__",
    "load",
]
