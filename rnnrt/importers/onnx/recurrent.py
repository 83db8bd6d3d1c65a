"""The state of a model's recurrent nodes: exposed as new graph inputs/outputs, or paired with the model's own
state inputs and outputs where index tracing (:mod:`.wiring`) proves the wiring; nodes the model's own caches
carry are left as they are."""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np
import onnx_graphsurgeon as gs

from rnnrt.errors import ModelImportError, fmt
from rnnrt.importers.onnx.axes import _prober
from rnnrt.importers.onnx.fold import const_value, quiet_third_party, unique_name, value_sources
from rnnrt.importers.onnx.probe import inner_shapes
from rnnrt.importers.onnx.rnn_ops import RECURRENT_OPS, _check_node, _node_label, _Slot
from rnnrt.importers.onnx.shapes import _infer, _np_dtype, _spec_shape
from rnnrt.importers.onnx.wiring import _ancestor_tensors, _wired_pair
from rnnrt.ir.stepgraph import StatePair


def _base_name(node: gs.Node, index: int, used: set[str]) -> str:
    """A readable, unique stem for a node's state tensors: '/rnn/LSTM_1' -> 'rnn.LSTM_1'."""
    stem = re.sub(r"[^A-Za-z0-9_.:-]+", ".", node.name or "").strip(".") or f"{node.op.lower()}{index}"
    name, k = stem, 1
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


def _nonzero_constant(t: gs.Tensor) -> bool:
    """Whether an input-free initial state is known to hold non-zero values."""
    value = const_value(t)
    if value is None and len(t.inputs) == 1 and t.inputs[0].op == "ConstantOfShape":
        fill = t.inputs[0].attrs.get("value")
        value = np.asarray(fill.values) if fill is not None else np.zeros(1)
    if value is None and len(t.inputs) == 1 and t.inputs[0].op in ("Slice", "Expand", "Identity", "Reshape"):
        return _nonzero_constant(t.inputs[0].inputs[0])
    return value is not None and bool(np.any(value != 0))


def _subgraph_nodes(graph: gs.Graph) -> list[gs.Node]:
    found = []
    for node in graph.nodes:
        for value in node.attrs.values():
            subs = value if isinstance(value, list) else [value]
            for sub in subs:
                if isinstance(sub, gs.Graph):
                    found.extend(sub.nodes)
                    found.extend(_subgraph_nodes(sub))
    return found


