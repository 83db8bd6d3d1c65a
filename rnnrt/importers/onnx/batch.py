"""``--batch dynamic`` for ONNX: the batch (stream) dim of a fixed-batch export made symbolic through the graph.

Keras/tf2onnx and many PyTorch exports fix the batch at 1: inputs ``[1, 1, 257]``, states
``[1, 2, 128, 2]`` and, inside, Reshape targets ``[1, -1, 512]`` and the like. :func:`make_batch_dynamic`

1. names the batch dim of every per-stream input and state ``batch``;
2. follows it with ONNX shape inference (with data propagation): a node whose inputs carry the batch and
   whose output lost it either has a constant shape operand (Reshape, Expand, Tile, ConstantOfShape),
   which is rewritten to take the batch from its input at run time, or it mixes the streams (a reduction
   over the batch, a MatMul contracting it ...) and the conversion is refused naming it;
3. runs the streams together (7 of them) and fixes what stops them or places them wrong: constant shape
   operands as in 2; ScatterND/GatherND whose constant indices address the batch axis with row 0 (as every
   index of a batch-1 export must), whose indices are then built at run time, one copy per row with the
   batch component ``Range(0, batch)``, so each stream's row is written (read) from its own updates
   (data); ScatterND updates with the batch on another unit axis; ``-1`` Reshapes that fold the streams
   into another dim or interleave them (they get the streams where these start in memory); constant or
   unfolded initial states of a GRU/LSTM/RNN;
4. proves the result numerically: three streams with different data in one batch equal each alone.
   Where they differ, the first node whose rows differ while its inputs' rows agree is named.
"""

from __future__ import annotations

import copy
import itertools
import logging
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from rnnrt.errors import ConfigError, UnsupportedOpError, fmt
from rnnrt.importers.onnx.fold import unique_name
from rnnrt.ir.bindings import onnx_tensor_type

G_LOGGER = logging.getLogger("rnnrt.onnx")

__all__ = ["BATCH", "make_batch_dynamic"]

BATCH = "batch"
_SHAPE_OPERAND = {"Reshape": 1, "Expand": 1, "ConstantOfShape": 0}
_INDEXED = ("ScatterND", "GatherND")
_STREAMS = 3
# Streams in the runs that find the batch axes and the shape operands to fix: a prime that is no factor of
# common model dims, so that a constant Reshape cannot swallow the streams by accident (3 x 16 = 48).
_FIX_STREAMS = 7


def _dims(vi: onnx.ValueInfoProto) -> Optional[list[Any]]:
    """A tensor's dims: ints, dim names, None for an unnamed dynamic dim (None: no shape recorded)."""
    dims = onnx_tensor_type(vi, unnamed="")[1]
    return None if dims is None else [d if d != "" else None for d in dims]


def _set(vi: onnx.ValueInfoProto, axis: int, value: Any) -> None:
    d = vi.type.tensor_type.shape.dim[axis]
    d.Clear()
    if isinstance(value, str):
        d.dim_param = value
    else:
        d.dim_value = int(value)


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node (outputs {list(node.output)})"


def _infer(model: onnx.ModelProto) -> dict[str, Optional[list[Any]]]:
    m = copy.deepcopy(model)
    del m.graph.value_info[:]
    weights = {t.name for t in m.graph.initializer}
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception as err:  # what inference cannot follow, the numeric proof still checks
        G_LOGGER.debug("Shape inference failed: %s", err)
    return {vi.name: _dims(vi) for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output)
            if vi.name not in weights}


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(a.t)
    return found


def _target_axis(in_dims: list[Any], axis: int, target: np.ndarray) -> Optional[int]:
    """Where a reshape to ``target`` puts the input's batch ``axis``: the position p with target[p] == 1
    whose leading entries hold as many elements as the input's dims before the batch. Where unit dims
    make several fit ([1, B, 16] to [1, 1, 1, 16]), the batch keeps its position if it can."""
    lead = [d for d in in_dims[:axis]]
    if any(not isinstance(d, int) for d in lead):
        return axis if axis < len(target) and target[axis] in (1, 0) else None
    want = int(np.prod(lead)) if lead else 1
    fits = [p for p, v in enumerate(target)
            if v == 1 and int(np.prod(target[:p])) == want and all(x > 0 for x in target[:p])]
    return axis if axis in fits else (fits[0] if fits else None)


