"""Batch and time axes of a model's inputs and outputs: symbolic (shape inference through the recurrent
nodes), probed (rows run as independent streams), and the time axis a recurrent node's sequence follows."""

from __future__ import annotations

import copy
import logging
from typing import Mapping, Optional

import onnx

from rnnrt.importers.onnx.probe import Prober, inner_shapes
from rnnrt.importers.onnx.rnn_ops import RECURRENT_OPS
from rnnrt.importers.onnx.shapes import _dims_of, _infer
from rnnrt.ir.stepgraph import StatePair

G_LOGGER = logging.getLogger("rnnrt.onnx")


def _batch_axes(model: onnx.ModelProto) -> dict[str, Optional[int]]:
    """Batch axis of every graph input and output, found by symbolic shape inference."""
    return _rnn_axes(model)[0]


def _rnn_axes(model: onnx.ModelProto) -> tuple[dict[str, Optional[int]], dict[str, Optional[int]]]:
    """Batch and time axes of every graph input and output, found by symbolic shape inference.

    Each input axis gets its own symbol; the symbols that land on a recurrent node's batch axis are
    batch symbols (on its X's axis 0: time symbols), and a binding's batch (time) axis is the axis
    that carries one of them.
    """
    m = copy.deepcopy(model)
    weights = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in weights:
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            d.Clear()
            d.dim_param = f"__{vi.name}:{axis}"
    del m.graph.value_info[:]
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    except Exception as err:
        G_LOGGER.debug("Symbolic shape inference failed: %s", err)
        return {}, {}
    dims: dict[str, list[str]] = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = [d.dim_param if d.HasField("dim_param") else "" for d in t.shape.dim]
    batch_syms: set[str] = set()
    time_syms: set[str] = set()
    for node in m.graph.node:
        if node.op_type not in RECURRENT_OPS:
            continue
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        for idx in (0, 5, 6):
            if len(node.input) > idx and node.input[idx] and len(dims.get(node.input[idx], [])) > 1:
                sym = dims[node.input[idx]][0 if layout == 1 else 1]
                if sym:
                    batch_syms.add(sym)
        t_axis = 1 if layout == 1 else 0
        if node.input and len(dims.get(node.input[0], [])) > t_axis and dims[node.input[0]][t_axis]:
            time_syms.add(dims[node.input[0]][t_axis])
    axes: dict[str, Optional[int]] = {}
    times: dict[str, Optional[int]] = {}
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name in weights:
            continue
        found = [a for a, s in enumerate(dims.get(vi.name, [])) if s in batch_syms]
        axes[vi.name] = found[0] if found else None
        found = [a for a, s in enumerate(dims.get(vi.name, [])) if s in time_syms]
        times[vi.name] = found[0] if found else None
    return axes, times


def time_axes(model: onnx.ModelProto, states: list[StatePair]) -> dict[str, int]:
    """The stream's time axis of each user input, where it is known: the input's one dynamic dim (other than
    the states' batch dim) when a recurrent node's sequence length follows it (probed at two sizes)."""
    rnn = [n for n in model.graph.node if n.op_type in RECURRENT_OPS]
    if not rnn:
        return {}
    weights = {t.name for t in model.graph.initializer}
    state_in = {s.input for s in states}
    batch_names = {s.shape[s.batch_axis] for s in states if isinstance(s.shape[s.batch_axis], str)}
    candidates = {}
    for vi in model.graph.input:
        if vi.name in weights or vi.name in state_in:
            continue
        dyn = [a for a, d in enumerate(_dims_of(vi)) if not isinstance(d, int) and d not in batch_names]
        if len(dyn) == 1:
            candidates[vi.name] = dyn[0]
    if not candidates:
        return {}
    xs = [n.input[0] for n in rnn]
    runs = inner_shapes(model, xs, {s.input: s.batch_axis for s in states})
    if runs is None:
        return {}
    seq = [1 if next((a.i for a in n.attribute if a.name == "layout"), 0) == 1 else 0 for n in rnn]
    follows = any(runs[0][x][ax] == 3 and runs[1][x][ax] == 5 for x, ax in zip(xs, seq))
    return candidates if follows else {}


def _prober(model: onnx.ModelProto, fixed: Mapping[str, Optional[int]]) -> Optional[Prober]:
    try:
        return Prober(model, fixed)
    except Exception as err:  # a model ORT cannot load is still convertible; nothing is confirmed then
        G_LOGGER.debug("Cannot load the model in ONNX Runtime for probing: %s", err)
        return None


def _probe_axes(model: onnx.ModelProto, states: list[StatePair]) -> Optional[tuple[dict, dict]]:
    """Batch axes of the user inputs and outputs, found numerically (rows are independent streams)."""
    model = _infer(model)
    weights = {t.name for t in model.graph.initializer}
    fixed = {s.input: s.batch_axis for s in states}
    prober = _prober(model, fixed)
    if prober is None:
        return None
    candidates: dict[str, list[Optional[int]]] = {}
    state_batch = {s.shape[s.batch_axis] for s in states}
    for vi in model.graph.input:
        if vi.name in weights or vi.name in fixed:
            continue
        dims = _dims_of(vi)
        dyn = [a for a, d in enumerate(dims) if not isinstance(d, int)]
        ones = [a for a, d in enumerate(dims) if isinstance(d, int) and d in state_batch]
        candidates[vi.name] = dyn + [a for a in ones if a not in dyn] + [None]
    return prober.batch_axes_for(fixed, candidates)
