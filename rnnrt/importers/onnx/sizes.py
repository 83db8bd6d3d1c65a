"""Refuses ONNX models that declare sizes no streaming step can have, before anything is allocated.

The importer runs the model in ONNX Runtime on made-up inputs (to find batch axes, state wiring and
time mixing), so a declared input dim of 2**40 or an LSTM ``hidden_size`` of 2**31-1 used to end in a
raw ``MemoryError`` from numpy. :func:`check_declared_sizes` bounds what a model may declare:

- every graph input that is not a weight: at most :data:`MAX_INPUT_ELEMENTS` elements counting its
  fixed dims (a dynamic dim counts as 1; probing fills those with small sizes);
- every recurrent op (LSTM, GRU, RNN): ``hidden_size`` at most :data:`MAX_HIDDEN_SIZE`.

Anything larger is a :class:`~rnnrt.errors.ModelImportError` naming the input or node.
"""

from __future__ import annotations

import math

import onnx

from rnnrt.errors import ModelImportError, fmt
from rnnrt.ir.bindings import onnx_tensor_type

__all__ = ["MAX_HIDDEN_SIZE", "MAX_INPUT_ELEMENTS", "check_declared_sizes"]

MAX_INPUT_ELEMENTS = 2**24
"""The most elements (fixed dims only) one graph input that is not a weight may declare: 16 Mi, far above a
streaming step's frame (audio chunks and feature frames have thousands) and small enough to probe."""

MAX_HIDDEN_SIZE = 2**20
"""The largest ``hidden_size`` of an LSTM, GRU or RNN node (recurrent state per stream and direction)."""

_RECURRENT = {"LSTM", "GRU", "RNN"}


def check_declared_sizes(model: onnx.ModelProto, where: str) -> None:
    """Raises ModelImportError if a non-weight graph input or a recurrent node declares more than the bounds."""
    weights = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in weights or not vi.type.HasField("tensor_type"):
            continue
        shape = onnx_tensor_type(vi, unnamed="?")[1]
        if shape is None:
            continue
        dims = [d if isinstance(d, int) else None for d in shape]
        if any(d is not None and d < 0 for d in dims):
            raise ModelImportError(fmt(f"Model {where!r} input {vi.name!r}", f"Declares a negative dim: {dims}",
                                       "Dims are sizes >= 0, or names for dynamic dims."))
        count = math.prod(d for d in dims if d is not None)
        if count > MAX_INPUT_ELEMENTS:
            shape = ["?" if d is None else d for d in dims]
            raise ModelImportError(fmt(f"Model {where!r} input {vi.name!r}",
                                       f"Declares shape {shape}: {count} elements per call, more than the "
                                       f"{MAX_INPUT_ELEMENTS} rnnrt accepts",
                                       "Declare the dims one streaming step takes (a dim name for a dynamic one)."))
    for node in model.graph.node:
        if node.op_type not in _RECURRENT or node.domain not in ("", "ai.onnx"):
            continue
        hidden = next((a.i for a in node.attribute if a.name == "hidden_size"), None)
        if hidden is not None and not 0 < hidden <= MAX_HIDDEN_SIZE:
            raise ModelImportError(fmt(f"Model {where!r} node {node.name or node.op_type!r} ({node.op_type})",
                                       f"Has hidden_size {hidden}, outside [1, {MAX_HIDDEN_SIZE}]",
                                       "A recurrent node's hidden_size is the size of its state per stream."))
