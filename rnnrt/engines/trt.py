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
from rnnrt.errors import BindingError, ConfigError, EngineError, StateError, fmt

__all__ = ["BaseDeviceEngine", "TrtEngine", "tensorrt_backend", "tensorrt_unavailable"]


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
        raise EngineError(
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
        host_code_allowed: bool = False,
    ) -> None:
        """
        Args:
            plan (str | os.PathLike | bytes): The plan file, or its bytes.
            flavour (str | Sequence[str] | None): The runtime module: ``"tensorrt"``, ``"tensorrt_rtx"``,
                ``"tensorrt_lean"``, ``"tensorrt_dispatch"``, a list of them (the first that imports is
                used), or None (``tensorrt`` if it imports, else ``tensorrt_rtx``). Defaults to None.
            runtime_cache (str | os.PathLike | None): TensorRT-RTX runtime cache file (kernels compiled for
                this GPU are kept there across processes). Defaults to None.
            name (str | None): Name for messages. Defaults to the class name.
            trt_module (Any): A TensorRT module object to use instead of importing one (tests). Defaults
                to None.
            host_code_allowed (bool): Let the runtime run the lean runtime a version-compatible plan
                carries (``IRuntime.engine_host_code_allowed``): only for plans you built or trust.
                Defaults to False.
        """
        super().__init__(name)
        self._plan = plan
        self.flavour = flavour
        self.runtime_cache = None if runtime_cache is None else str(runtime_cache)
        self.host_code_allowed = host_code_allowed
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
        trt = self._trt if self._trt is not None else _import_runtime(self.flavour)
        self._trt = trt
        module = f"{getattr(trt, '__name__', 'TensorRT')} {getattr(trt, '__version__', '')}".strip()
        self._runtime = trt_compat.create_runtime(trt, f"{self.name}: plan {what}")
        if self.host_code_allowed:
            self._runtime.engine_host_code_allowed = True
        with trt_compat.capture_log() as log:
            engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            self._runtime = None
            message = trt_compat.errors_in(log) or "no message"
            raise EngineError(
                fmt(f"{self.name}: plan {what}", f"{module} could not deserialize it: {message}",
                    "The plan must come from the same TensorRT flavour and version (or be built "
                    "--version-compatible for the lean/dispatch runtimes and later versions), for this GPU "
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
            raise EngineError(
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
            raise EngineError(
                fmt(f"{self.name}: plan {self.plan_description}", "execute_async_v3 failed: "
                    + (trt_compat.errors_in(log) or "no message"))
            )


def _import_runtime(flavour: Any) -> Any:
    from rnnrt import trt_compat

    if flavour is None or isinstance(flavour, str):
        return trt_compat.import_trt(flavour, purpose="run")
    names = list(flavour)
    installed = trt_compat.available_flavours(tuple(names))
    return trt_compat.import_trt(installed[0] if installed else names[0], purpose="run")


def tensorrt_unavailable(cfg: Any, plan: Optional[Union[str, os.PathLike]] = None,
                         config_path: Optional[Union[str, os.PathLike]] = None) -> Optional[str]:
    """Why the TensorRT backend cannot run this config here, or None if it can.

    Checks that a plan was built for the config (its manifest, :func:`rnnrt.ir.manifest.find_engine`),
    that the plan exists, that one of the runtime modules it needs is installed, and that a CUDA driver
    and GPU are usable (:func:`rnnrt.cuda.available`).
    """
    from rnnrt import cuda, trt_compat
    from rnnrt.ir.manifest import find_engine
    from rnnrt.errors import RnnrtError

    try:
        manifest = find_engine(cfg, plan, config_path)
    except RnnrtError as err:
        return str(err).splitlines()[0]
    if manifest is None:
        return "no TensorRT plan was built for the config (run `rnnrt build`)"
    try:
        plan_path = manifest.plan_path
    except RnnrtError as err:
        return str(err).splitlines()[0]
    if not plan_path.is_file():
        return f"the plan {str(plan_path)!r} does not exist"
    if not trt_compat.available_flavours(tuple(manifest.runtimes)):
        return f"none of the runtimes the plan needs is installed ({', '.join(manifest.runtimes)})"
    try:
        from cuda.bindings import runtime as _  # noqa: F401
    except ImportError:
        return "cuda-python is not installed"
    if not cuda.available():
        return "no CUDA driver or no usable CUDA GPU"
    return None


def tensorrt_backend(cfg: Any, plan: Optional[Union[str, os.PathLike]] = None, *,
                     config_path: Optional[Union[str, os.PathLike]] = None,
                     flavour: Optional[str] = None,
                     runtime_cache: Optional[Union[str, os.PathLike]] = None) -> tuple[Any, Any]:
    """The config and engine factory of a Session over the plan built for ``cfg``.

    The plan is found through its manifest (:func:`rnnrt.ir.manifest.find_engine`); the manifest
    says which runtime modules can load it, the binding dtypes it was built with (the returned config
    is re-typed to them) and the runtime cache beside it. A runtime cache anywhere else is used only
    when passed here (by the caller, at run time); a manifest or config cannot name one.

    Args:
        cfg (ModelConfig): The loaded config.
        plan (str | os.PathLike | None): The plan, when not the config's default (``model.plan``).
        config_path (str | os.PathLike | None): The YAML file ``cfg`` came from (finds ``<stem>.plan``).
        flavour (str | None): Force a runtime module (e.g. ``"tensorrt_lean"``). Defaults to the
            first installed of the manifest's runtimes.
        runtime_cache (str | os.PathLike | None): A TensorRT-RTX runtime cache file chosen at run time.

    Returns:
        tuple[ModelConfig, Callable[[], TrtEngine]]: For ``Session(config, factory, ...)``.

    Raises:
        ConfigError: No plan was built for the config, or its manifest is bad.
    """
    from rnnrt.ir.manifest import config_for_plan, find_engine

    manifest = find_engine(cfg, plan, config_path)
    if manifest is None:
        raise ConfigError(fmt("rnnrt.load", "The 'tensorrt' backend needs a plan but none was built for the config",
                              "Run `rnnrt build` first (it writes model.plan and its manifest model.plan.json), "
                              "pass plan=..., or use backend='onnxruntime'."))
    plan_path = manifest.plan_path
    cache = runtime_cache if runtime_cache is not None else manifest.runtime_cache_path
    recorded = getattr(getattr(cfg, "session", None), "runtime_cache", None)
    if recorded and manifest.path is not None and manifest.path.is_file():
        import logging

        logging.getLogger("rnnrt").warning(
            f"Config session.runtime_cache {recorded!r} | Ignored: the runtime cache is a build option recorded "
            "beside the plan (`rnnrt build --runtime-cache`), or a file passed at run time (runtime_cache=...).")
    runtimes: Any = flavour or manifest.runtimes
    host_code = manifest.version_compatible and not manifest.exclude_lean_runtime

    def factory() -> TrtEngine:
        return TrtEngine(plan_path, flavour=runtimes, runtime_cache=cache, host_code_allowed=host_code)

    return config_for_plan(cfg, manifest), factory
