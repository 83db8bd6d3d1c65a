"""One place that imports TensorRT lazily and hides the differences between its flavours.

Two Python modules can build and run rnnrt engines:

- ``tensorrt``: TensorRT 10 or 11, what users install on their GPU machines.
- ``tensorrt_rtx``: TensorRT for RTX. Its builder also works on a machine without a GPU, which is
  how CI proves that every step graph is a valid TensorRT network.

Two more only run engines (no builder): ``tensorrt_lean`` (TensorRT's lean runtime, pip
``tensorrt-lean-cu12``) and ``tensorrt_dispatch`` (the dispatch runtime, which loads the lean runtime
a plan carries). Both run plans built *version-compatible* by ``tensorrt`` (``rnnrt build
--version-compatible``); see :data:`RUNTIMES` and :func:`runtimes_for`.

Both are strongly typed here (precision comes from the ONNX dtypes, see :mod:`rnnrt.build.precision`).
TensorRT keeps one logger per process; :func:`get_logger` makes that one logger and routes it to
Python :mod:`logging` (logger ``rnnrt.trt``).

Example::

    from rnnrt import trt_compat

    trt = trt_compat.import_trt()            # tensorrt if importable, else tensorrt_rtx
    builder = trt.Builder(trt_compat.get_logger(trt))
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from rnnrt.errors import BuildError, EngineError, fmt

G_LOGGER = logging.getLogger("rnnrt.trt")

FLAVOURS = ("tensorrt", "tensorrt_rtx")
"""Modules that can build plans, in the order ``auto`` tries them."""

RUNTIMES = ("tensorrt", "tensorrt_rtx", "tensorrt_lean", "tensorrt_dispatch")
"""Modules that can run plans (:class:`rnnrt.engines.trt.TrtEngine`)."""

# Below DEBUG: TensorRT's VERBOSE output is very chatty (every tactic, every pass).
VERBOSE = 5
logging.addLevelName(VERBOSE, "VERBOSE")

INSTALL_HINT = (
    "Install a TensorRT Python module: `pip install tensorrt` (TensorRT 10/11, NVIDIA GPUs from Turing on, "
    "Hopper included) or `pip install tensorrt-rtx` (TensorRT for RTX; its builder also works without a GPU, "
    "its engines run on RTX/Ampere/Ada/Blackwell GPUs but not on Hopper)."
)

_LOCK = threading.Lock()
_LOGGERS: dict[str, Any] = {}
_CAPTURES: list[list[tuple[str, str]]] = []


def available_flavours(names: tuple[str, ...] = FLAVOURS) -> list[str]:
    """Names of the TensorRT modules that are installed (without importing them)."""
    found = []
    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except (ImportError, ValueError):
            continue
    return found


def import_trt(module: str | None = None, purpose: str = "build") -> ModuleType:
    """Imports a TensorRT Python module.

    Args:
        module (str | None): A name of :data:`RUNTIMES` (``"tensorrt_lean"``/``"tensorrt_dispatch"``
            only for ``purpose="run"``), or None/``"auto"`` to take ``tensorrt`` if it imports and
            ``tensorrt_rtx`` otherwise. Defaults to None.
        purpose (str): ``"build"`` (the module needs a builder) or ``"run"``. Defaults to ``"build"``.

    Returns:
        ModuleType: The module.

    Raises:
        BuildError: (``purpose="build"``) the module is unknown, has no builder, or no TensorRT module
            can be imported (the message says how to install one).
        EngineError: The same for ``purpose="run"``.
    """
    error = BuildError if purpose == "build" else EngineError
    known = FLAVOURS if purpose == "build" else RUNTIMES
    if module in (None, "auto"):
        names = list(FLAVOURS)
    elif module in known:
        names = [module]
    elif module in RUNTIMES:
        raise error(fmt(f"TensorRT module {module!r}", "Is a runtime without a builder",
                        f"Build with one of {list(FLAVOURS)}; {module} runs version-compatible plans."))
    else:
        raise error(fmt(f"TensorRT module {module!r}", "Is not known", f"Expected one of {list(known)} or 'auto'."))
    failures = []
    for name in names:
        try:
            return importlib.import_module(name)
        except (ImportError, OSError) as err:  # OSError: a module whose shared libraries are missing
            failures.append(f"{name}: {err}")
    raise error(
        fmt(
            "TensorRT",
            f"No TensorRT Python module could be imported ({'; '.join(failures)})",
            INSTALL_HINT,
        )
    )


def flavour_of(trt: ModuleType) -> str:
    """Which of :data:`RUNTIMES` a module returned by :func:`import_trt` is (``"tensorrt"`` if none)."""
    name = str(getattr(trt, "__name__", "tensorrt")).split(".")[0]
    for flavour in ("tensorrt_rtx", "tensorrt_lean", "tensorrt_dispatch"):
        if name.startswith(flavour):
            return flavour
    return "tensorrt"


def has_builder(trt: ModuleType) -> bool:
    """Whether ``trt`` can build plans (``tensorrt``, ``tensorrt_rtx``; not the lean/dispatch runtimes)."""
    return hasattr(trt, "Builder")


def runtimes_for(flavour: str, version_compatible: bool = False) -> list[str]:
    """The runtime modules that can deserialize a plan built by ``flavour``, most capable first.

    A plan runs on the TensorRT flavour and version that built it. A version-compatible plan (``tensorrt``
    only) also runs on later TensorRT versions, on the dispatch runtime and on the lean runtime.
    """
    if flavour == "tensorrt_rtx":
        return ["tensorrt_rtx"]
    return ["tensorrt", "tensorrt_dispatch", "tensorrt_lean"] if version_compatible else ["tensorrt"]


def version_compatible_flags(trt: ModuleType, exclude_lean_runtime: bool = False) -> list[Any]:
    """The ``BuilderFlag`` members of a version-compatible build (``rnnrt build --version-compatible``).

    Raises:
        BuildError: The flavour cannot build version-compatible plans (TensorRT-RTX: its engines are not
            compatible across releases and it ships no lean runtime to embed), or the module lacks the flags.
    """
    if is_rtx(trt):
        raise BuildError(
            fmt(
                "--version-compatible",
                f"{flavour_of(trt)} {trt.__version__} cannot build version-compatible plans: TensorRT-RTX engines "
                "only run on the TensorRT-RTX release that built them and it ships no lean runtime to embed",
                "Build with TensorRT 10/11 (`--trt-module tensorrt`, `pip install tensorrt`), or drop the flag.",
            )
        )
    members = getattr(getattr(trt, "BuilderFlag", None), "__members__", {})
    wanted = ["VERSION_COMPATIBLE"] + (["EXCLUDE_LEAN_RUNTIME"] if exclude_lean_runtime else [])
    missing = [w for w in wanted if w not in members]
    if missing:
        raise BuildError(fmt("--version-compatible", f"{flavour_of(trt)} {trt.__version__} has no BuilderFlag {missing[0]}",
                             "Version compatibility needs TensorRT 8.6 or later."))
    return [members[w] for w in wanted]


def is_rtx(trt: ModuleType) -> bool:
    """Whether ``trt`` is TensorRT for RTX."""
    return flavour_of(trt) == "tensorrt_rtx"


def major_version(trt: ModuleType) -> int:
    """The major version of ``trt`` (TensorRT-RTX: its own numbering, e.g. 1)."""
    return int(str(trt.__version__).split(".")[0])


def _severity_level(trt: ModuleType, severity: Any) -> int:
    sev = trt.ILogger.Severity
    return {
        sev.INTERNAL_ERROR: logging.CRITICAL,
        sev.ERROR: logging.ERROR,
        sev.WARNING: logging.WARNING,
        # TensorRT's INFO lines are build statistics; keep them out of the default -v output.
        sev.INFO: logging.DEBUG,
        sev.VERBOSE: VERBOSE,
    }.get(severity, logging.DEBUG)


def get_logger(trt: ModuleType) -> Any:
    """The one ``trt.ILogger`` of this process for module ``trt``, routed to Python logging.

    TensorRT registers the first logger it is given and warns about every different one after that, so
    every Builder, OnnxParser and Runtime of rnnrt must use this object.

    Args:
        trt (ModuleType): A module returned by :func:`import_trt`.

    Returns:
        trt.ILogger: The logger (created on first use, then cached).
    """
    with _LOCK:
        logger = _LOGGERS.get(trt.__name__)
        if logger is not None:
            return logger

        class _PythonLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                level = _severity_level(trt, severity)
                if _CAPTURES:
                    entry = (logging.getLevelName(level), str(msg))
                    for captured in list(_CAPTURES):
                        captured.append(entry)
                if G_LOGGER.isEnabledFor(level):
                    G_LOGGER.log(level, "%s", msg)

        logger = _PythonLogger()
        _LOGGERS[trt.__name__] = logger
        return logger


@contextlib.contextmanager
def capture_log() -> Iterator[list[tuple[str, str]]]:
    """Collects every TensorRT log message (``(level name, text)``) logged inside the ``with`` block.

    Used to put TensorRT's own error text into rnnrt errors and to read build-time layer lines.
    """
    captured: list[tuple[str, str]] = []
    with _LOCK:
        _CAPTURES.append(captured)
    try:
        yield captured
    finally:
        with _LOCK:
            _CAPTURES.remove(captured)


def errors_in(captured: list[tuple[str, str]]) -> str:
    """The ERROR/CRITICAL messages of a :func:`capture_log` list, joined into one string."""
    return "\n".join(msg for level, msg in captured if level in ("ERROR", "CRITICAL"))


def create_runtime(trt: ModuleType, subject: str) -> Any:
    """``trt.Runtime`` with rnnrt's logger, checked: TensorRT's error instead of a dead runtime.

    Without a usable CUDA driver the lean runtime (11.4, 10.16) logs ``createInferRuntime: ... CUDA
    initialization failure`` and hands back a Runtime object around a null pointer: calling
    ``deserialize_cuda_engine`` on it, or merely destroying it, crashes the process (segfault). This
    raises instead, and keeps such a dead object alive for good (one leaked wrapper per failure) so
    that its destructor never runs.

    Raises:
        EngineError: TensorRT logged an error while creating the runtime, or returned None; the message
            names ``subject`` (e.g. the plan) and carries TensorRT's text.
    """
    with capture_log() as log:
        runtime = trt.Runtime(get_logger(trt))
    errors = errors_in(log)
    if runtime is not None and errors:
        _never_destroy(runtime)
    if runtime is None or errors:
        raise EngineError(
            fmt(subject, f"{getattr(trt, '__name__', 'TensorRT')} {getattr(trt, '__version__', '')} could not create a "
                f"runtime: {errors or 'no message'}",
                "Running a plan needs an NVIDIA GPU and a CUDA driver that the TensorRT runtime supports.")
        )
    return runtime


def _never_destroy(obj: Any) -> None:
    """One extra reference the interpreter never releases (not even at exit): TensorRT's dead Runtime
    objects crash in their destructor."""
    import ctypes

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def network_flags(trt: ModuleType) -> int:
    """Creation flags of a strongly typed network (TensorRT 10 needs the flag; RTX and 11 always are)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def compute_capability(trt: ModuleType, target: str) -> Any:
    """Maps ``"sm86"`` / ``"86"`` / ``"8.6"`` to ``trt.ComputeCapability.SM86`` (TensorRT-RTX only).

    Raises:
        BuildError: The flavour has no compute-capability targets, or the target is not one of them.
    """
    enum = getattr(trt, "ComputeCapability", None)
    if enum is None:
        raise BuildError(
            fmt(
                f"Target {target!r}",
                f"{flavour_of(trt)} {trt.__version__} has no compute-capability targets",
                "--target is a TensorRT-RTX option; TensorRT builds for the GPU it runs on.",
            )
        )
    key = target.strip().lower().replace(".", "")
    key = key[2:] if key.startswith("sm") else key
    names = [n for n in enum.__members__ if n.startswith("SM")]
    member = enum.__members__.get(f"SM{key}") if key not in ("current",) else enum.__members__.get("CURRENT")
    if member is None:
        raise BuildError(
            fmt(
                f"Target {target!r}",
                f"Is not a compute capability {flavour_of(trt)} {trt.__version__} can build for",
                f"Expected one of {[n.lower() for n in names]} (Hopper, sm90, is not a TensorRT-RTX target).",
            )
        )
    return member


