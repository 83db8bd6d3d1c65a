"""The TensorRT engine: runs a serialized plan on the GPU through the device-engine interface
(:class:`rnnrt.engines.base.BaseDeviceEngine`, re-exported here).

TensorRT is imported lazily through :mod:`rnnrt.trt_compat`; this module imports without it.

Example::

    from rnnrt.engines.trt import TrtEngine
    import rnnrt

    with rnnrt.Session("out/model.yaml", lambda: TrtEngine("out/model.plan")) as s:
        y = s.step(x)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from rnnrt.engines.base import BaseDeviceEngine, Binding, DeviceTensor
from rnnrt.errors import BindingError, BuildError, StateError, fmt

__all__ = ["BaseDeviceEngine", "TrtEngine"]


class _TrtContext:
    """An execution context plus the shapes and addresses last bound to it (to skip repeated calls)."""

    __slots__ = ("ctx", "shapes", "addresses")

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}


def _read_plan(plan: Union[str, os.PathLike, bytes]) -> tuple[bytes, str]:
    if isinstance(plan, (bytes, bytearray, memoryview)):
        return bytes(plan), f"<{len(plan)} bytes>"
    path = Path(plan)
    try:
        return path.read_bytes(), repr(str(path))
    except OSError as err:
        raise BuildError(
            fmt(f"Plan {str(path)!r}", f"Cannot be read: {err.strerror}", "Run `rnnrt build` to create it.")
        ) from err


class TrtEngine(BaseDeviceEngine):
    """Runs a serialized TensorRT plan (``tensorrt`` or ``tensorrt_rtx``) on the GPU.

    One :class:`TrtEngine` holds the deserialized ``ICudaEngine``; each Session gets its own execution
    context (:meth:`create_context`), binds every tensor by name (``set_tensor_address``), sets the
    dynamic batch (``set_input_shape``) and calls ``execute_async_v3`` on its own stream.

    Example::

        with TrtEngine("model.plan") as engine:
            print([b.name for b in engine.input_bindings()])
    """

    def __init__(
        self,
        plan: Union[str, os.PathLike, bytes],
        flavour: Optional[str] = None,
        runtime_cache: Optional[Union[str, os.PathLike]] = None,
        name: Optional[str] = None,
        trt_module: Any = None,
    ) -> None:
        """
        Args:
            plan (str | os.PathLike | bytes): The plan file, or its bytes.
            flavour (str | None): ``"tensorrt"``, ``"tensorrt_rtx"`` or None (``tensorrt`` if it imports,
                else ``tensorrt_rtx``). Defaults to None.
            runtime_cache (str | os.PathLike | None): TensorRT-RTX runtime cache file (kernels compiled for
                this GPU are kept there across processes). Defaults to None.
            name (str | None): Name for messages. Defaults to the class name.
            trt_module (Any): A TensorRT module object to use instead of importing one (tests). Defaults
                to None.
        """
        super().__init__(name)
        self._plan = plan
        self.flavour = flavour
        self.runtime_cache = None if runtime_cache is None else str(runtime_cache)
        self._trt = trt_module
        self._runtime: Any = None
        self._engine: Any = None
        self._runtime_config: Any = None
        self._inputs: list[Binding] = []
        self._outputs: list[Binding] = []

    @property
    def plan_description(self) -> str:
        return f"<{len(self._plan)} bytes>" if isinstance(self._plan, (bytes, bytearray)) else repr(str(self._plan))

    def activate_impl(self) -> None:
        from rnnrt import trt_compat

        data, what = _read_plan(self._plan)
        trt = self._trt if self._trt is not None else trt_compat.import_trt(self.flavour)
        self._trt = trt
        with trt_compat.capture_log() as log:
            self._runtime = trt.Runtime(trt_compat.get_logger(trt))
            engine = self._runtime.deserialize_cuda_engine(data) if self._runtime is not None else None
        if engine is None:
            self._runtime = None
            message = trt_compat.errors_in(log) or "no message"
            raise BuildError(
                fmt(f"{self.name}: plan {what}", f"{getattr(trt, '__name__', 'TensorRT')} could not deserialize it: "
                    f"{message}",
                    "The plan must come from the same TensorRT flavour and version, for this GPU "
                    "(TensorRT-RTX plans do not run on Hopper, sm90; a driver and a GPU are needed).")
            )
        self._engine = engine
        self._runtime_config = trt_compat.runtime_config(trt, engine, self.runtime_cache)
        self._inputs, self._outputs = [], []
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(tname)))
            shape = tuple(int(d) for d in engine.get_tensor_shape(tname))
            binding = Binding(tname, dtype, shape)
            if engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT:
                self._inputs.append(binding)
            else:
                self._outputs.append(binding)

    def deactivate_impl(self) -> None:
        if self._runtime_config is not None and self.runtime_cache is not None:
            from rnnrt import trt_compat

            trt_compat.save_runtime_cache(self._runtime_config, self.runtime_cache)
        self._runtime_config = None
        self._engine = None
        self._runtime = None

    def input_bindings_impl(self) -> list[Binding]:
        return list(self._inputs)

    def output_bindings_impl(self) -> list[Binding]:
        return list(self._outputs)

    def create_context_impl(self) -> _TrtContext:
        from rnnrt import trt_compat

        with trt_compat.capture_log() as log:
            if self._runtime_config is not None:
                ctx = self._engine.create_execution_context(self._runtime_config)
            else:
                ctx = self._engine.create_execution_context()
        if ctx is None:
            raise StateError(
                fmt(f"{self.name}: plan {self.plan_description}", "Could not create an execution context: "
                    + (trt_compat.errors_in(log) or "no message"))
            )
        return _TrtContext(ctx)

    def destroy_context_impl(self, context: _TrtContext) -> None:
        context.ctx = None
        context.shapes.clear()
        context.addresses.clear()

    def _set_shapes(self, context: _TrtContext, shapes: Mapping[str, Sequence[int]]) -> None:
        ctx = context.ctx
        for b in self._inputs:
            shape = tuple(int(d) for d in shapes[b.name])
            if context.shapes.get(b.name) != shape:
                if -1 in b.shape and not ctx.set_input_shape(b.name, shape):
                    raise BindingError(
                        fmt(f"Input {b.name!r}", f"TensorRT rejected shape {shape}",
                            f"The plan's shape is {b.shape}; the batch must be inside its optimization profile.")
                    )
                context.shapes[b.name] = shape

    def output_shapes_impl(self, context: _TrtContext, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        self._set_shapes(context, input_shapes)
        return {b.name: tuple(int(d) for d in context.ctx.get_tensor_shape(b.name)) for b in self._outputs}

    def enqueue_impl(self, context: _TrtContext, feeds: Mapping[str, DeviceTensor],
                     outputs: Mapping[str, DeviceTensor], stream: int) -> None:
        from rnnrt import trt_compat

        ctx = context.ctx
        if ctx is None:
            raise StateError(fmt(f"{self.name}", "enqueue() got a destroyed context"))
        self._set_shapes(context, {name: t.shape for name, t in feeds.items()})
        known = context.addresses
        for tensors in (feeds, outputs):
            for tname, t in tensors.items():
                if known.get(tname) != t.ptr:
                    if not ctx.set_tensor_address(tname, t.ptr):
                        raise BindingError(fmt(f"Tensor {tname!r}", f"TensorRT rejected address {t.ptr:#x}"))
                    known[tname] = t.ptr
        with trt_compat.capture_log() as log:
            ok = ctx.execute_async_v3(stream)
        if not ok:
            raise StateError(
                fmt(f"{self.name}: plan {self.plan_description}", "execute_async_v3 failed: "
                    + (trt_compat.errors_in(log) or "no message"))
            )
