"""Which engine runs a model: the one registry of backends and :func:`engine_for`.

Every place that turns a backend name into an engine goes through here: ``rnnrt.load`` (and so the
served model of ``rnnrt serve``), ``rnnrt verify``, the checks of ``rnnrt export-triton`` and the CLI's
``--backend`` choices (:func:`backend_names`).

Backends:

- ``onnxruntime``: :class:`~rnnrt.engines.onnxruntime.OnnxRuntimeEngine` over the config's ONNX graph.
  Options ``threads``, ``providers``, ``optimization`` (graph optimization level), ``graph="plan"`` (run
  the graph the plan was built from, e.g. its fp16 rewrite) with ``plan``.
- ``tensorrt``: :class:`~rnnrt.engines.trt.TrtEngine` over the plan built for the config, found through
  its manifest (:mod:`rnnrt.ir.manifest`). Options ``plan``, ``runtime`` (force a runtime module such
  as ``tensorrt_lean``), ``runtime_cache``.
- ``auto``: the config's ``session.backend``; when that is ``auto`` too, ``tensorrt`` when a plan, a
  runtime it needs and a GPU are usable, else ``onnxruntime`` (one log line says why).
- A third-party engine: an entry point of group ``rnnrt.engines`` (:data:`ENTRY_POINT_GROUP`), named by
  its entry-point name, or ``module.path:callable`` named directly. The callable is called as
  ``callable(config, **options)`` and returns an engine, a callable that makes one, or a pair
  ``(config, engine or factory)`` when the engine's bindings differ from the config's. Entry points are
  loaded only when named.

Nothing here imports onnx, TensorRT or the builder: a plan is found through its JSON manifest.

Example::

    from rnnrt.engines.select import backend_names, engine_for

    print(backend_names())                          # ['auto', 'onnxruntime', 'tensorrt', ...]
    choice = engine_for(cfg, "onnxruntime", threads=1)
    session = rnnrt.Session(choice.config, choice.engine)
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import numbers
import os
import warnings
from typing import Any, Callable, Optional, Union

from rnnrt.errors import ConfigError, fmt

G_LOGGER = logging.getLogger("rnnrt")

ENTRY_POINT_GROUP = "rnnrt.engines"
"""Entry-point group of third-party engines: ``name = "package.module:callable"``."""

_OLD_ENTRY_POINT_GROUP = "rnnrt.backends"  # what verify read before the registry; read with a warning

BUILTIN_BACKENDS = ("auto", "onnxruntime", "tensorrt")

_OPTIONS = {
    "onnxruntime": ("threads", "providers", "optimization", "graph", "plan"),
    "tensorrt": ("plan", "runtime", "runtime_cache"),
}

PathLike = Union[str, os.PathLike]

__all__ = ["BUILTIN_BACKENDS", "ENTRY_POINT_GROUP", "EngineChoice", "backend_names", "check_backend_name", "engine_for"]


@dataclasses.dataclass(frozen=True)
class EngineChoice:
    """The engine a backend name resolved to, ready for ``Session(choice.config, choice.engine)``.

    Args:
        backend (str): The backend that was chosen (``auto`` resolved).
        config (ModelConfig): The config the engine's bindings match (a plan built with fp16 I/O has
            its float bindings re-typed; otherwise the config that was passed).
        engine (Any): The engine, or a callable that makes one (made when the Session is made).
        precision (str): Compute precision of the engine (``fp32``, ``tf32``, ``fp16``, ``bf16``).
        note (str): What the engine runs, for reports (the plan's description, the rewritten graph).
    """

    backend: str
    config: Any
    engine: Any
    precision: str = "fp32"
    note: str = ""


def _entry_points(group: str) -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=group))


def backend_names() -> list[str]:
    """Every backend name ``engine_for`` accepts by name: the built-ins, then installed entry points (sorted).

    ``module.path:callable`` is accepted as well and is not listed.
    """
    installed = {ep.name for group in (ENTRY_POINT_GROUP, _OLD_ENTRY_POINT_GROUP) for ep in _entry_points(group)}
    return list(BUILTIN_BACKENDS) + sorted(installed - set(BUILTIN_BACKENDS))


def check_backend_name(backend: Any) -> str:
    """Returns ``backend`` when :func:`engine_for` can resolve it by name, else raises a ConfigError.

    A ``module.path:callable`` passes unchecked (it is imported only when an engine is made).
    """
    if isinstance(backend, str) and (backend in BUILTIN_BACKENDS or ":" in backend or backend in backend_names()):
        return backend
    raise _unknown(backend)


def _unknown(backend: Any) -> ConfigError:
    return ConfigError(fmt(f"Backend {backend!r}", "Is not known",
                           f"Use one of {backend_names()}, module.path:callable (an engine of your own), or install "
                           f"an engine under the {ENTRY_POINT_GROUP!r} entry-point group."))


def engine_for(config: Any, backend: str = "auto", *, config_path: Optional[PathLike] = None,
               rows: Optional[int] = None, **options: Any) -> EngineChoice:
    """Resolves a backend name to the engine that runs ``config``.

    Args:
        config (ModelConfig): The loaded config.
        backend (str): A name of :func:`backend_names` or ``module.path:callable``. Defaults to ``"auto"``.
        config_path (PathLike | None): The YAML file ``config`` came from (finds its ``<stem>.plan``).
        rows (int | None): The rows one step carries (the Session's batch size); ONNX Runtime chooses its
            thread count from the step's cost at that size when ``threads`` is None
            (:func:`rnnrt.engines.onnxruntime.choose_threads`). Defaults to None (one row).
        **options: The backend's options (see the module doc). Options of the other built-in backend
            are ignored (``rnnrt.load(..., threads=1)`` may end on TensorRT); a third-party engine's
            callable gets every option.

    Returns:
        EngineChoice: The engine (not made yet when it is a factory) and the config it matches.

    Raises:
        ConfigError: An unknown backend or option, a bad option value, no plan for ``tensorrt``, or a
            third-party callable that cannot be imported.
    """
    if not isinstance(backend, str) or not backend:
        raise _unknown(backend)
    if backend == "auto":
        backend = config.session.backend
    if backend == "auto":
        from rnnrt.engines.trt import tensorrt_unavailable

        why = tensorrt_unavailable(config, options.get("plan"), config_path)
        if why is not None:
            G_LOGGER.info(f"rnnrt.load | Using ONNX Runtime: {why}.")
        backend = "onnxruntime" if why is not None else "tensorrt"
    if backend in _OPTIONS:
        known = {name for names in _OPTIONS.values() for name in names}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(fmt(f"Backend {backend!r}", f"Has no option {unknown[0]!r}",
                                  f"Options: {list(_OPTIONS[backend])}."))
        options = {k: v for k, v in options.items() if k in _OPTIONS[backend]}
        if backend == "onnxruntime":
            return _onnxruntime(config, config_path, rows=rows, **options)
        return _tensorrt(config, config_path, **options)
    made = _third_party(backend)(config, **options)
    if isinstance(made, tuple) and len(made) == 2:
        return EngineChoice(backend, made[0], made[1])
    return EngineChoice(backend, config, made)


_FROM_CONFIG = object()  # threads not passed: the config's session.threads (None passed: chosen from the step's cost)


def _onnxruntime(config: Any, config_path: Optional[PathLike], threads: Any = _FROM_CONFIG, providers: Any = None,
                 optimization: Optional[str] = None, graph: Optional[str] = None,
                 plan: Optional[PathLike] = None, rows: Optional[int] = None) -> EngineChoice:
    from rnnrt.engines.onnxruntime import OnnxRuntimeEngine

    threads = config.session.threads if threads is _FROM_CONFIG else threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1):
        raise ConfigError(fmt("rnnrt.load", f"threads={threads!r} is not a positive integer",
                              "Pass the number of CPU threads, e.g. threads=1, or None to choose from the step's cost."))
    run_config, model, precision, note = config, config.model_path, "fp32", ""
    if graph is not None:
        from rnnrt.ir.manifest import config_for_plan, find_engine

        if graph != "plan":
            raise ConfigError(fmt(f"Backend 'onnxruntime' graph={graph!r}", "Is not known",
                                  "graph=plan runs the graph the plan was built from."))
        manifest = find_engine(config, plan, config_path)
        if manifest is None:
            raise ConfigError(fmt("Backend 'onnxruntime' graph=plan", "No plan was built for the config",
                                  "Run `rnnrt build`."))
        precision = manifest.precision
        if manifest.graph_path is not None:
            model = manifest.graph_path
            run_config = config_for_plan(config, manifest)
            note = f"graph {manifest.graph}"
    kwargs: dict[str, Any] = {"threads": threads, "rows": rows or 1}
    if providers is not None:
        kwargs["providers"] = providers
    if optimization is not None:
        kwargs["optimization"] = optimization

    def make() -> Any:
        return OnnxRuntimeEngine(model, **kwargs)

    return EngineChoice("onnxruntime", run_config, make, precision, note)


def _tensorrt(config: Any, config_path: Optional[PathLike], plan: Optional[PathLike] = None,
              runtime: Optional[str] = None, runtime_cache: Optional[PathLike] = None) -> EngineChoice:
    from rnnrt.engines.trt import tensorrt_backend
    from rnnrt.ir.manifest import find_engine

    trt_config, factory = tensorrt_backend(config, plan, config_path=config_path, flavour=runtime,
                                           runtime_cache=runtime_cache)
    manifest = find_engine(config, plan, config_path)  # not None: tensorrt_backend found it
    precision = "tf32" if manifest.precision == "fp32" and manifest.tf32 else manifest.precision
    return EngineChoice("tensorrt", trt_config, factory, precision, manifest.describe())


def _third_party(name: str) -> Callable[..., Any]:
    """The callable of a backend that is not built in: ``module.path:callable`` or an entry point."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(fmt(f"Backend {name!r}", f"Module {module_name!r} cannot be imported: {err}",
                                  f"Backends: {backend_names()}, or module.path:callable on the Python path.")) from err
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ConfigError(fmt(f"Backend {name!r}", f"Module {module_name!r} has no {attr!r}"))
        if not callable(obj):
            raise ConfigError(fmt(f"Backend {name!r}", f"{attr!r} is not callable"))
        return obj
    for group in (ENTRY_POINT_GROUP, _OLD_ENTRY_POINT_GROUP):
        for ep in _entry_points(group):
            if ep.name != name:
                continue
            if group == _OLD_ENTRY_POINT_GROUP:
                warnings.warn(f"Backend {name!r} | Is registered under the entry-point group {group!r}, which is "
                              f"deprecated; register it under {ENTRY_POINT_GROUP!r}.", FutureWarning, stacklevel=3)
            try:
                return ep.load()
            except Exception as err:  # a broken plugin: say which
                raise ConfigError(fmt(f"Backend {name!r}", f"Entry point {ep.value!r} failed to load: {err}")) from err
    raise _unknown(name)
