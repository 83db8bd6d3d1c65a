"""The ``--backends`` grammar of ``rnnrt verify`` (``BASE[:key=value]...``) and its resolution through the engine
registry (:func:`rnnrt.engines.select.engine_for`) into Sessions."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from rnnrt.errors import ConfigError, fmt
from rnnrt.runtime.verify.compare import TOLERANCES

PathLike = Union[str, os.PathLike]

__all__ = ["Backend", "BackendSpec", "parse_backends", "resolve_backend"]


_SESSION_OPTIONS = ("feedback", "cuda_graph")
_COMMON_OPTIONS = ("label", "precision") + _SESSION_OPTIONS


@dataclasses.dataclass
class BackendSpec:
    """One ``--backends`` item: ``BASE[:key=value]...``."""

    text: str
    base: str
    options: dict[str, str]

    @property
    def label(self) -> str:
        return self.options.get("label", self.text)


def parse_backends(text: Union[str, Sequence[str]]) -> list[BackendSpec]:
    """Parses ``"onnxruntime,tensorrt:plan=x.plan,pkg.mod:factory:scale=2"`` into specs.

    Raises:
        ConfigError: An empty item, an option without a value, or two backends with the same label.
    """
    items = [t for t in (text.split(",") if isinstance(text, str) else list(text))]
    specs = []
    for item in items:
        item = item.strip()
        if not item:
            raise ConfigError(fmt(f"--backends {text!r}", "Has an empty item", "Example: onnxruntime,tensorrt."))
        parts = item.split(":")
        base_parts = [p for p in parts if "=" not in p]
        options = {}
        for p in parts:
            if "=" in p:
                key, _, value = p.partition("=")
                if not key or not value:
                    raise ConfigError(fmt(f"Backend {item!r}", f"Option {p!r} is not key=value"))
                options[key] = value
        if not base_parts or not all(base_parts):
            raise ConfigError(fmt(f"Backend {item!r}", "Has no name", "Expected NAME[:key=value]... or module:callable."))
        specs.append(BackendSpec(item, ":".join(base_parts), options))
    labels = [s.label for s in specs]
    dup = sorted({label for label in labels if labels.count(label) > 1})
    if dup:
        raise ConfigError(fmt(f"--backends {text!r}", f"Names {dup[0]!r} twice", "Give each a label=NAME option."))
    return specs


@dataclasses.dataclass
class Backend:
    """A resolved backend: how to make its Session, and what it is."""

    label: str
    spec: str
    kind: str
    precision: str
    make_session: Callable[[Optional[int]], Any]
    note: str = ""


def _bool(value: str, what: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(fmt(what, f"Is {value!r}", "Expected 0/1, true/false."))


def _session_kwargs(spec: BackendSpec) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if "feedback" in spec.options:
        kw["feedback"] = spec.options["feedback"]
    if "cuda_graph" in spec.options:
        kw["cuda_graph"] = _bool(spec.options["cuda_graph"], f"Backend {spec.text!r} cuda_graph")
    return kw


def _check_options(spec: BackendSpec, allowed: Iterable[str]) -> None:
    allowed = set(allowed) | set(_COMMON_OPTIONS)
    unknown = sorted(set(spec.options) - allowed)
    if unknown:
        raise ConfigError(fmt(f"Backend {spec.text!r}", f"Has no option {unknown[0]!r}", f"Options: {sorted(allowed)}."))


def _precision_of(spec: BackendSpec, default: str) -> str:
    p = spec.options.get("precision", default)
    if p not in TOLERANCES:
        raise ConfigError(fmt(f"Backend {spec.text!r} precision {p!r}", "Is not known", f"Expected one of {list(TOLERANCES)}."))
    return p


_VERIFY_OPTIONS = {  # spec option -> engine_for option, per built-in backend
    "onnxruntime": {"opt": "optimization", "graph": "graph", "threads": "threads", "plan": "plan"},
    "tensorrt": {"plan": "plan", "runtime": "runtime", "runtime_cache": "runtime_cache"},
}


def resolve_backend(spec: BackendSpec, cfg: Any, config_path: Optional[PathLike] = None,
                    plan: Optional[PathLike] = None) -> Backend:
    """Turns a spec into a :class:`Backend` through the engine registry (:func:`rnnrt.engines.select.engine_for`);
    no engine is made until its Session is.

    Raises:
        ConfigError: Unknown backend or option; a callable that cannot be imported.
    """
    from rnnrt.engines.select import engine_for
    from rnnrt.runtime.session import Session

    session_kw = _session_kwargs(spec)
    names = _VERIFY_OPTIONS.get(spec.base)
    if names is not None:
        _check_options(spec, names)
        options: dict[str, Any] = {names[k]: v for k, v in spec.options.items() if k in names}
        if "threads" in options:
            options["threads"] = int(options["threads"])
        if plan is not None:
            options.setdefault("plan", plan)
    else:
        options = {k: v for k, v in spec.options.items() if k not in _COMMON_OPTIONS}
    choice = engine_for(cfg, spec.base, config_path=config_path, **options)

    def make(batch: Optional[int]) -> Any:
        kw = dict(session_kw)
        if batch is not None:
            kw["batch_size"] = batch
        return Session(choice.config, choice.engine, **kw)

    return Backend(spec.label, spec.text, choice.backend if names is not None else spec.base,
                   _precision_of(spec, choice.precision), make, choice.note)
