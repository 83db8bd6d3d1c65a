"""rnnrt: stateful recurrent inference for TensorRT (and ONNX Runtime on CPU).

The public API: :func:`load` (a model YAML -> a ready :class:`Session`), :class:`Session`, :class:`StreamPool`
(many streams over one Session), :class:`StreamState` (one stream's snapshot),
:class:`StreamBatcher` (live streams' frames gathered into batched steps), :func:`convert`, :func:`build`,
:func:`verify` (the command line's three steps as functions) and the errors.

``import rnnrt`` stays light (no numpy, pydantic, yaml or onnx: `rnnrt --help` and tools that only need the
errors pay nothing for them). The runtime names are declared by explicit imports that type checkers and IDEs
read (the ``TYPE_CHECKING`` block below) and are imported on first use by the module ``__getattr__``.
"""

from rnnrt.errors import (
    BindingError,
    BuildError,
    ConfigError,
    CudaError,
    EngineError,
    EquivalenceError,
    ModelImportError,
    PluginError,
    QueueFullError,
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

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from rnnrt.runtime.batcher import StreamBatcher
    from rnnrt.runtime.pool import StreamPool
    from rnnrt.runtime.session import Session, load
    from rnnrt.runtime.snapshot import StreamState

__version__ = "0.1.0"

# name -> the module that defines it (the same names as the TYPE_CHECKING imports above).
_RUNTIME = {
    "load": "rnnrt.runtime.session",
    "Session": "rnnrt.runtime.session",
    "StreamPool": "rnnrt.runtime.pool",
    "StreamBatcher": "rnnrt.runtime.batcher",
    "StreamState": "rnnrt.runtime.snapshot",
}


def __getattr__(name: str):
    if name in _RUNTIME:
        import importlib

        value = getattr(importlib.import_module(_RUNTIME[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'rnnrt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_RUNTIME))


__all__ = [
    "BindingError",
    "BuildError",
    "ConfigError",
    "CudaError",
    "EngineError",
    "EquivalenceError",
    "ModelImportError",
    "PluginError",
    "QueueFullError",
    "RnnrtError",
    "Session",
    "SnapshotError",
    "StateError",
    "StreamBatcher",
    "StreamPool",
    "StreamState",
    "UnsupportedOpError",
    "__version__",
    "build",
    "convert",
    "load",
    "verify",
]
