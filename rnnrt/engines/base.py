"""The engine interface every backend implements (ONNX Runtime on CPU, TensorRT on the GPU).

An engine runs the step graph once per call and knows nothing about recurrent state: the one
:class:`rnnrt.runtime.session.Session` owns state, ``step`` and ``reset`` for every engine.

Memory spaces: an engine declares :attr:`BaseEngine.memory`. A ``"host"`` engine takes and returns
numpy arrays. A ``"device"`` engine takes :class:`DeviceTensor` views (a raw device pointer with
dtype and shape) for its inputs and writes its outputs into the ``DeviceTensor`` destinations the
caller passes in ``outputs``. The Session picks an executor that matches ``memory``.

A device engine (:class:`BaseDeviceEngine`) reads its inputs from and writes its outputs to device
memory the caller owns, and only *enqueues* work on the caller's CUDA stream. Per-caller state (a
TensorRT execution context, the tensor addresses bound to it) lives in a *context* object, so that
several Sessions can share one engine: each Session calls :meth:`BaseDeviceEngine.create_context`
once and passes that context to every :meth:`BaseDeviceEngine.enqueue`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import sys
import warnings
from typing import Any, Mapping, Optional

import numpy as np

from rnnrt.errors import BindingError, StateError, fmt
from rnnrt.ir.bindings import Dim

G_LOGGER = logging.getLogger("rnnrt")


@dataclasses.dataclass(frozen=True)
class Binding:
    """An input or output tensor of an engine.

    Args:
        name (str): Tensor name.
        dtype (np.dtype): Element type.
        shape (tuple[int | str, ...]): Shape as the engine reports it; a dynamic dim is its name
            (a string) or -1 when it has none.
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]


