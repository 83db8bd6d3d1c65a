"""Index tracing: whether a model output carries, element for element, the state a model input feeds to
recurrent nodes (only moves of values pass: Slice, Concat, Squeeze, Transpose ...)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import onnx_graphsurgeon as gs

from rnnrt.importers.onnx.shapes import _np_dtype

if TYPE_CHECKING:
    from rnnrt.importers.onnx.rnn_ops import _Slot

G_LOGGER = logging.getLogger("rnnrt.onnx")


def _concrete(shape: Any, fill: int = 3) -> Optional[tuple[int, ...]]:
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else fill for d in shape)


def _run_subgraph(graph: gs.Graph, feeds: dict[str, np.ndarray], outputs: list[str]) -> Optional[list[np.ndarray]]:
    """Runs a small graph in ONNX Runtime; None if it cannot be run."""
    try:
        import onnxruntime as ort

        model = gs.export_onnx(graph, do_type_check=False)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        return sess.run(outputs, {k: v for k, v in feeds.items() if k in names})
    except Exception as err:  # an unrunnable wiring means "not a plain state pair"
        G_LOGGER.debug("Wiring check could not run: %s", err)
        return None


def _zeros_for(var: gs.Variable) -> Optional[np.ndarray]:
    shape = _concrete(var.shape)
    if shape is None:
        return None
    return np.zeros(shape, _np_dtype(var.dtype))


def _wired_pair(graph: gs.Graph, state_in: gs.Variable, slots: list[_Slot], out_candidates: list[gs.Variable]) -> Optional[str]:
    """The graph output that carries exactly the state ``state_in`` feeds to ``slots``, element for element.

    Index tracing: feed ``state_in`` with 1..n, read which element reaches each node's initial state,
    feed those indices in place of the nodes' final states and check an output reproduces 1..n in the
    shape of ``state_in``. Only moves of values (Slice, Concat, Squeeze, Transpose ...) pass this.
    """
    shape = _concrete(state_in.shape)
    if shape is None or int(np.prod(shape)) >= (1 << 24):
        return None
    n = int(np.prod(shape))
    index = np.arange(1, n + 1, dtype=_np_dtype(state_in.dtype)).reshape(shape)
    others = {v.name: _zeros_for(v) for v in graph.inputs if v.name != state_in.name}
    if any(v is None for v in others.values()):
        return None

    # Input side: which elements of state_in reach each initial state.
    g1 = graph.copy()
    t1 = g1.tensors()
    g1.outputs = [t1[s.initial().name] for s in slots]
    for v in g1.outputs:
        v.dtype = v.dtype or state_in.dtype
    g1.cleanup(remove_unused_graph_inputs=True, recurse_subgraphs=False)
    got = _run_subgraph(g1, {state_in.name: index, **others}, [v.name for v in g1.outputs])
    if got is None:
        return None

    # Output side: feed those indices as the final states.
    for cand in out_candidates:
        g2 = graph.copy()
        t2 = g2.tensors()
        finals = []
        replaced: dict[str, gs.Variable] = {}
        for k, s in enumerate(slots):
            old = t2[s.node.outputs[s.out_index].name]
            new = gs.Variable(f"__trace_final_{k}", dtype=state_in.dtype, shape=list(got[k].shape))
            for consumer in list(old.outputs):
                _replace_input(consumer, old, new)
            if old in g2.outputs:
                g2.outputs = [new if o is old else o for o in g2.outputs]
            finals.append(new)
            replaced[old.name] = new
        target = replaced.get(cand.name, t2[cand.name])
        g2.inputs = finals + [t2[name] for name in others]
        g2.outputs = [target]
        g2.cleanup(remove_unused_graph_inputs=True, recurse_subgraphs=False)
        feeds = {f"__trace_final_{k}": got[k] for k in range(len(slots))}
        out = _run_subgraph(g2, {**feeds, **others}, [target.name])
        if out is not None and out[0].shape == index.shape and np.array_equal(out[0], index):
            return cand.name
    return None


def _replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    for k, t in enumerate(node.inputs):
        if t is old:
            node.inputs[k] = new


def _ancestor_tensors(t: gs.Tensor) -> set[int]:
    seen: set[int] = set()
    stack = [t]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        for node in cur.inputs:
            stack.extend(node.inputs)
    return seen
