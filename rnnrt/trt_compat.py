"""One place that imports TensorRT lazily and hides the differences between its flavours.

Two Python modules can build and run rnnrt engines:

- ``tensorrt``: TensorRT 10 or 11, what users install on their GPU machines.
- ``tensorrt_rtx``: TensorRT for RTX. Its builder also works on a machine without a GPU, which is
  how CI proves that every step graph is a valid TensorRT network.

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

from rnnrt.errors import BuildError, fmt

G_LOGGER = logging.getLogger("rnnrt.trt")

FLAVOURS = ("tensorrt", "tensorrt_rtx")
"""Module names rnnrt can use, in the order ``auto`` tries them."""

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


def available_flavours() -> list[str]:
    """Names of the TensorRT modules that are installed (without importing them)."""
    return [name for name in FLAVOURS if importlib.util.find_spec(name) is not None]


def import_trt(module: str | None = None) -> ModuleType:
    """Imports a TensorRT Python module.

    Args:
        module (str | None): ``"tensorrt"``, ``"tensorrt_rtx"``, or None/``"auto"`` to take ``tensorrt``
            if it imports and ``tensorrt_rtx`` otherwise. Defaults to None.

    Returns:
        ModuleType: The module.

    Raises:
        BuildError: The module is unknown or no TensorRT module can be imported (the message says how
            to install one).
    """
    if module in (None, "auto"):
        names = list(FLAVOURS)
    elif module in FLAVOURS:
        names = [module]
    else:
        raise BuildError(fmt(f"TensorRT module {module!r}", "Is not known", f"Expected one of {list(FLAVOURS)} or 'auto'."))
    failures = []
    for name in names:
        try:
            return importlib.import_module(name)
        except (ImportError, OSError) as err:  # OSError: a module whose shared libraries are missing
            failures.append(f"{name}: {err}")
    raise BuildError(
        fmt(
            "TensorRT",
            f"No TensorRT Python module could be imported ({'; '.join(failures)})",
            INSTALL_HINT,
        )
    )


def flavour_of(trt: ModuleType) -> str:
    """``"tensorrt_rtx"`` or ``"tensorrt"``: which flavour a module returned by :func:`import_trt` is."""
    return "tensorrt_rtx" if trt.__name__.split(".")[0].startswith("tensorrt_rtx") else "tensorrt"


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
    if cache_path is None or not hasattr(engine, "create_runtime_config"):
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
        raise BuildError(fmt(f"Runtime cache {cache_path!r}", "TensorRT-RTX did not accept it"))
    return config


def save_runtime_cache(config: Any, cache_path: str) -> None:
    """Writes the runtime cache of an ``IRuntimeConfig`` made by :func:`runtime_config` to ``cache_path``."""
    cache = config.get_runtime_cache()
    if cache is None:
        return
    data = cache.serialize()
    if data is None:
        raise BuildError(fmt(f"Runtime cache {cache_path!r}", "TensorRT-RTX could not serialize it"))
    with open(cache_path, "wb") as f:
        f.write(memoryview(data))
