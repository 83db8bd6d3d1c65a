"""The Triton model config of an export (:func:`triton_config`, :func:`triton_config_text`): its arguments
checked, then the ``python`` or ``onnx``/``plan`` config made."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.config import ModelConfig
from rnnrt.ir.manifest import EngineManifest
from rnnrt.serve.triton.layout import _TritonShapes
from rnnrt.serve.triton.onnx_plan_config import _backend_config
from rnnrt.serve.triton.pbtxt import _to_text
from rnnrt.serve.triton.python_config import _python_config


_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
ENGINES = ("plan", "onnx", "python")
INSTANCE_KINDS = ("auto", "KIND_GPU", "KIND_CPU")


def check_model_name(name: str) -> str:
    """Returns ``name`` when it is a safe Triton model name: one path component, no ``..``, no separators."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(fmt(f"Model name {name!r}", "Is not a plain model name",
                              "Use 1-128 letters, digits, '_', '.' or '-' (not starting with '.' or '-'); "
                              "a name is one folder inside the repository, never a path."))
    return name


def default_instance_kind() -> str:
    """``KIND_GPU`` when a CUDA GPU is usable here, else ``KIND_CPU``."""
    from rnnrt import cuda

    try:
        return "KIND_GPU" if cuda.available() else "KIND_CPU"
    except Exception:  # noqa: BLE001 - any failure to probe means no usable GPU
        return "KIND_CPU"


def _check_counts(max_batch_size: Optional[int], idle_us: int, max_sequences: Optional[int],
                  max_frames: Optional[int] = None, max_request_bytes: Optional[int] = None) -> None:
    for what, value, low in (("max_batch_size", max_batch_size, 1), ("idle_us", idle_us, 1),
                             ("max_sequences", max_sequences, 1), ("max_frames", max_frames, 1),
                             ("max_request_bytes", max_request_bytes, 1)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(fmt(f"export-triton {what}={value!r}", f"Is not an integer >= {low}",
                                  "Counts and idle microseconds are positive integers."))


def triton_config(cfg: ModelConfig, name: str, engine: str = "onnx", max_batch_size: Optional[int] = None,
                  idle_us: int = 60_000_000, instance_kind: str = "auto", max_sequences: Optional[int] = None,
                  backend: str = "auto", queue_delay_us: int = 0, shared: Optional[Mapping[str, Any]] = None,
                  max_frames: Optional[int] = None, max_request_bytes: Optional[int] = None,
                  manifest: Optional[EngineManifest] = None) -> Any:
    """Returns the Triton ``ModelConfig`` message for a model config (see the module doc).

    Args:
        cfg (ModelConfig): The model config.
        name (str): The Triton model name.
        engine (str): ``"onnx"``, ``"plan"`` or ``"python"``. Defaults to ``"onnx"``.
        max_batch_size (int | None): onnx/plan: overrides the profile's max batch. Defaults to None.
        idle_us (int): ``max_sequence_idle_microseconds``. Defaults to 60 s.
        instance_kind (str): ``auto`` (GPU when one is usable here), ``KIND_GPU`` or ``KIND_CPU``.
        max_sequences (int | None): python: ``max_candidate_sequences`` = the pool's slots. Defaults to
            the plan's profile max, or 64.
        backend (str): python: the rnnrt engine backend (a name of :func:`rnnrt.engines.select.backend_names`).
        queue_delay_us (int): python: the oldest strategy's ``max_queue_delay_microseconds`` (how long
            Triton may hold a request to batch it with others). Defaults to 0.
        shared (Mapping[str, Any] | None): python: the values of the inputs without a batch axis (e.g.
            Silero's ``sr``), fed with every step (``StreamPool(shared=...)``). Defaults to None.
        max_frames (int | None): python: the most frames one request may carry (``rnnrt_max_frames``).
            Defaults to :data:`rnnrt.serve.wire.MAX_FRAMES`.
        max_request_bytes (int | None): python: the most input bytes one request may carry
            (``rnnrt_max_request_bytes``). Defaults to :data:`rnnrt.serve.wire.MAX_REQUEST_BYTES`.
        manifest (EngineManifest | None): The manifest of the plan built for the config
            (:func:`rnnrt.ir.manifest.find_engine`): its profile's max batch is the default and the bound of
            ``max_batch_size``/``max_sequences``. Defaults to None (no plan: 64 by default, unbounded).
    """
    check_model_name(name)
    _check_counts(max_batch_size, idle_us, max_sequences, max_frames, max_request_bytes)
    if isinstance(queue_delay_us, bool) or not isinstance(queue_delay_us, (int, np.integer)) or queue_delay_us < 0:
        raise ConfigError(fmt(f"export-triton queue_delay_us={queue_delay_us!r}", "Is not an integer >= 0"))
    if engine not in ENGINES:
        raise ConfigError(fmt("export-triton", f"Unknown engine {engine!r}", "Use 'plan', 'onnx' or 'python'."))
    if instance_kind not in INSTANCE_KINDS:
        raise ConfigError(fmt("export-triton", f"Unknown instance kind {instance_kind!r}",
                              "Use auto, KIND_GPU or KIND_CPU."))
    kind = default_instance_kind() if instance_kind == "auto" else instance_kind
    if engine == "python":
        return _python_config(cfg, name, idle_us, kind, max_sequences, backend, queue_delay_us, shared,
                              max_frames, max_request_bytes, manifest)
    if max_frames is not None or max_request_bytes is not None:
        raise ConfigError(fmt("export-triton max_frames=/max_request_bytes=", f"Are for --engine python only, not "
                              f"{engine!r}", "Triton's own backends take whole batches; bound requests at the client."))
    if shared:
        raise ConfigError(fmt("export-triton shared=", f"Is for --engine python only, not {engine!r}",
                              "Fold the value into the model instead (rnnrt convert --set NAME=VALUE)."))
    return _backend_config(cfg, _TritonShapes(cfg, max_batch_size, manifest), name, engine, idle_us, kind)


def triton_config_text(cfg: ModelConfig, name: str, engine: str = "onnx", max_batch_size: Optional[int] = None,
                       idle_us: int = 60_000_000, instance_kind: str = "auto", **kwargs: Any) -> str:
    """Returns the ``config.pbtxt`` text (:func:`triton_config` serialized by protobuf's text format)."""
    msg = triton_config(cfg, name, engine, max_batch_size, idle_us, instance_kind, **kwargs)
    return _to_text(cfg, msg)