class _Rewriter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.used = {o for n in model.graph.node for o in n.output} | {t.name for t in model.graph.initializer}
        self.used |= {vi.name for vi in model.graph.input}

    def name(self, stem: str) -> str:
        return unique_name(stem, self.used)

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.name(stem)
        self.model.graph.node.append(onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def batch_shape(self, node: onnx.NodeProto, src: str, axis: int, target: np.ndarray, p: int, per: int = 1,
                    times: int = 1) -> None:
        """Replaces the shape operand ``target`` of ``node`` by one whose entry ``p`` is ``src``'s dim ``axis``
        (divided by ``per``, times ``times``: the streams folded into a dim with others, or to be)."""
        stem = f"{node.name or node.output[0]}__batch"
        shape = self.node("Shape", [src], f"{stem}_shape")
        dim = self.node("Gather", [shape, self.const(f"{stem}_axis", np.array([axis], np.int64))], f"{stem}_dim", axis=0)
        if per != 1:
            dim = self.node("Div", [dim, self.const(f"{stem}_per", np.array([per], np.int64))], f"{stem}_streams")
        if times != 1:
            dim = self.node("Mul", [dim, self.const(f"{stem}_times", np.array([times], np.int64))], f"{stem}_folded")
        parts = []
        if p > 0:
            parts.append(self.const(f"{stem}_head", np.asarray(target[:p], np.int64)))
        parts.append(dim)
        if p + 1 < len(target):
            parts.append(self.const(f"{stem}_tail", np.asarray(target[p + 1:], np.int64)))
        new = self.node("Concat", parts, f"{stem}_target", axis=0) if len(parts) > 1 else dim
        idx = _SHAPE_OPERAND[node.op_type]
        node.input[idx] = new

    def row_indices(self, node: onnx.NodeProto, indices: np.ndarray, axis: int, u: int) -> None:
        """Replaces the constant ``indices`` of a ScatterND/GatherND by ``indices + rows * e_axis`` built at
        run time: ``rows`` is ``Range(0, batch)`` along the indices' unit axis ``u`` and ``e_axis`` selects
        the batch component (component ``axis``, 0 in ``indices``), so row b is indexed by b."""
        stem = f"{node.name or node.output[0]}__rows"
        base = np.array(indices, np.int64)
        base[..., axis] = 0
        step = np.zeros(base.shape[-1], np.int64)
        step[axis] = 1
        shape = self.node("Shape", [node.input[0]], f"{stem}_shape")
        size = self.node("Gather", [shape, self.const(f"{stem}_axis", np.array(axis, np.int64))], f"{stem}_size", axis=0)
        rows = self.node("Range", [self.const(f"{stem}_start", np.array(0, np.int64)), size,
                                   self.const(f"{stem}_delta", np.array(1, np.int64))], f"{stem}_range")
        layout = [1] * base.ndim
        layout[u] = -1
        column = self.node("Reshape", [rows, self.const(f"{stem}_layout", np.array(layout, np.int64))], f"{stem}_column")
        offset = self.node("Mul", [column, self.const(f"{stem}_component", step)], f"{stem}_offset")
        node.input[1] = self.node("Add", [self.const(f"{stem}_base", base), offset], f"{stem}_indices")


def _stream_axis(many: Sequence[int], one: Sequence[int]) -> Optional[tuple[int, int]]:
    """(axis, k): the one axis that is 7 * k for seven streams and k for one (k = 1: the batch's own axis;
    k > 1: the streams folded into it, outermost), else None."""
    if len(many) != len(one):
        return None
    hits = [a for a in range(len(one)) if many[a] != one[a]]
    if len(hits) != 1 or many[hits[0]] != _FIX_STREAMS * one[hits[0]]:
        return None
    return hits[0], int(one[hits[0]])


def _memory_place(one_in: Sequence[int], axis: int, one_out: Sequence[int]) -> Optional[int]:
    """Where a Reshape keeps the streams: the output axis p that starts where they start in the input
    (as many elements before it as before the input's ``axis``); a unit axis first, ``axis`` itself first."""
    before = int(np.prod(one_in[:axis])) if axis else 1
    fits = [p for p in range(len(one_out)) if int(np.prod(one_out[:p])) == before]
    units = [p for p in fits if one_out[p] == 1]
    return axis if axis in units else (units[0] if units else (fits[0] if fits else None))


def _batch_axis(dims: Optional[list[Any]]) -> Optional[int]:
    if not dims:
        return None
    hits = [a for a, d in enumerate(dims) if d == BATCH]
    return hits[0] if len(hits) == 1 else None


def _toposort(model: onnx.ModelProto) -> None:
    ready = {vi.name for vi in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending = list(model.graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            ordered += rest
            break
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def _propagate(model: onnx.ModelProto) -> dict[str, Optional[list[Any]]]:
    """Rewrites the constant shape operands where inference shows the batch lost (step 2)."""
    rw = _Rewriter(model)
    for _ in range(len(model.graph.node) + 1):
        dims = _infer(model)
        consts = _constants(model)
        fixed = False
        for node in model.graph.node:
            data = [i for i in node.input[:1] if i]
            if node.op_type in ("Shape", "Size") or not data:
                continue
            carried = [i for i in node.input if i and _batch_axis(dims.get(i)) is not None]
            if not carried:
                continue
            outs = [dims.get(o) for o in node.output if o]
            if any(o is None or BATCH in o for o in outs) or all(o == [] for o in outs):
                continue  # passes it on, or inference cannot tell (the numeric runs check those)
            src = carried[0]
            axis = _batch_axis(dims[src])
            idx = _SHAPE_OPERAND.get(node.op_type)
            if idx is not None and node.op_type != "ConstantOfShape" and node.input[idx] in consts and src == node.input[0]:
                target = np.asarray(consts[node.input[idx]]).reshape(-1).astype(np.int64)
                p = _target_axis(dims[src], axis, target) if node.op_type == "Reshape" else (
                    axis + len(target) - len(dims[src]) if len(target) >= len(dims[src]) else None)
                if p is not None and 0 <= p < len(target):
                    rw.batch_shape(node, src, axis, target, p)
                    fixed = True
                    break
        if not fixed:
            _toposort(model)
            return dims
        _toposort(model)
    return _infer(model)


def _probe_shapes(model: onnx.ModelProto, name: str, axes: Mapping[str, Optional[int]],
                  sizes: Mapping[str, int]) -> Optional[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The shapes of tensor ``name`` for seven streams and for one (the graph run up to it); None where
    that cannot run."""
    feeds = _feeds(model, axes, sizes, _FIX_STREAMS, seed=17)
    one = {k: (np.take(v, [0], axis=axes[k]) if axes.get(k) is not None else v) for k, v in feeds.items()}
    if name in feeds:
        return feeds[name].shape, one[name].shape
    try:
        probe = _upto(model, name)
        return _run(probe, feeds, [name])[0].shape, _run(probe, one, [name])[0].shape
    except Exception as err:  # the proof runs name what cannot run
        G_LOGGER.debug("Cannot probe the batch axis of %r: %s", name, err)
        return None


def _probe_axis(model: onnx.ModelProto, name: str, axes: Mapping[str, Optional[int]],
                sizes: Mapping[str, int]) -> Optional[int]:
    """The batch axis of tensor ``name``: the one axis that is 7 for seven streams and 1 for one (the graph
    run up to it); None where it has none or it cannot be told."""
    if name in axes:
        return axes[name]
    shapes = _probe_shapes(model, name, axes, sizes)
    if shapes is None:
        return None
    s7, s1 = shapes
    moved = [a for a in range(len(s1)) if len(s7) == len(s1) and s7[a] != s1[a]]
    return moved[0] if len(moved) == 1 and s1[moved[0]] == 1 else None


def _updates_fix(model: onnx.ModelProto, node: onnx.NodeProto, axes: Mapping[str, Optional[int]],
                 sizes: Mapping[str, int]) -> bool:
    """A ScatterND whose data carries the batch outside the indexed dims needs it at the matching axis of
    its updates. Where the updates carry it at another axis and only unit dims lie between the two (a
    constant Reshape that had several places for it, [1, B, 16] to [1, 1, 1, 16]), a Reshape moves it
    there (True)."""
    consts = _constants(model)
    if node.op_type != "ScatterND" or len(node.input) < 3 or node.input[1] not in consts:
        return False
    indices = np.asarray(consts[node.input[1]])
    axis = _probe_axis(model, node.input[0], axes, sizes)
    if axis is None or axis < indices.shape[-1]:
        return False
    want = indices.ndim - 1 + axis - indices.shape[-1]
    shapes = _probe_shapes(model, node.input[2], axes, sizes)
    if shapes is None:
        return False
    s7, s1 = shapes
    moved = [a for a in range(len(s1)) if len(s7) == len(s1) and s7[a] != s1[a]]
    if len(moved) != 1 or moved[0] == want or want >= len(s1):
        return False
    lo, hi = sorted((moved[0], want))
    if any(s1[j] != 1 for j in range(lo, hi + 1)):
        return False
    node.input[2] = _move_batch(model, node.input[2], s1, moved[0], want, f"{node.name or node.output[0]}__updates")
    _toposort(model)
    return True


def _move_batch(model: onnx.ModelProto, src: str, one: Sequence[int], frm: int, to: int, stem: str) -> str:
    """A Reshape of ``src`` (``one``: its shape for one stream, unit dims from ``frm`` to ``to``) that moves
    its batch from axis ``frm`` to axis ``to``; returns its output."""
    rw = _Rewriter(model)
    target = np.asarray(one, np.int64)
    out = rw.node("Reshape", [src, rw.const(f"{stem}_target", target)], stem)
    rw.batch_shape(model.graph.node[len(model.graph.node) - 1], src, frm, target, to)
    return out


def _initial_state_fix(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """A GRU/LSTM/RNN whose initial state is a constant of batch 1 (zeros, as exporters write for a
    recurrence that starts afresh in every call) gets it expanded to the batch of its X: every stream
    starts from the same constant, as it does alone (True)."""
    if node.op_type not in ("GRU", "LSTM", "RNN"):
        return False
    consts = _constants(model)
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    x_axis = 0 if layout else 1
    fixed = False
    for idx in (5, 6) if node.op_type == "LSTM" else (5,):
        if len(node.input) <= idx or node.input[idx] not in consts:
            continue
        value = np.asarray(consts[node.input[idx]])
        if value.ndim != 3 or value.shape[x_axis] != 1:
            continue
        rw = _Rewriter(model)
        target = np.asarray(value.shape, np.int64)
        stem = f"{node.name or node.output[0]}__initial{idx}"
        out = rw.node("Expand", [node.input[idx], rw.const(f"{stem}_shape", target)], stem)
        rw.batch_shape(model.graph.node[len(model.graph.node) - 1], node.input[0], x_axis, target, x_axis)
        node.input[idx] = out
        fixed = True
    if fixed:
        _toposort(model)
    return fixed


def _fold_recurrence(model: onnx.ModelProto, node: onnx.NodeProto, axes: Mapping[str, Optional[int]],
                     sizes: Mapping[str, int]) -> bool:
    """A GRU/LSTM/RNN (layout 0, one direction) whose X has the streams folded into its batch ([T, B*N, C],
    N rows per stream) while its initial states carry them on axis 0 ([B, N, H]: a state that is [1, N, H]
    for one stream): the states are folded the same way ([1, B*N, H]) (True)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("layout", 0) or attrs.get("direction", b"forward") not in (b"forward", b"reverse"):
        return False
    x = _probe_shapes(model, node.input[0], axes, sizes)
    folded = _stream_axis(*x) if x is not None else None
    if folded is None or folded[0] != 1:
        return False
    n, h = folded[1], int(attrs["hidden_size"])
    states = [i for i in ((5, 6) if node.op_type == "LSTM" else (5,)) if len(node.input) > i and node.input[i]]
    fixed = False
    for i in states:
        st = _probe_shapes(model, node.input[i], axes, sizes)
        if st is None or tuple(st[1]) != (1, n, h) or tuple(st[0]) != (_FIX_STREAMS, n, h):
            continue
        rw = _Rewriter(model)
        stem = f"{node.name or node.output[0]}__fold{i}"
        # [1, -1, H], computed so that no pass here takes it for an export's constant shape
        target = rw.node("Concat", [rw.const(f"{stem}_head", np.array([1, -1], np.int64)),
                                    rw.const(f"{stem}_tail", np.array([h], np.int64))], f"{stem}_target", axis=0)
        node.input[i] = rw.node("Reshape", [node.input[i], target], stem)
        fixed = True
    if fixed:
        _toposort(model)
    return fixed


def _index_rows(model: onnx.ModelProto, node: onnx.NodeProto, axes: Mapping[str, Optional[int]],
                sizes: Mapping[str, int]) -> bool:
    """Step 3 for one ScatterND/GatherND (batch_dims 0): where its constant indices name batch row 0 of its
    data, gives it one index row per stream and returns True. The indices need a unit axis ``u`` (besides
    the last) that holds the batch of the updates (ScatterND) or of the output (GatherND: the data's batch
    axis where that is a unit axis of the indices, else the only one). Anything else is left as it is
    (False): the numeric proof names what mixes the streams."""
    consts = _constants(model)
    if node.op_type not in _INDEXED or len(node.input) < 2 or node.input[1] not in consts:
        return False
    if any(a.name == "batch_dims" and a.i != 0 for a in node.attribute):
        return False
    indices = np.asarray(consts[node.input[1]])
    if indices.ndim < 2 or not np.issubdtype(indices.dtype, np.integer):
        return False
    units = [j for j in range(indices.ndim - 1) if indices.shape[j] == 1]
    row0 = [a for a in range(indices.shape[-1]) if np.all(np.isin(indices[..., a], (0, -1)))]
    if not units or not row0:
        return False
    axis = _probe_axis(model, node.input[0], axes, sizes)
    if axis not in row0:
        return False  # the batch is not indexed, or other rows are named: left to the proof
    if node.op_type == "ScatterND":
        u = _probe_axis(model, node.input[2], axes, sizes) if len(node.input) > 2 else None
    else:
        u = axis if axis in units else (units[0] if len(units) == 1 else None)
    if u is None or u not in units:
        return False
    _Rewriter(model).row_indices(node, indices, axis, u)
    _toposort(model)
    return True


def _at(node: Optional[onnx.NodeProto], model: onnx.ModelProto, err: UnsupportedOpError) -> UnsupportedOpError:
    """Ranks a refusal among those of several candidate batch axes: the one that got furthest through the
    graph is reported, and a recurrent node rejecting its initial state's shape ranks last (it is what a
    state's batch axis guessed wrong looks like)."""
    reached = next((k for k, n in enumerate(model.graph.node) if node is not None and n.name == node.name), -1)
    err.reached = -1 if node is not None and node.op_type in ("LSTM", "GRU", "RNN") else reached  # type: ignore[attr-defined]
    return err


def _failing_node(model: onnx.ModelProto, error: str) -> Optional[onnx.NodeProto]:
    """The node ONNX Runtime names in ``error`` ("... running Reshape node. Name:'x' ...")."""
    import re

    hit = re.search(r"Name:'([^']*)'", error)
    if hit is None:
        return None
    return next((n for n in model.graph.node if n.name == hit.group(1)), None)


def _numeric_fix(model: onnx.ModelProto, axes: Mapping[str, Optional[int]], sizes: Mapping[str, int], where: str) -> None:
    """Runs the streams together; where a constant shape operand stops them (the node ONNX Runtime names),
    finds its input's batch axis by running up to it with 7 streams and with 1, and rewrites it; where a
    ScatterND/GatherND stops them, gives it one index row per stream (:func:`_index_rows`)."""
    rw = _Rewriter(model)
    names = [vi.name for vi in model.graph.output]
    for _ in range(len(model.graph.node) + 1):
        feeds = _feeds(model, axes, sizes, _FIX_STREAMS, seed=17)
        try:
            _run(model, feeds, names)
            return
        except Exception as err:
            error = str(err)
        node = _failing_node(model, error)
        if node is not None and (_index_rows(model, node, axes, sizes) or _updates_fix(model, node, axes, sizes)
                                 or _initial_state_fix(model, node)):
            continue
        if node is not None and node.op_type in ("GRU", "LSTM", "RNN"):
            if _swallowed_fix(model, axes, sizes, node) or _fold_recurrence(model, node, axes, sizes):
                continue
        idx = _SHAPE_OPERAND.get(node.op_type) if node is not None else None
        consts = _constants(model)
        if node is None or idx is None or node.op_type == "ConstantOfShape" or node.input[idx] not in consts:
            if node is not None and _swallowed_fix(model, axes, sizes, node):
                continue
            raise _at(node, model, UnsupportedOpError(fmt(_label(node) if node is not None else f"Model {where!r}",
                                         f"With the batch made dynamic, {_FIX_STREAMS} streams cannot run together: "
                                         f"{error.splitlines()[0][:300]}",
                                         f"--batch dynamic cannot pool the streams of {where!r} through this op; run one "
                                         "stream per Session (convert without --batch dynamic), or re-export the model "
                                         "with a dynamic batch.")))
        probe = _upto(model, node.input[0])
        one = {k: (np.take(v, [0], axis=axes[k]) if axes.get(k) is not None else v) for k, v in feeds.items()}
        s3 = _run(probe, feeds, [node.input[0]])[0].shape
        s1 = _run(probe, one, [node.input[0]])[0].shape
        moved = [a for a in range(len(s1)) if len(s3) == len(s1) and s3[a] != s1[a]]
        target = np.asarray(consts[node.input[idx]]).reshape(-1).astype(np.int64)
        folded = _stream_axis(s3, s1)
        if node.op_type == "Reshape" and folded is not None and folded[1] > 1 and -1 not in target:
            if _swallowed_fix(model, axes, sizes, node):
                continue  # folded upstream where they had a place of their own
            p = _memory_place(s1, folded[0], target)  # the streams folded into a dim with others upstream
            if p is not None:
                rw.batch_shape(node, node.input[0], folded[0], target, p, per=folded[1], times=int(target[p]))
                _toposort(model)
                continue
        p = None
        if len(moved) == 1 and s1[moved[0]] == 1:
            a = moved[0]
            p = _target_axis(list(s1), a, target) if node.op_type == "Reshape" else a + len(target) - len(s1)
        if (p is None or not 0 <= p < len(target)) and _swallowed_fix(model, axes, sizes, node):
            continue  # the streams were folded into another dim upstream
        if p is None or not 0 <= p < len(target):
            raise _at(node, model, UnsupportedOpError(fmt(_label(node), f"Has the constant shape {target.tolist()} and rnnrt cannot tell "
                                         f"where the streams' batch goes (its input is {list(s1)} for one stream, "
                                         f"{list(s3)} for {_FIX_STREAMS})",
                                         "Re-export the model with a dynamic batch, or run one stream per Session.")))
        rw.batch_shape(node, node.input[0], moved[0], target, p)
        _toposort(model)


def _swallowed_fix(model: onnx.ModelProto, axes: Mapping[str, Optional[int]], sizes: Mapping[str, int],
                   before: Optional[onnx.NodeProto] = None) -> bool:
    """A Reshape whose constant target holds -1 runs with any number of streams, and may fold them into
    another dim ([1, -1, 1, 33] on [B, 8, 2, 1, 33]) or put them where they do not start in memory
    ([33, -1, 16] on [B, 33, 1, 16] interleaves the streams' rows). Runs the graph (up to the inputs of
    ``before``, the node that failed) with 7 streams and with 1; the first such Reshape gets the streams
    where they start in its input's memory (:func:`_memory_place`): a unit axis, else folded into the dim
    that starts there ([B*33, -1, 16]) (True)."""
    consts = _constants(model)
    upstream = None
    if before is not None:
        upstream = {o for n in _upto(model, *[i for i in before.input if i and i not in consts]).graph.node for o in n.output}
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape" and n.input[1] in consts
                and (upstream is None or n.output[0] in upstream) and -1 in np.asarray(consts[n.input[1]]).reshape(-1)]
    if not reshapes:
        return False
    feeds = _feeds(model, axes, sizes, _FIX_STREAMS, seed=17)
    one = {k: (np.take(v, [0], axis=axes[k]) if axes.get(k) is not None else v) for k, v in feeds.items()}
    names = list(dict.fromkeys(t for n in reshapes for t in (n.input[0], n.output[0]) if t not in feeds))
    if not names:
        return False
    m = _upto(model, *names)
    try:
        many = {**{k: v.shape for k, v in feeds.items()}, **{t: v.shape for t, v in zip(names, _run(m, feeds, names))}}
        alone = {**{k: v.shape for k, v in one.items()}, **{t: v.shape for t, v in zip(names, _run(m, one, names))}}
    except Exception as err:  # the caller names the node that fails
        G_LOGGER.debug("Cannot run the Reshapes up to %s: %s", before.name if before is not None else "the end", err)
        return False

    for node in reshapes:  # the streams swallowed, or put where they do not start in memory (scrambled)
        into = _stream_axis(many[node.input[0]], alone[node.input[0]])
        if into is None:
            continue
        one_in, one_out = alone[node.input[0]], alone[node.output[0]]
        out = _stream_axis(many[node.output[0]], one_out)
        p = _memory_place(one_in, into[0], one_out)
        if p is None or (out is not None and out[0] == p):
            continue
        target = np.asarray(consts[node.input[1]]).reshape(-1).astype(np.int64)
        target = np.where(target == -1, target, np.asarray(one_out, np.int64))
        _Rewriter(model).batch_shape(node, node.input[0], into[0], target, p, per=into[1], times=int(one_out[p]))
        _toposort(model)
        return True
    return False


def _upto(model: onnx.ModelProto, name: str, *more: str) -> onnx.ModelProto:
    """``model`` cut to the nodes that compute ``name`` (and ``more``), its outputs."""
    producer = {o: n for n in model.graph.node for o in n.output}
    keep, stack = set(), [name, *more]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in keep:
            continue
        keep.add(id(node))
        stack.extend(i for i in node.input if i)
        for a in node.attribute:  # subgraph bodies read outer names
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                stack.extend(i for n in g.node for i in n.input if i)
    m = copy.deepcopy(model)
    nodes = [n for n, orig in zip(m.graph.node, model.graph.node) if id(orig) in keep]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in (name, *more))
    return m


def _run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(list(outputs), dict(feeds))


def _feeds(model: onnx.ModelProto, axes: Mapping[str, Optional[int]], sizes: Mapping[str, int], n: int,
           seed: int) -> dict[str, np.ndarray]:
    from rnnrt.importers.onnx.probe import _ONNX_TO_NP

    rng = np.random.default_rng(seed)
    weights = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in weights:
            continue
        dims = _dims(vi) or []
        shape = [n if axes.get(vi.name) == a else (d if isinstance(d, int) and d > 0 else sizes.get(d, 1))
                 for a, d in enumerate(dims)]
        dtype = _ONNX_TO_NP.get(vi.type.tensor_type.elem_type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = (rng.standard_normal(shape) * 0.5).astype(dtype)
        else:
            feeds[vi.name] = np.ones(shape, dtype)
    return feeds


def _rows_agree(model: onnx.ModelProto, axes: Mapping[str, Optional[int]], names: Sequence[str],
                sizes: Mapping[str, int], floats_only: bool = False) -> tuple[Optional[dict[str, Optional[int]]], Optional[str], str]:
    """Runs ``_STREAMS`` streams batched and each alone. Returns (each name's batch axis: the one axis that
    is ``_STREAMS`` batched and 1 alone, None if it has none; or None where they differ), the first name
    whose rows differ, and the run's error. ``floats_only`` skips integer tensors (shapes, indices)."""
    both = _feeds(model, axes, sizes, _STREAMS, seed=17)
    try:
        batched = dict(zip(names, _run(model, both, names)))
        rows = []
        for r in range(_STREAMS):
            one = {k: (np.take(v, [r], axis=axes[k]) if axes.get(k) is not None else v) for k, v in both.items()}
            rows.append(dict(zip(names, _run(model, one, names))))
    except Exception as err:
        return None, None, str(err).splitlines()[0][:400]
    found: dict[str, Optional[int]] = {}
    for name in names:
        got, alone = batched[name], rows[0][name]
        if floats_only and not np.issubdtype(got.dtype, np.floating):
            continue
        cand = [k for k in range(got.ndim) if got.ndim == alone.ndim and got.shape[k] == _STREAMS and alone.shape[k] == 1
                and all(got.shape[j] == alone.shape[j] for j in range(got.ndim) if j != k)]
        scale = max(1.0, float(np.max(np.abs(got)))) if got.size and np.issubdtype(got.dtype, np.floating) else 1.0
        if got.shape == alone.shape:
            if any(not np.allclose(got, rows[r][name], atol=1e-5 * scale, equal_nan=True) for r in range(_STREAMS)):
                return None, name, ""
            found[name] = None
            continue
        if len(cand) != 1:
            return None, name, ""
        for r in range(_STREAMS):
            if not np.allclose(np.take(got, [r], axis=cand[0]), rows[r][name], atol=1e-5 * scale, equal_nan=True):
                return None, name, ""
        found[name] = cand[0]
    return found, None, ""


def _first_mixing_node(model: onnx.ModelProto, axes: Mapping[str, Optional[int]], sizes: Mapping[str, int]) -> Optional[onnx.NodeProto]:
    """The first node (graph order) whose output rows differ between the batched and the one-stream runs."""
    m = copy.deepcopy(model)
    known = {o.name for o in m.graph.output}
    inner = [o for n in m.graph.node for o in n.output if o and o not in known and n.op_type not in ("Constant",)]
    for name in inner:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    producer = {o: n for n in m.graph.node for o in n.output}
    order = [o for n in m.graph.node for o in n.output if o and n.op_type != "Constant"]
    _, bad, _ = _rows_agree(m, axes, order, sizes, floats_only=True)
    return producer.get(bad) if bad is not None else None


def make_batch_dynamic(model: onnx.ModelProto, candidates: Mapping[str, Sequence[Optional[int]]], where: str,
                       sizes: Optional[Mapping[str, int]] = None) -> tuple[onnx.ModelProto, dict[str, Optional[int]], dict[str, Optional[int]]]:
    """Makes the batch of ``model`` symbolic (see the module doc).

    Args:
        model (onnx.ModelProto): The step graph.
        candidates (Mapping[str, Sequence[int | None]]): Per graph input, the axes that may be its batch
            axis, most likely first (None: the input is the same for every stream).
        where (str): The model's name for messages.
        sizes (Mapping[str, int] | None): Sizes for other dynamic dims in the proof runs (default 1).

    Returns:
        tuple: The rewritten model, the inputs' batch axes, the outputs' batch axes.

    Raises:
        UnsupportedOpError: An op mixes the streams; the message names it.
        ConfigError: No assignment of batch axes gives independent streams.
    """
    names = list(candidates)
    combos = list(itertools.islice(itertools.product(*(candidates[n] for n in names)), 64))
    first_error: Optional[Exception] = None
    for combo in combos:
        axes = dict(zip(names, combo))
        if all(a is None for a in combo):
            continue
        m = copy.deepcopy(model)
        del m.graph.value_info[:]  # shapes inferred with the fixed batch
        for vi in m.graph.input:
            if axes.get(vi.name) is not None:
                _set(vi, axes[vi.name], BATCH)
        _propagate(m)
        try:
            _numeric_fix(m, axes, sizes or {}, where)
            # a Reshape that folded the streams into another dim, a GatherND that read row 0 for every
            # stream: both ran, so the runs above could not name them
            while _swallowed_fix(m, axes, sizes or {}) or any(
                    _index_rows(m, n, axes, sizes or {}) for n in list(m.graph.node) if n.op_type == "GatherND"):
                _numeric_fix(m, axes, sizes or {}, where)
        except UnsupportedOpError as err:
            if first_error is None or getattr(err, "reached", -1) > getattr(first_error, "reached", -1):
                first_error = err
            continue
        out_names = [vi.name for vi in m.graph.output]
        out_axes, bad, error = _rows_agree(m, axes, out_names, sizes or {})
        if out_axes is not None:
            for vi in m.graph.output:
                d = _dims(vi)
                if out_axes[vi.name] is not None and d is not None and len(d) > out_axes[vi.name]:
                    _set(vi, out_axes[vi.name], BATCH)
            return m, axes, out_axes
        if first_error is None:
            node = _first_mixing_node(m, axes, sizes or {}) if bad is not None else None
            if node is not None:
                first_error = UnsupportedOpError(fmt(
                    _label(node), "Mixes the streams: with the batch made dynamic, its output rows for streams run "
                    "together differ from each stream run alone (e.g. constant indices or statistics over the batch)",
                    f"--batch dynamic cannot pool the streams of {where!r} through this op; run one stream per Session "
                    "(convert without --batch dynamic), or re-export the model with a dynamic batch."))
            elif error:
                first_error = UnsupportedOpError(fmt(f"Model {where!r}", f"With the batch made dynamic, {_STREAMS} streams "
                                                     f"cannot run together: {error}",
                                                     "Run one stream per Session (convert without --batch dynamic), or "
                                                     "re-export the model with a dynamic batch."))
    if first_error is not None:
        raise first_error
    raise ConfigError(fmt(f"Model {where!r}", "No input has an axis that can be the batch (stream) axis",
                          "Convert without --batch dynamic, or re-export the model with a batch axis."))
