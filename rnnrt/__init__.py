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
# The three steps of the command line as functions (heavy imports wait for the call). `rnnrt.build` is the
# function: reach the subpackage with `from rnnrt.build import ...`, not `import rnnrt.build.x as y`.
from rnnrt.build.api import build
from rnnrt.importers.api import convert
from rnnrt.runtime.verify_api import verify

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
    "StreamPool",
    "StreamState",
    "UnsupportedOpError",
    "__version__",
    "build",
    "convert",
    "load",
    "verify",
]
