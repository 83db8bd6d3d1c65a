"""Checks of Caffe layer parameters, made where a converter reads them (each error names the layer).

Caffe itself CHECK-fails (aborts) on most of these; rnnrt raises a :class:`ModelImportError` naming
the layer, the parameter, the value and what Caffe accepts, instead of emitting a graph that fails
later in ONNX Runtime or TensorRT (or raises ``ZeroDivisionError`` while converting).
"""

from __future__ import annotations

from typing import Any, Sequence

from rnnrt.errors import ModelImportError, fmt


def _subject(layer: Any) -> str:
    return f"Layer {layer.name!r} ({layer.type})"


def positive(layer: Any, name: str, *values: int) -> None:
    """Every value of parameter ``name`` is > 0 (kernel, stride, dilation, group, local_size, ...)."""
    for v in values:
        if int(v) <= 0:
            raise ModelImportError(fmt(_subject(layer), f"{name} is {int(v)}", f"Expected {name} > 0."))


def odd(layer: Any, name: str, value: int) -> None:
    """``value`` is odd (Caffe's LRN: the window is centred on the channel)."""
    if int(value) % 2 != 1:
        raise ModelImportError(fmt(_subject(layer), f"{name} is {int(value)}", f"Expected an odd {name} (Caffe's LRN centres the window)."))


def pad_below_kernel(layer: Any, pads: Sequence[int], kernel: Sequence[int]) -> None:
    """Every pad is smaller than its kernel extent (Caffe's Pooling CHECK_LT(pad, kernel))."""
    for p, k in zip(pads, kernel):
        if int(p) < 0 or int(p) >= int(k):
            raise ModelImportError(
                fmt(_subject(layer), f"pad {list(map(int, pads))} is not below the kernel {list(map(int, kernel))}",
                    "Expected 0 <= pad < kernel.")
            )


def window_fits(layer: Any, input_hw: Sequence[int], output_hw: Sequence[int], kernel: Sequence[int], pads: Sequence[int]) -> None:
    """The output is at least 1 x 1: the (dilated) kernel is not larger than the padded input."""
    if any(int(o) < 1 for o in output_hw):
        raise ModelImportError(
            fmt(_subject(layer),
                f"The kernel {list(map(int, kernel))} (pad {list(map(int, pads))}) is larger than its input {list(map(int, input_hw))}",
                f"It would give an output of {list(map(int, output_hw))}; expected a kernel no larger than the padded input.")
        )


def dims_positive(layer: Any, what: str, shape: Sequence[int]) -> None:
    """Every dim of a declared blob shape is > 0 (a 0 dim makes an empty stream: T = 0, N = 0)."""
    if any(int(d) <= 0 for d in shape):
        raise ModelImportError(
            fmt(_subject(layer), f"{what} has shape {list(map(int, shape))}",
                "Expected every dim > 0 (a zero-sized T or N carries no frames or streams).")
        )


def divides(layer: Any, name: str, value: int, **totals: int) -> None:
    """``value`` (> 0) divides each of ``totals`` (Convolution's group)."""
    positive(layer, name, value)
    bad = {k: v for k, v in totals.items() if int(v) % int(value)}
    if bad:
        parts = " and ".join(f"{k} {v}" for k, v in bad.items())
        raise ModelImportError(fmt(_subject(layer), f"{name} {int(value)} does not divide {parts}"))


__all__ = ["divides", "dims_positive", "odd", "pad_below_kernel", "positive", "window_fits"]