def _expose_and_pair(graph: gs.Graph, nodes: list[gs.Node], notes: list[str]) -> list[StatePair]:
    fixed_batch = _fixed_batches(graph, nodes)
    graph_inputs = {v.name: v for v in graph.inputs}
    used = {t for t in graph.tensors()}
    stems: set[str] = set()
    node_stem = {id(n): _base_name(n, k, stems) for k, n in enumerate(nodes)}
    slots_by_input: dict[str, list[_Slot]] = {}
    to_expose: list[_Slot] = []
    for node in nodes:
        for in_idx, out_idx, sin, sout in RECURRENT_OPS[node.op]:
            slot = _Slot(node, in_idx, out_idx, sin, sout)
            init = slot.initial()
            sources = value_sources(init) & set(graph_inputs) if init is not None else set()
            if not sources:
                if init is not None and _nonzero_constant(init):
                    notes.append(f"{_node_label(node)}: its constant initial state {init.name!r} is not zero; the "
                                 "Session starts every sequence from zeros instead.")
                to_expose.append(slot)
            elif len(sources) == 1:
                slots_by_input.setdefault(next(iter(sources)), []).append(slot)
            else:
                notes.append(f"{_node_label(node)}: its initial state {init.name!r} is computed from several inputs "
                             f"{sorted(sources)}; its state is exposed on its own instead.")
                to_expose.append(slot)

    pairs: list[StatePair] = []
    for name, slots in slots_by_input.items():
        state_in = graph_inputs[name]
        finals = [s.final(state_in.dtype, None) for s in slots]
        final_ids = {id(f) for f in finals}
        candidates = [o for o in graph.outputs if final_ids & _ancestor_tensors(o)]
        out_name = _wired_pair(graph, state_in, slots, candidates)
        if out_name is None:
            notes.append(f"Input {name!r} feeds the initial state of {[_node_label(s.node) for s in slots]} but no "
                         "output carries their final states element for element; each node's state is exposed on "
                         f"its own, and the initial state that came from {name!r} is no longer used.")
            to_expose.extend(slots)
            continue
        shape = _spec_shape(state_in)
        out_var = next(o for o in graph.outputs if o.name == out_name)
        axis = _state_batch_axis(slots, state_in)
        if shape[axis] == "?":
            shape[axis] = "batch"
        if any(isinstance(d, str) for a, d in enumerate(shape) if a != axis):
            shape = _resolve_state_dims(graph, name, out_name, axis, shape, notes)
        state_in.shape = list(shape)
        pairs.append(StatePair(name, out_name, tuple(shape), _np_dtype(state_in.dtype).name, axis))
        notes.append(f"Paired existing state {name!r} -> {out_name!r} (checked through the graph wiring).")
        out_var.shape = list(shape)

    order = {id(n): k for k, n in enumerate(nodes)}
    to_expose.sort(key=lambda sl: (order[id(sl.node)], sl.in_index))
    for slot in to_expose:
        node = slot.node
        x = node.inputs[0]
        dtype = x.dtype or np.float32
        hidden = int(node.attrs["hidden_size"])
        batch = x.shape[1] if x.shape is not None and len(x.shape) > 1 else None
        if isinstance(batch, str) and x.name in fixed_batch:
            batch = fixed_batch[x.name]  # a fixed batch the exporter named after another symbol (DFN3: 'S')
        if not (isinstance(batch, int) and batch > 0) and not (isinstance(batch, str) and batch):
            batch = "batch"
        shape = [1, batch, hidden]
        stem = node_stem[id(node)]
        in_name, out_name = unique_name(f"{stem}.{slot.in_suffix}", used), unique_name(f"{stem}.{slot.out_suffix}", used)
        var_in = gs.Variable(in_name, dtype=dtype, shape=shape)
        slot.set_initial(var_in)
        graph.inputs.append(var_in)
        final = slot.final(dtype, shape)
        var_out = gs.Variable(out_name, dtype=dtype, shape=shape)
        graph.layer(op="Identity", inputs=[final], outputs=[var_out])
        graph.outputs.append(var_out)
        pairs.append(StatePair(in_name, out_name, tuple(shape), _np_dtype(dtype).name, 1))
    if to_expose:
        names = sorted({node_stem[id(s.node)] for s in to_expose})
        notes.append(f"Exposed the recurrent state of {names} as inputs <node>.h0/.c0 and outputs <node>.hT/.cT.")
    return pairs


def _fixed_batches(graph: gs.Graph, nodes: list[gs.Node]) -> dict[str, int]:
    """The recurrent inputs X whose batch dim inference left as a symbol but which stays the same when the
    inputs' dynamic dims change (found by :func:`~rnnrt.importers.onnx.probe.inner_shapes`): X name -> size."""
    names = [n.inputs[0].name for n in nodes if n.inputs[0].shape is not None and len(n.inputs[0].shape) > 1
             and isinstance(n.inputs[0].shape[1], str)]
    if not names:
        return {}
    with quiet_third_party():
        model = gs.export_onnx(graph, do_type_check=False)
    runs = inner_shapes(model, names)
    if runs is None:
        return {}
    return {n: runs[0][n][1] for n in names if runs[0][n][1] == runs[1][n][1]}


def _resolve_state_dims(graph: gs.Graph, state_in: str, state_out: str, axis: int, shape: list, notes: list[str]) -> list:
    """A state dim other than the batch that the exporter left as a symbol (``unk__188``) gets its size,
    read from a probe run, so that the config passes rnnrt's own validation."""
    with quiet_third_party():
        model = _infer(gs.export_onnx(graph, do_type_check=False))
    prober = _prober(model, {state_in: axis})
    size = prober.find_size(1) if prober is not None else None
    out = prober.run(prober.feeds(1, size)) if size is not None else None
    if out is None or state_out not in out or out[state_out].ndim != len(shape):
        raise ModelImportError(fmt(f"State input {state_in!r}", f"Has dynamic dims {shape} besides the batch axis {axis}, "
                                   "and the model could not be run to resolve them",
                                   "Re-export with fixed state dims, or declare the pair with an override."))
    resolved = [d if a == axis or isinstance(d, int) else int(out[state_out].shape[a]) for a, d in enumerate(shape)]
    notes.append(f"State {state_in!r}: dims the exporter left symbolic resolved to {resolved}.")
    return resolved


