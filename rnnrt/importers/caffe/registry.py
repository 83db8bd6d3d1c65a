"""The converter registry shared by built-in layers and plugins.

A converter is keyed by ``(frontend, op_type, since_version)``; Caffe converters use
``since_version=None``. Registering a key twice is an error, and a miss lists what is available.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from rnnrt.errors import PluginError, UnsupportedOpError, fmt

ConverterKey = tuple[str, str, Optional[int]]


@dataclasses.dataclass(frozen=True)
class Registration:
    """One registered converter and where it came from (``"rnnrt"`` or a plugin's name)."""

    key: ConverterKey
    func: Callable
    origin: str


_REGISTRY: dict[ConverterKey, Registration] = {}
_CURRENT_ORIGIN = ["rnnrt"]


def add_converter(frontend: str, op_type: str, since_version: int | None = None) -> Callable:
    """Registers the decorated function as the converter of ``op_type`` for ``frontend``.

    Args:
        frontend (str): ``"caffe"`` for Caffe layers.
        op_type (str): The layer type as written in the prototxt, e.g. ``"LSTM"``.
        since_version (int | None): The first opset a converter applies to; None for Caffe.

    Returns:
        Callable: A decorator that registers and returns the function unchanged.

    Raises:
        PluginError: if the key is registered already.
    """
    key = (frontend, op_type, since_version)

    def decorator(func: Callable) -> Callable:
        origin = _CURRENT_ORIGIN[-1]
        if key in _REGISTRY:
            prev = _REGISTRY[key]
            raise PluginError(
                fmt(
                    f"Converter {frontend}/{op_type!r}",
                    f"Registered twice: by {prev.origin!r} and by {origin!r}",
                    "A layer type can have only one converter; remove one of the registrations.",
                )
            )
        _REGISTRY[key] = Registration(key, func, origin)
        return func

    return decorator


class registering_as:
    """Context manager: converters registered inside it are attributed to ``origin`` (a plugin name)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def __enter__(self) -> "registering_as":
        _CURRENT_ORIGIN.append(self.origin)
        return self

    def __exit__(self, *exc) -> None:
        _CURRENT_ORIGIN.pop()


def unregister(origin: str) -> None:
    """Removes every converter registered by ``origin`` (used when a plugin fails half-way)."""
    for key in [k for k, r in _REGISTRY.items() if r.origin == origin]:
        del _REGISTRY[key]


def get_converter(frontend: str, op_type: str, opset: int | None = None, *, layer_name: str = "") -> Registration:
    """Returns the converter for ``op_type``: the newest ``since_version`` that is <= ``opset``.

    Raises:
        UnsupportedOpError: naming the layer and listing the supported types.
    """
    candidates = [
        r
        for (fe, op, since), r in _REGISTRY.items()
        if fe == frontend and op == op_type and (since is None or opset is None or since <= opset)
    ]
    if not candidates:
        subject = f"Layer {layer_name!r} of type {op_type!r}" if layer_name else f"Layer type {op_type!r}"
        raise UnsupportedOpError(
            fmt(
                subject,
                f"No {frontend} converter handles this layer type",
                f"Supported types: {', '.join(sorted(registered_types(frontend)))}. "
                "A layer from a Caffe fork can be taught to rnnrt with a plugin (--plugins DIR).",
            )
        )
    return max(candidates, key=lambda r: -1 if r.key[2] is None else r.key[2])


def registered_types(frontend: str) -> dict[str, str]:
    """Maps each registered op type of ``frontend`` to its origin."""
    return {op: r.origin for (fe, op, _), r in _REGISTRY.items() if fe == frontend}