@dataclasses.dataclass(frozen=True)
class DeviceTensor:
    """A tensor in device memory, as a device engine takes it.

    Args:
        ptr (int): Device address of the first element.
        dtype (np.dtype): Element type.
        shape (tuple[int, ...]): Shape (C-contiguous).
    """

    ptr: int
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class BaseEngine(abc.ABC):
    """Runs a step graph; subclasses override only the ``*_impl`` methods.

    Use as a context manager, or call :meth:`activate` and :meth:`deactivate`::

        with OnnxRuntimeEngine("model.onnx") as engine:
            outs = engine.execute({"x": x})
    """

    memory: str = "host"
    """Where :meth:`execute` expects its tensors: ``"host"`` (numpy) or ``"device"`` (DeviceTensor)."""

    def __init__(self, name: Optional[str] = None) -> None:
        """
        Args:
            name (str | None): A name for log and error messages. Defaults to the class name.
        """
        self.name = name or type(self).__name__
        self.is_active = False
        self._was_activated = False

    # Public template methods.
    def activate(self) -> None:
        """Loads the model and allocates what :meth:`execute` needs. Activating twice only warns."""
        if self.is_active:
            G_LOGGER.warning(f"{self.name:35} | Already active; will not activate again.")
            return
        self.activate_impl()
        self.is_active = True
        self._was_activated = True

    def deactivate(self) -> None:
        """Frees what :meth:`activate` allocated. Deactivating an inactive engine only warns."""
        if not self.is_active:
            G_LOGGER.warning(f"{self.name:35} | Not active; will not deactivate.")
            return
        try:
            self.deactivate_impl()
        finally:
            self.is_active = False

    def input_bindings(self) -> list[Binding]:
        """The engine's inputs (state inputs included), in graph order."""
        self._require_active("input_bindings")
        return self.input_bindings_impl()

    def output_bindings(self) -> list[Binding]:
        """The engine's outputs (state outputs included), in graph order."""
        self._require_active("output_bindings")
        return self.output_bindings_impl()

    def execute(self, feeds: Mapping[str, Any], outputs: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        """Runs the graph once.

        Args:
            feeds (Mapping[str, Any]): One tensor per input binding (numpy arrays for a host engine,
                :class:`DeviceTensor` for a device engine). Shapes and dtypes are trusted; the Session
                checks them.
            outputs (Mapping[str, Any] | None): Destinations for some outputs, in the engine's memory
                space; the engine writes those outputs there. Defaults to None (all outputs returned
                in fresh buffers).

        Returns:
            dict[str, Any]: Every output binding by name; those given in ``outputs`` map to their
            destination.

        Raises:
            StateError: The engine is not active.
            BindingError: The backend rejected a feed.
        """
        self._require_active("execute")
        return self.execute_impl(feeds, outputs or {})

    # Hooks.
    @abc.abstractmethod
    def activate_impl(self) -> None:
        """Loads the model and allocates resources."""

    @abc.abstractmethod
    def deactivate_impl(self) -> None:
        """Frees what activate_impl allocated."""

    @abc.abstractmethod
    def input_bindings_impl(self) -> list[Binding]:
        """See input_bindings."""

    @abc.abstractmethod
    def output_bindings_impl(self) -> list[Binding]:
        """See output_bindings."""

    @abc.abstractmethod
    def execute_impl(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        """See execute."""

    # Plumbing.
    def _require_active(self, what: str) -> None:
        if not self.is_active:
            raise StateError(
                fmt(f"{self.name}", f"{what}() was called on an inactive engine", "Must be activated first: "
                    "use `with engine:` or call activate().")
            )

    def __enter__(self) -> "BaseEngine":
        self.activate()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.deactivate()

    def __del__(self) -> None:
        # __del__ must not raise; a warning is all we can do. At interpreter exit module globals
        # (warnings among them) may already be gone: then there is nobody left to warn.
        if getattr(self, "is_active", False) and not sys.is_finalizing():
            try:
                warnings.warn(
                    f"{getattr(self, 'name', type(self).__name__)} | Was activated but never deactivated. "
                    "This could cause a memory leak!",
                    ResourceWarning,
                    stacklevel=2,
                )
            except Exception:  # noqa: BLE001 - a half torn-down interpreter
                pass


class BaseDeviceEngine(BaseEngine):
    """An engine that enqueues work on a CUDA stream over caller-owned device buffers.

    Subclasses override ``activate_impl``, ``deactivate_impl``, ``input_bindings_impl``,
    ``output_bindings_impl``, ``create_context_impl``, ``destroy_context_impl``, ``enqueue_impl``
    and ``output_shapes_impl``.
    """

    memory = "device"

    capturable: bool = True
    """Whether :meth:`enqueue` may be captured into a CUDA graph. A Session still falls back to plain
    enqueues when a capture fails."""

    def create_context(self) -> Any:
        """Per-caller execution state (e.g. a TensorRT execution context)."""
        self._require_active("create_context")
        return self.create_context_impl()

    def destroy_context(self, context: Any) -> None:
        """Frees what :meth:`create_context` made. Safe after :meth:`deactivate`."""
        if context is not None:
            self.destroy_context_impl(context)

    def output_shapes(self, context: Any, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """The shape of every output for the given shape of every input."""
        self._require_active("output_shapes")
        return self.output_shapes_impl(context, input_shapes)

    def enqueue(self, context: Any, feeds: Mapping[str, DeviceTensor], outputs: Mapping[str, DeviceTensor],
                stream: int) -> None:
        """Enqueues one run on ``stream``; returns without waiting.

        Args:
            context (Any): From :meth:`create_context`.
            feeds (Mapping[str, DeviceTensor]): Every input binding.
            outputs (Mapping[str, DeviceTensor]): Every output binding's destination.
            stream (int): CUDA stream handle.

        Raises:
            StateError: The engine is inactive.
            EngineError: The backend refused to enqueue.
            BindingError: The backend rejected a tensor's shape or address.
        """
        self._require_active("enqueue")
        self.enqueue_impl(context, feeds, outputs, stream)

    def execute_impl(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        # The generic, synchronous path: caller-owned destinations for every output, a private context.
        from rnnrt import cuda  # a later-loaded leaf module: engines do not import the runtime

        missing = [b.name for b in self.output_bindings_impl() if b.name not in outputs]
        if missing:
            raise BindingError(
                fmt(f"{self.name}", f"No destination for outputs {missing}",
                    "A device engine writes into caller-owned DeviceTensors: pass one per output.")
            )
        context = self.create_context_impl()
        stream = cuda.Stream()
        try:
            self.enqueue_impl(context, feeds, outputs, stream.handle)
            stream.synchronize()
        finally:
            stream.destroy()
            self.destroy_context_impl(context)
        return dict(outputs)

    @abc.abstractmethod
    def create_context_impl(self) -> Any:
        """See create_context."""

    @abc.abstractmethod
    def destroy_context_impl(self, context: Any) -> None:
        """See destroy_context."""

    @abc.abstractmethod
    def output_shapes_impl(self, context: Any, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """See output_shapes."""

    @abc.abstractmethod
    def enqueue_impl(self, context: Any, feeds: Mapping[str, DeviceTensor], outputs: Mapping[str, DeviceTensor],
                     stream: int) -> None:
        """See enqueue."""


def invoke_if_callable(obj: Any) -> tuple[Any, bool]:
    """Calls ``obj`` if it is a factory; returns ``(result, created)``."""
    if callable(obj) and not isinstance(obj, BaseEngine):
        return obj(), True
    return obj, False