def _state_batch_axis(slots: list[_Slot], state_in: gs.Variable) -> int:
    """The axis of an existing state input that indexes streams: the one with the recurrent nodes' batch dim."""
    shape = state_in.shape or []
    x = slots[0].node.inputs[0]
    batch = x.shape[1] if x.shape is not None and len(x.shape) > 1 else None
    hits = [a for a, d in enumerate(shape) if batch is not None and d == batch]
    if len(hits) == 1:
        return hits[0]
    init = slots[0].initial()
    init_batch = init.shape[1] if init is not None and init.shape is not None and len(init.shape) > 1 else None
    hits = [a for a, d in enumerate(shape) if init_batch is not None and d == init_batch]
    if len(hits) == 1:
        return hits[0]
    return 1 if len(shape) == 3 else 0


def _carried_by_caches(graph: gs.Graph, nodes: list[gs.Node], cache_inputs: set[str], notes: list[str]) -> list[gs.Node]:
    """The recurrent nodes to leave as they are because the model's own caches carry its state.

    In a model with caches, a node whose initial states are absent or constant starts from them every
    call: its sequence axis lies inside one frame (GTCRN's bidirectional GRUs over 33 sub-bands), not along
    the stream's time. A forward node whose initial state is computed from a cache and non-cache inputs is
    carried by that cache (exposing it would cut the cache off), and so is every forward node fed by such
    a cache (GTCRN's ``tra_cache``). Other nodes fed by one input are paired through their wiring as usual;
    a bidirectional one fed by a cache streams along time and is refused.
    """
    if not cache_inputs:
        return []
    names = {v.name for v in graph.inputs}
    inner, forward = [], []
    for node in nodes:
        sources: set[str] = set()
        for in_idx, _, _, _ in RECURRENT_OPS[node.op]:
            if len(node.inputs) > in_idx and node.inputs[in_idx].name:
                sources |= value_sources(node.inputs[in_idx]) & names
        direction = node.attrs.get("direction", "forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if not sources:
            inner.append(node)
        elif sources & cache_inputs and direction == "forward":
            forward.append((node, sources))
    # A cache that also feeds a state computed from other inputs carries all the nodes it feeds.
    mixed = set().union(*[src & cache_inputs for _, src in forward if src - cache_inputs]) if forward else set()
    fed = [node for node, src in forward if src & mixed]
    if fed or inner:
        text = f"The model carries its state in its own inputs/outputs {sorted(cache_inputs)}; recurrent nodes are left as they are"
        if fed:
            text += f": {[n.name or n.op for n in fed]} start from states computed from those caches"
        if inner:
            text += (f"{';' if fed else ':'} {[n.name or n.op for n in inner]} start from zeros every call (their "
                     "sequence axis lies inside one frame, bidirectional ones too)")
        notes.append(text + ".")
    return fed + inner


def _recurrent_states(graph: gs.Graph, forward_only: bool, notes: list[str],
                      cache_inputs: Optional[set[str]] = None) -> tuple[gs.Graph, list[StatePair], list[str]]:
    """Exposes or pairs the state of the main graph's recurrent nodes (other than those the model's own
    caches carry, see :func:`_carried_by_caches`); notes nested ones."""
    nested = [n for n in _subgraph_nodes(graph) if n.op in RECURRENT_OPS]
    if nested:
        inputs = sorted(_if_condition_inputs(graph))
        hint = (f" Bind the input(s) their condition depends on ({', '.join(inputs)}) with --set NAME=VALUE to "
                "inline the If." if inputs else "")
        notes.append(f"{len(nested)} recurrent node(s) stay inside Loop/Scan/If bodies; their state is carried only "
                     f"where the model's own inputs/outputs carry it (explicit state pairs).{hint}")
    nodes = [n for n in graph.nodes if n.op in RECURRENT_OPS]
    kept = _carried_by_caches(graph, nodes, cache_inputs or set(), notes)
    nodes = [n for n in nodes if all(n is not k for k in kept)]
    used = {n.name for n in graph.nodes}
    for n in kept:  # found again by name after the re-import below
        n.name = n.name or unique_name(f"{n.op}_cached", used)
    names_kept = {n.name for n in kept}
    if not nodes:
        return graph, [], notes
    for node in nodes:
        _check_node(node, forward_only, notes, graph)
    # Rewrites above made tensors without shapes: infer them again.
    graph.cleanup().toposort()
    graph = gs.import_onnx(_infer(gs.export_onnx(graph, do_type_check=False)))
    nodes = [n for n in graph.nodes if n.op in RECURRENT_OPS and n.name not in names_kept]
    states = _expose_and_pair(graph, nodes, notes)
    return graph, states, notes


def _if_condition_inputs(graph: gs.Graph) -> set[str]:
    names = {v.name for v in graph.inputs}
    found: set[str] = set()
    for node in graph.nodes:
        if node.op == "If":
            found |= value_sources(node.inputs[0]) & names
    return found
