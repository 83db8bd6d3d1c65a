"""Bisection of the differing op: both runs repeated with every intermediate tensor exposed, and the first
node whose outputs differ while its inputs agree named."""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import onnx

from rnnrt.importers.check.compare import TOLERANCE, _error, _is_float
from rnnrt.importers.check.frames import _Layout, _row, _stream
from rnnrt.importers.check.runner import _Runner
from rnnrt.ir.stepgraph import StepGraph

G_LOGGER = logging.getLogger("rnnrt.check")


def _culprit(model: onnx.ModelProto, agree: Callable[[str], Optional[bool]]) -> Optional[onnx.NodeProto]:
    """The first node (graph order) with an output that differs while none of its inputs does."""
    for node in model.graph.node:
        if not any(agree(o) is False for o in node.output if o):
            continue
        if all(agree(i) is not False for i in node.input if i):
            return node
    return None


def _label(node: Optional[onnx.NodeProto]) -> str:
    if node is None:
        return ""
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node (outputs {list(node.output)})"


def _first_culprit(model: onnx.ModelProto, pairs: Sequence[Callable[[str], Optional[bool]]]) -> Optional[onnx.NodeProto]:
    """The culprit at the first step (of ``pairs``, one agreement per step) where anything differs."""
    names = [o for node in model.graph.node for o in node.output if o]
    for agree in pairs:
        if any(agree(n) is False for n in names):
            return _culprit(model, agree)
    return None


def _agree(ref: Mapping[str, np.ndarray], got: Mapping[str, Callable[[], Optional[np.ndarray]]]) -> Callable[[str], Optional[bool]]:
    """Agreement of same-named float tensors (10x the output tolerance); None where not comparable."""
    cache: dict[str, Optional[bool]] = {}

    def agree(name: str) -> Optional[bool]:
        if name not in cache:
            r, g = ref.get(name), got[name]() if name in got else None
            ok = None
            if _is_float(r) and _is_float(g) and r.shape == g.shape:
                ok = not _error(r, g, 10 * TOLERANCE)[2]
            cache[name] = ok
        return cache[name]

    return agree


def _agree_mapped(parts: Mapping[str, Callable[[], Optional[tuple]]]) -> Callable[[str], Optional[bool]]:
    cache: dict[str, Optional[bool]] = {}

    def agree(name: str) -> Optional[bool]:
        if name not in cache:
            pair = parts[name]() if name in parts else None
            ok = None
            if pair is not None and _is_float(pair[0]) and _is_float(pair[1]):
                ok = not _error(pair[0], pair[1], 10 * TOLERANCE)[2]
            cache[name] = ok
        return cache[name]

    return agree


def _batch_culprit(step: StepGraph, layout: _Layout, data: list, restart: int, reset_row: int) -> Optional[onnx.NodeProto]:
    try:
        runner = _Runner(step.model, expose=True, external=step.external_data)
        n = len(data)
        batched = _stream(runner, layout, data, {restart: [reset_row]})
        alone = [_stream(runner, layout, [data[k]], {restart: [0]} if k == reset_row else {}) for k in range(n)]
        pairs = []
        for t in range(len(data[0])):
            def rows_of(name: str, t: int = t) -> Optional[bool]:
                b = batched[t].get(name)
                ones = [alone[k][t].get(name) for k in range(n)]
                if not _is_float(b) or not all(_is_float(o) for o in ones):
                    return None
                one = ones[0]
                if b.shape == one.shape:
                    return all(not _error(o, b, 10 * TOLERANCE)[2] for o in ones)
                axes = [a for a in range(b.ndim) if b.ndim == one.ndim and b.shape[a] == n * one.shape[a]
                        and all(b.shape[j] == one.shape[j] for j in range(b.ndim) if j != a)]
                if len(axes) != 1:
                    return None
                return all(not _error(ones[k], _row(b, axes[0], None, k, n), 10 * TOLERANCE)[2] for k in range(n))
            pairs.append(rows_of)
        return _first_culprit(step.model, pairs)
    except Exception as err:  # noqa: BLE001 - the bisection is a hint
        G_LOGGER.debug("Batch bisection failed: %s", err)
        return None