def runtime_config(trt: ModuleType, engine: Any, cache_path: str | None = None) -> Any:
    """An ``IRuntimeConfig`` for ``engine`` that uses the TensorRT-RTX runtime cache at ``cache_path``.

    TensorRT-RTX compiles kernels for the actual GPU when an execution context is created; the runtime
    cache keeps them across processes. For the ``tensorrt`` flavour, or when ``cache_path`` is None, this
    returns None and the caller creates its context the ordinary way.

    Args:
        trt (ModuleType): The TensorRT module.
        engine (trt.ICudaEngine): The deserialized engine.
        cache_path (str | None): File to load the cache from (if it exists). Defaults to None.

    Returns:
        trt.IRuntimeConfig | None: Pass it to ``engine.create_execution_context(config)``.
    """
    if cache_path is None or not is_rtx(trt):
        return None
    import os

    config = engine.create_runtime_config()
    cache = config.create_runtime_cache()
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            data = f.read()
        if data and not cache.deserialize(data):
            G_LOGGER.warning("Runtime cache %r | Could not be loaded; starting with an empty cache.", cache_path)
    if not config.set_runtime_cache(cache):
        raise EngineError(fmt(f"Runtime cache {cache_path!r}", "TensorRT-RTX did not accept it"))
    return config


def save_runtime_cache(config: Any, cache_path: str) -> None:
    """Writes the runtime cache of an ``IRuntimeConfig`` made by :func:`runtime_config` to ``cache_path``."""
    cache = config.get_runtime_cache()
    if cache is None:
        return
    data = cache.serialize()
    if data is None:
        raise EngineError(fmt(f"Runtime cache {cache_path!r}", "TensorRT-RTX could not serialize it"))
    from rnnrt.safe_write import write_bytes

    write_bytes(cache_path, memoryview(data), "Runtime cache")
