"""Puts an exact no-op (``Add(x, -0.0)``) between a recurrent node's initial state and the graph input it is cut from.

Why: TensorRT-RTX 1.7.1 (Myelin) fails to build a graph with two or more RNN/LSTM/GRU nodes when the initial
state of a node after the first is sliced out of a graph input (DTLN's ``model_1.onnx``: two stacked LSTMs
whose ``initial_h``/``initial_c`` are Slice -> Squeeze -> Unsqueeze of one state input ``[1, 2, 128, 2]``)::

    MyelinCheckException: bb.cpp:43: CHECK(append_to->parent() == this) failed.

It fails on the package's unmodified file as well: a builder bug. Bisected on small graphs
(``tests/build/test_state_barrier.py`` builds them): LSTM, GRU and RNN alike; one recurrent node builds;
state fed from its own graph input or a constant builds; the first node's state needs no barrier, and a
barrier there alone does not help; an LSTM needs it on both ``initial_h`` and ``initial_c``; an
``Identity`` or ``Mul(x, 1)`` in between is folded away and the build still fails; an ``Add`` of a zero
constant in between makes it build. Myelin's exact trigger also depends on the state input's layout
(DTLN's ``[batch, layer, hidden, h/c]`` fails, ``[batch, layer, h/c, hidden]`` builds), which the rewrite
does not try to model: it guards every such slice, which is exact and costs one tiny Add per state
tensor (GTCRN gets two it would not need).

The rewrite: for each initial state input (``initial_h``, and ``initial_c`` of an LSTM) of every recurrent
node after the first (in graph order), when that tensor is a graph input cut by a ``Slice``, ``Split`` or
``Gather`` followed only by data-movement ops (Squeeze, Unsqueeze, Reshape, ...), ``Add(x, -0.0)`` is put
in front of the node. ``x + (-0.0)`` is ``x`` bit for bit for every float (``+0 + -0`` is ``+0``, ``-0 + -0``
is ``-0``, NaN stays NaN), so the graph computes exactly what it did. Graphs without the pattern are
returned untouched (the same object). It is applied to the graph handed to the builder, never to the step
graph the config points to; ``rnnrt build`` records each inserted barrier in the plan manifest
(``graph_rewrites``), saves the rewritten graph beside the plan (``<plan>.onnx``, so ``rnnrt verify
--backends onnxruntime,onnxruntime:graph=plan`` checks it), and ``rnnrt inspect`` lists them.

Example::

    from rnnrt.build.state_barrier import insert_state_barriers

    model, barriers = insert_state_barriers(onnx.load("model.onnx"))
    for b in barriers:
        print(b.describe())
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

G_LOGGER = logging.getLogger("rnnrt.build")

__all__ = ["RECURRENT_OPS", "StateBarrier", "find_state_barriers", "insert_state_barriers"]

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
"""Recurrent ops whose initial state the rewrite guards."""

# Inputs of each recurrent op that hold its initial state (ONNX: initial_h is #5, LSTM's initial_c #6).
_STATE_INPUTS = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}
# Ops that cut a graph input into pieces (where the pattern starts).
_CUT_OPS = frozenset({"Slice", "Split", "Gather"})
# Ops that only move data between the cut and the recurrent node.
_MOVE_OPS = frozenset({"Squeeze", "Unsqueeze", "Reshape", "Flatten", "Transpose", "Identity", "Slice", "Split",
                       "Gather", "Expand"})

REWRITE = "rnn-state-barrier"
"""The name of the rewrite in the plan manifest's ``graph_rewrites``."""


@dataclasses.dataclass(frozen=True)
class StateBarrier:
    """One ``Add(x, -0.0)`` put in front of a recurrent node's initial state.

    Args:
        node (str): The recurrent node.
        op (str): Its op (``LSTM``, ``GRU``, ``RNN``).
        input (str): The state tensor it read (``initial_h``/``initial_c``).
        source (str): The graph input that tensor is cut from.
        barrier (str): The name of the inserted Add node (its output is ``<input>.barrier``).
    """

    node: str
    op: str
    input: str
    source: str
    barrier: str

    def describe(self) -> str:
        return (f"{self.op} node {self.node!r}: Add(x, -0.0) between {self.input!r} (cut from graph input "
                f"{self.source!r}) and the node")

    def record(self) -> dict[str, str]:
        """The JSON record kept in the plan manifest."""
        return {"rewrite": REWRITE, **dataclasses.asdict(self)}


