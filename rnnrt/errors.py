"""The one error hierarchy of rnnrt.

Every error a user can cause derives from :class:`RnnrtError`. Messages follow the shape
``<subject> | <what happened>.\\nNote: <expected or hint>``. A broken internal invariant is a bug
and is raised as :class:`RnnrtInternalError`, which is deliberately *not* an ``RnnrtError``.
"""

from __future__ import annotations


class RnnrtError(Exception):
    """Root of every error a user of rnnrt can cause."""


class ConfigError(RnnrtError, ValueError):
    """A YAML config is malformed or refers to something the model lacks."""


class ModelImportError(RnnrtError):
    """A Caffe or ONNX model cannot be read or converted."""


class UnsupportedOpError(RnnrtError, NotImplementedError):
    """A layer type, op or feature of a layer is not supported."""


class EquivalenceError(ModelImportError):
    """The convert-time check found the step graph computing something else than the original model."""


class PluginError(ModelImportError):
    """A layer plugin failed to load or registered something twice."""


class BuildError(RnnrtError):
    """TensorRT could not parse or build the step graph."""


class StateError(RnnrtError):
    """A Session or StreamPool was used in a way its state does not allow (closed, full, unknown stream)."""


class QueueFullError(StateError):
    """A StreamBatcher's bounded queue is full: the frame was not queued (back off, or shed the stream)."""


class EngineError(RnnrtError, RuntimeError):
    """An engine failed to load (a plan TensorRT cannot deserialize) or to execute a step."""


class SnapshotError(RnnrtError, ValueError):
    """Snapshot bytes (a serialized StreamState) are corrupt or truncated, or a StreamState is malformed.

    A well-formed snapshot that belongs to another model (other state names, shapes or dtypes, another
    model file) is refused by ``StreamPool.restore`` with a :class:`StateError`: the bytes are fine, the
    pool cannot take them.
    """


class BindingError(RnnrtError, ValueError):
    """A frame does not match the binding it is fed to (name, shape, dtype or memory space)."""


class OutputError(RnnrtError):
    """An output file cannot be written safely: a symbolic link or a special file is in its place."""


class CudaError(RnnrtError, RuntimeError):
    """A CUDA runtime call failed; carries the CUDA error name."""

    def __init__(self, message: str, error_name: str = "") -> None:
        super().__init__(message)
        self.error_name = error_name


class RnnrtInternalError(Exception):
    """A broken internal invariant: a bug in rnnrt, not a user error."""


def fmt(subject: str, what: str, note: str | None = None) -> str:
    """Formats an error message as ``<subject> | <what>.\\nNote: <note>``."""
    msg = f"{subject} | {what}"
    if not msg.endswith("."):
        msg += "."
    if note:
        msg += f"\nNote: {note}"
    return msg
