"""The ONNX recurrent ops (LSTM, GRU, RNN): their state slots, and the checks and rewrites that let a node stream.

A node with ``sequence_lens`` or direction ``reverse`` is refused; a bidirectional one keeps its forward
direction on request (``forward_only``); a ``layout=1`` node is rewritten to ``layout=0`` between Transposes.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import onnx_graphsurgeon as gs

from rnnrt.errors import UnsupportedOpError, fmt
from rnnrt.importers.onnx.fold import const_value
from rnnrt.importers.onnx.shapes import _np_dtype


# Per recurrent op: (input index of an initial state, output index of the matching final state, suffixes).
# Inputs are X, W, R, B, sequence_lens, initial_h[, initial_c, P]; outputs Y, Y_h[, Y_c].
RECURRENT_OPS: dict[str, tuple[tuple[int, int, str, str], ...]] = {
    "LSTM": ((5, 1, "h0", "hT"), (6, 2, "c0", "cT")),
    "GRU": ((5, 1, "h0", "hT"),),
    "RNN": ((5, 1, "h0", "hT"),),
}
_SEQUENCE_LENS = 4

# layout=1 (batch-major) <-> layout=0 (time-major) permutations.
# X, initial/final state: [B, T|D, .] <-> [T|D, B, .]   Y: [T, D, B, H] -> [B, T, D, H]
_SWAP01 = [1, 0, 2]
_Y_TO_LAYOUT1 = [2, 0, 1, 3]


def _node_label(node: gs.Node) -> str:
    return f"{node.op} node {node.name!r}" if node.name else f"{node.op} node (outputs {[t.name for t in node.outputs]})"


def _check_node(node: gs.Node, forward_only: bool, notes: list[str], graph: gs.Graph) -> None:
    """Rejects what cannot stream; rewrites bidirectional (on request) and layout=1 nodes."""
    label = _node_label(node)
    if len(node.inputs) > _SEQUENCE_LENS and node.inputs[_SEQUENCE_LENS].name:
        raise UnsupportedOpError(
            fmt(label, f"Has a sequence_lens input ({node.inputs[_SEQUENCE_LENS].name!r}), which cannot be honoured "
                "when the sequence is fed frame by frame",
                "Re-export without sequence lengths (no packed sequences); use Session.reset(slots=...) or "
                "--add-reset to start new sequences.")
        )
    direction = node.attrs.get("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction == "reverse":
        raise UnsupportedOpError(
            fmt(label, "Runs in direction 'reverse', which needs the whole sequence and cannot stream",
                "Only forward recurrent layers can be streamed frame by frame.")
        )
    if direction == "bidirectional":
        if not forward_only:
            raise UnsupportedOpError(
                fmt(label, "Is bidirectional; its backward direction needs the whole sequence and cannot stream",
                    "Export a unidirectional model, or convert with forward_only=True (--forward-only) to keep "
                    "the forward direction (the backward half of its outputs becomes zeros).")
            )
        _keep_forward(node, graph)
        notes.append(f"{label} is bidirectional: only its forward direction is kept (--forward-only); "
                     "the backward half of its outputs is zeros.")
    if int(node.attrs.get("layout", 0)) == 1:
        _to_layout0(node, graph)


def _keep_forward(node: gs.Node, graph: gs.Graph) -> None:
    label = _node_label(node)
    for idx in (1, 2, 3, 7):  # W, R, B, P: direction is axis 0
        if len(node.inputs) <= idx or not node.inputs[idx].name:
            continue
        value = const_value(node.inputs[idx])
        if value is None:
            raise UnsupportedOpError(
                fmt(label, f"Input {idx} ({node.inputs[idx].name!r}) is not a constant, so its forward direction "
                    "cannot be split off", "forward_only needs constant weights.")
            )
        node.inputs[idx] = gs.Constant(f"{node.inputs[idx].name}__fwd", np.ascontiguousarray(value[:1]))
    layout = int(node.attrs.get("layout", 0))
    dir_axis_state = 1 if layout == 1 else 0
    for idx in (5, 6):  # initial states: keep direction 0
        if len(node.inputs) > idx and node.inputs[idx].name:
            src = node.inputs[idx]
            out = gs.Variable(f"{src.name}__fwd", dtype=src.dtype)
            starts = gs.Constant(f"{out.name}__starts", np.array([0], np.int64))
            ends = gs.Constant(f"{out.name}__ends", np.array([1], np.int64))
            axes = gs.Constant(f"{out.name}__axes", np.array([dir_axis_state], np.int64))
            graph.layer(op="Slice", inputs=[src, starts, ends, axes], outputs=[out])
            node.inputs[idx] = out
    node.attrs["direction"] = "forward"
    # Consumers still expect two directions: concatenate zeros for the backward one.
    dir_axis = {0: 2 if layout == 1 else 1, 1: dir_axis_state, 2: dir_axis_state}
    for k, var in enumerate(list(node.outputs)):
        if not var.name or not var.outputs and var not in graph.outputs:
            continue
        fwd = gs.Variable(f"{var.name}__fwd", dtype=var.dtype)
        node.outputs[k] = fwd
        zeros = gs.Variable(f"{var.name}__zeros", dtype=var.dtype)
        graph.layer(op="Mul", inputs=[fwd, gs.Constant(f"{var.name}__zero", np.zeros((), _np_dtype(var.dtype)))],
                    outputs=[zeros])
        graph.layer(op="Concat", inputs=[fwd, zeros], outputs=[var], attrs={"axis": dir_axis[k]})


def _to_layout0(node: gs.Node, graph: gs.Graph) -> None:
    """Rewrites a layout=1 (batch-major) node as layout=0 between Transposes (ORT and TensorRT want 0)."""
    x = node.inputs[0]
    xt = gs.Variable(f"{x.name}__tm", dtype=x.dtype)
    graph.layer(op="Transpose", inputs=[x], outputs=[xt], attrs={"perm": _SWAP01})
    node.inputs[0] = xt
    for idx in (5, 6):
        if len(node.inputs) > idx and node.inputs[idx].name:
            src = node.inputs[idx]
            dst = gs.Variable(f"{src.name}__tm", dtype=src.dtype)
            graph.layer(op="Transpose", inputs=[src], outputs=[dst], attrs={"perm": _SWAP01})
            node.inputs[idx] = dst
    for k, var in enumerate(list(node.outputs)):
        if not var.name:
            continue
        inner = gs.Variable(f"{var.name}__tm", dtype=var.dtype)
        node.outputs[k] = inner
        graph.layer(op="Transpose", inputs=[inner], outputs=[var], attrs={"perm": _Y_TO_LAYOUT1 if k == 0 else _SWAP01})
    node.attrs["layout"] = 0


class _Slot:
    """One recurrent state of one node: its initial-state input and final-state output."""

    def __init__(self, node: gs.Node, in_index: int, out_index: int, in_suffix: str, out_suffix: str) -> None:
        self.node = node
        self.in_index = in_index
        self.out_index = out_index
        self.in_suffix = in_suffix
        self.out_suffix = out_suffix

    def initial(self) -> Optional[gs.Tensor]:
        if len(self.node.inputs) > self.in_index and self.node.inputs[self.in_index].name:
            return self.node.inputs[self.in_index]
        return None

    def final(self, dtype: Any, shape: list) -> gs.Variable:
        """The final-state output, created if the node does not emit it."""
        outs = self.node.outputs
        while len(outs) <= self.out_index:
            outs.append(gs.Variable.empty())
        var = outs[self.out_index]
        if not var.name:
            var = gs.Variable(f"{self.node.name or self.node.op}__{self.out_suffix}", dtype=dtype, shape=shape)
            outs[self.out_index] = var
        return var

    def set_initial(self, var: gs.Tensor) -> None:
        ins = self.node.inputs
        while len(ins) <= self.in_index:
            ins.append(gs.Variable.empty())
        ins[self.in_index] = var