def _is_recurrent(node: onnx.NodeProto) -> bool:
    return node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx")


def _cut_graph_input(name: str, producers: dict[str, onnx.NodeProto], graph_inputs: set[str]) -> str | None:
    """The graph input ``name`` is cut from through a Slice/Split/Gather and data-movement ops, else None."""
    cut = False
    seen = 0
    while name not in graph_inputs:
        node = producers.get(name)
        if node is None or node.op_type not in _MOVE_OPS or not node.input or seen > 64:
            return None
        cut = cut or node.op_type in _CUT_OPS
        name = node.input[0]
        seen += 1
    return name if cut else None


def find_state_barriers(model: onnx.ModelProto) -> list[StateBarrier]:
    """The barriers :func:`insert_state_barriers` would insert (none: the graph is left as it is)."""
    graph = model.graph
    recurrent = [n for n in graph.node if _is_recurrent(n)]
    if len(recurrent) < 2:
        return []
    initializers = {t.name for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input if i.name not in initializers}
    producers = {o: n for n in graph.node for o in n.output if o}
    used: set[str] = {n.name for n in graph.node} | set(producers) | graph_inputs | initializers
    barriers = []
    names: dict[str, str] = {}  # state tensor -> its barrier (two nodes reading one tensor share it)
    for i, node in enumerate(recurrent):
        if i == 0:
            continue  # bisected: the first node's state needs no barrier (and one there alone does not help)
        for index in _STATE_INPUTS[node.op_type]:
            if index >= len(node.input) or not node.input[index]:
                continue
            source = _cut_graph_input(node.input[index], producers, graph_inputs)
            if source is None:
                continue
            name = node.name or f"{node.op_type}_{i}"
            barrier = names.get(node.input[index]) or _unique(f"{node.input[index]}.barrier", used)
            names[node.input[index]] = barrier
            barriers.append(StateBarrier(node=name, op=node.op_type, input=node.input[index], source=source,
                                         barrier=barrier))
    return barriers


def _unique(name: str, used: set[str]) -> str:
    candidate, k = name, 0
    while candidate in used:
        k += 1
        candidate = f"{name}{k}"
    used.add(candidate)
    return candidate


def insert_state_barriers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[StateBarrier]]:
    """Inserts ``Add(x, -0.0)`` before each guarded initial state (see the module doc).

    Args:
        model (onnx.ModelProto): The step graph (not modified).

    Returns:
        tuple: ``(model, barriers)``. Without the pattern: the same ``model`` object and ``[]``; else a
        rewritten copy and what was inserted.
    """
    barriers = find_state_barriers(model)
    if not barriers:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    elem = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    by_input: dict[str, StateBarrier] = {}
    for b in barriers:
        by_input.setdefault(b.input, b)
    nodes = []
    inserted: set[str] = set()
    recurrent = 0
    for node in graph.node:
        recurrent += _is_recurrent(node)
        if _is_recurrent(node) and recurrent > 1:  # the first keeps its state, as find_state_barriers says
            for index in _STATE_INPUTS[node.op_type]:
                b = by_input.get(node.input[index]) if index < len(node.input) else None
                if b is None:
                    continue
                out_name = b.barrier
                if out_name not in inserted:
                    zero = f"{b.barrier}.neg_zero"
                    dtype = helper.tensor_dtype_to_np_dtype(elem.get(b.source) or onnx.TensorProto.FLOAT)
                    graph.initializer.append(numpy_helper.from_array(np.array(-0.0, dtype=dtype), zero))
                    nodes.append(helper.make_node("Add", [b.input, zero], [out_name], name=b.barrier))
                    inserted.add(out_name)
                node.input[index] = out_name
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    for b in barriers:
        G_LOGGER.info("Graph rewrite for the builder (%s): %s.", REWRITE, b.describe())
    return out, barriers
