"""ONNX model with LSTM/GRU/RNN nodes → step graph whose recurrent state is explicit inputs/outputs.

Exported recurrent models come in two shapes. Either the recurrent nodes have no state inputs (or
constant zeros, as torch emits when no ``h0`` is passed), so every call starts from zero and the model
cannot stream; or the model has ``h0``/``c0``-style inputs and ``hn``/``cn``-style outputs that nothing
connects. :func:`convert_onnx` handles both: it exposes absent or constant initial states as graph
inputs and the final states as graph outputs, and it pairs existing state inputs with state outputs by
following the graph (an index-tracing check, not names or positions).

::

    from rnnrt.config import save_step_graph
    from rnnrt.importers.onnx.importer import convert_onnx

    step = convert_onnx("lstm.onnx", add_reset=True)
    save_step_graph(step, "out")          # out/model.onnx + out/model.yaml
"""

from __future__ import annotations

import copy
import logging
import os
import re
from typing import Any, Mapping, Optional, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from rnnrt.errors import ConfigError, ModelImportError, UnsupportedOpError, fmt
from rnnrt.importers.onnx.acyclic import check_acyclic
from rnnrt.importers.onnx.context import add_context, parse_context
from rnnrt.importers.onnx.explicit import confirm_pairs, find_explicit_pairs
from rnnrt.importers.onnx.fold import bind_constants, fold, quiet_third_party, unique_name, value_sources
from rnnrt.importers.onnx.probe import Prober, onnx_dims
from rnnrt.importers.onnx.sizes import check_declared_sizes
from rnnrt.ir.bindings import onnx_tensor_type
from rnnrt.ir.stepgraph import Continuation, Dim, StatePair, StepGraph, TensorSpec

G_LOGGER = logging.getLogger("rnnrt.onnx")

__all__ = ["RECURRENT_OPS", "convert_onnx"]

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

def _load(path: Union[str, os.PathLike, onnx.ModelProto]) -> tuple[onnx.ModelProto, str]:
    if isinstance(path, onnx.ModelProto):
        return path, "<in-memory model>"
    name = os.fspath(path)
    try:
        model = onnx.load(name)
    except FileNotFoundError as err:
        raise ModelImportError(fmt(f"Model {name!r}", "Does not exist")) from err
    except Exception as err:  # DecodeError and friends
        raise ModelImportError(fmt(f"Model {name!r}", f"Cannot be read as ONNX: {err}")) from err
    return model, name


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as err:  # a model onnx cannot infer is still convertible; shapes come from the exporter
        G_LOGGER.debug("Shape inference failed: %s", err)
        return model


def _node_label(node: gs.Node) -> str:
    return f"{node.op} node {node.name!r}" if node.name else f"{node.op} node (outputs {[t.name for t in node.outputs]})"


def _base_name(node: gs.Node, index: int, used: set[str]) -> str:
    """A readable, unique stem for a node's state tensors: '/rnn/LSTM_1' -> 'rnn.LSTM_1'."""
    stem = re.sub(r"[^A-Za-z0-9_.:-]+", ".", node.name or "").strip(".") or f"{node.op.lower()}{index}"
    name, k = stem, 1
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


def _const_value(t: gs.Tensor) -> Optional[np.ndarray]:
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    if len(t.inputs) == 1 and t.inputs[0].op == "Constant" and "value" in t.inputs[0].attrs:
        return np.asarray(t.inputs[0].attrs["value"].values)
    return None


def _nonzero_constant(t: gs.Tensor) -> bool:
    """Whether an input-free initial state is known to hold non-zero values."""
    value = _const_value(t)
    if value is None and len(t.inputs) == 1 and t.inputs[0].op == "ConstantOfShape":
        fill = t.inputs[0].attrs.get("value")
        value = np.asarray(fill.values) if fill is not None else np.zeros(1)
    if value is None and len(t.inputs) == 1 and t.inputs[0].op in ("Slice", "Expand", "Identity", "Reshape"):
        return _nonzero_constant(t.inputs[0].inputs[0])
    return value is not None and bool(np.any(value != 0))


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
        value = _const_value(node.inputs[idx])
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


def _np_dtype(dtype: Any) -> np.dtype:
    try:
        return np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    except TypeError:
        return np.dtype(np.float32)


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


def _spec_shape(var: Any) -> Optional[list[Dim]]:
    if var.shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else "?") for d in var.shape]


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


def _has_if(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "If" for n in model.graph.node)


def _dims_of(vi: onnx.ValueInfoProto) -> list[Any]:
    return onnx_dims(vi)


def _set_dim(vi: onnx.ValueInfoProto, axis: int, value: Union[int, str]) -> None:
    d = vi.type.tensor_type.shape.dim[axis]
    d.Clear()
    if isinstance(value, int):
        d.dim_value = value
    else:
        d.dim_param = value


def _set_time_steps(model: onnx.ModelProto, time_steps: Union[int, str], where: str, notes: list[str]) -> onnx.ModelProto:
    """Re-shapes the time axis of the inputs and outputs that carry the recurrent nodes' time dim."""
    steps: Union[int, str]
    if isinstance(time_steps, str) and time_steps != "dynamic":
        try:
            steps = int(time_steps)
        except ValueError as err:
            raise ConfigError(fmt(f"--time-steps {time_steps}", "Is neither a positive number nor 'dynamic'")) from err
    else:
        steps = "time" if time_steps == "dynamic" else int(time_steps)
    if isinstance(steps, int) and steps < 1:
        raise ConfigError(fmt(f"--time-steps {time_steps}", "Is not a positive number of time steps"))
    _, times = _rnn_axes(model)
    hit = {n: a for n, a in times.items() if a is not None}
    if not hit:
        raise ModelImportError(fmt(f"Model {where!r}", "Has no input whose axis feeds the time axis of a recurrent node",
                                   "--time-steps re-shapes the time axis of models with LSTM/GRU/RNN nodes."))
    model = copy.deepcopy(model)
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name in hit:
            _set_dim(vi, hit[vi.name], steps)
    del model.graph.value_info[:]
    model = _infer(model)
    notes.append(f"Time axis of {sorted(hit)} set to {steps!r} (--time-steps).")
    return model


def convert_onnx(
    path: Union[str, os.PathLike, onnx.ModelProto],
    *,
    add_reset: bool = False,
    forward_only: bool = False,
    override: Union[str, os.PathLike, Mapping[str, Any], None] = None,
    reset_name: str = "cont",
    constants: Optional[Mapping[str, Any]] = None,
    context: Union[str, Mapping[str, Any], list, None] = None,
    time_steps: Union[int, str, None] = None,
    strict: bool = False,
) -> StepGraph:
    """Converts a stateful ONNX model into a streaming step graph.

    Steps, in order: ``constants`` are bound and everything that became constant is folded (``If``
    nodes whose condition is now known are inlined); ``time_steps`` re-shapes the time axis; the state
    of every recurrent node (LSTM/GRU/RNN) of the main graph is exposed or paired (see below); explicit
    state pairs (``state -> stateN``, ``h_in -> h_out`` ...) among the remaining inputs and outputs are
    detected by shape, wiring and names and confirmed numerically (:mod:`.explicit`); ``context``
    adds carried input context (:mod:`.context`); the override corrects the description; ``add_reset``
    adds the continuation input to every state, whatever declared it.

    Recurrent nodes: an initial state that is absent or constant becomes a graph input ``<node>.h0``
    (``.c0``) and its final state a graph output ``<node>.hT`` (``.cT``); an initial state that comes
    from a model input is paired with the model output that carries the matching final states, when an
    index-tracing check proves the wiring element for element. ``layout=1`` nodes are rewritten to
    ``layout=0`` between Transposes.

    Args:
        path (str | os.PathLike | onnx.ModelProto): The ONNX model (or its file).
        add_reset (bool): Add a continuation input ``cont`` of shape ``[1, N]``: where it is 0 the
            stream's state is zeroed before this call. Defaults to False.
        forward_only (bool): Keep only the forward direction of bidirectional nodes instead of raising.
        override (str | os.PathLike | Mapping | None): A YAML file (or mapping) that replaces what the
            detection found; see ``docs/onnx.md``. Validated against the model.
        reset_name (str): Name of the continuation input added by ``add_reset``. Defaults to ``"cont"``.
        constants (Mapping[str, Any] | None): Inputs bound to constants (``--set sr=16000``): a value
            or a string in YAML syntax per input name.
        context (str | Mapping | list | None): ``"INPUT:K"`` (or a list of them): carry the last K
            samples of INPUT along its last axis to the next call.
        time_steps (int | str | None): ``N`` or ``"dynamic"``: re-shape the time axis of a fixed-T export.
        strict (bool): Raise instead of warning when an op after the recurrence mixes time steps.

    Returns:
        StepGraph: The step graph; ``notes`` tell what was bound, folded, exposed, paired or left alone.

    Raises:
        ModelImportError: The file cannot be read; a time-mixing head with ``strict``.
        UnsupportedOpError: A bidirectional (without ``forward_only``) or reverse node, or one with
            ``sequence_lens``.
        ConfigError: A ``--set``/``--context`` that does not fit the model, an ambiguous state pair,
            or an override that does not match the model.

    Example::

        step = convert_onnx("silero_vad.onnx", constants={"sr": 16000}, context="input:64")
        rnnrt.config.save_step_graph(step, "out")
    """
    model, where = _load(path)
    check_acyclic(model, where)
    check_declared_sizes(model, where)
    notes: list[str] = []
    declared = False
    if override is not None:
        from rnnrt.importers.onnx.override import load_override

        declared = load_override(override)[0].state is not None
    model = _infer(model)
    if constants:
        model = bind_constants(model, constants)
        notes.append(f"Bound {', '.join(f'{k}={v}' for k, v in constants.items())} as constant(s).")
    if constants or _has_if(model):
        model, fold_notes = fold(model, where)
        notes += fold_notes
    if time_steps is not None:
        model = _set_time_steps(model, time_steps, where, notes)
    with quiet_third_party():
        try:
            graph = gs.import_onnx(model)
        except Exception as err:
            raise ModelImportError(fmt(f"Model {where!r}", f"Cannot be imported: {err}")) from err
        graph, states, notes = _recurrent_states(graph, forward_only, notes)
        if not declared:  # an override that declares the state replaces detection (and its ambiguities)
            graph, states = _explicit_states(graph, states, notes)
        if context:
            specs = context if isinstance(context, list) else [context]
            used = set(graph.tensors())
            for spec in specs:
                name, k = parse_context(spec)
                axes = _probe_axes(gs.export_onnx(graph, do_type_check=False), states)
                states.append(add_context(graph, name, k, axes[0].get(name) if axes else None, used, notes))
        graph.cleanup(remove_unused_graph_inputs=True, recurse_subgraphs=False).toposort()
        out_model = gs.export_onnx(graph, do_type_check=False)
    out_model.producer_name = "rnnrt"
    out_model = _infer(out_model)
    step = _describe(out_model, states, None, where, notes)
    if override is not None:
        from rnnrt.importers.onnx.override import apply_override

        step = apply_override(step, override)
    if add_reset:
        step = _with_reset(step, reset_name, where)
    _check_time_mixing(step, strict, where)
    return step


def _recurrent_states(graph: gs.Graph, forward_only: bool, notes: list[str]) -> tuple[gs.Graph, list[StatePair], list[str]]:
    """Exposes or pairs the state of the main graph's recurrent nodes; notes nested ones."""
    nested = [n for n in _subgraph_nodes(graph) if n.op in RECURRENT_OPS]
    if nested:
        inputs = sorted(_if_condition_inputs(graph))
        hint = (f" Bind the input(s) their condition depends on ({', '.join(inputs)}) with --set NAME=VALUE to "
                "inline the If." if inputs else "")
        notes.append(f"{len(nested)} recurrent node(s) stay inside Loop/Scan/If bodies; their state is carried only "
                     f"where the model's own inputs/outputs carry it (explicit state pairs).{hint}")
    nodes = [n for n in graph.nodes if n.op in RECURRENT_OPS]
    if not nodes:
        return graph, [], notes
    for node in nodes:
        _check_node(node, forward_only, notes, graph)
    # Rewrites above made tensors without shapes: infer them again.
    graph.cleanup().toposort()
    graph = gs.import_onnx(_infer(gs.export_onnx(graph, do_type_check=False)))
    nodes = [n for n in graph.nodes if n.op in RECURRENT_OPS]
    states = _expose_and_pair(graph, nodes, notes)
    return graph, states, notes


def _if_condition_inputs(graph: gs.Graph) -> set[str]:
    names = {v.name for v in graph.inputs}
    found: set[str] = set()
    for node in graph.nodes:
        if node.op == "If":
            found |= value_sources(node.inputs[0]) & names
    return found


def _explicit_states(graph: gs.Graph, states: list[StatePair], notes: list[str]) -> tuple[gs.Graph, list[StatePair]]:
    """Adds the explicit state pairs among the inputs/outputs the recurrent nodes did not take."""
    model = _infer(gs.export_onnx(graph, do_type_check=False))
    taken_in = {s.input for s in states}
    taken_out = {s.output for s in states}
    cands = find_explicit_pairs(model, taken_in, taken_out, notes)
    if not cands:
        if not states:
            notes.append("The model has no LSTM, GRU or RNN nodes and no explicit state pairs: the config is "
                         "stateless (declare state pairs with an override if the model carries state by other means).")
        return graph, states
    vis_in = {vi.name: vi for vi in model.graph.input}
    fixed = {s.input: s.batch_axis for s in states}
    for c in cands:
        fixed[c.input] = _state_axis(_dims_of(vis_in[c.input]), model)
    prober = _prober(model, fixed)
    size = prober.find_size(1) if prober is not None else None
    if prober is not None and size is not None:
        cands = confirm_pairs(model, cands, prober, size, fixed, notes)
    concrete: dict[str, tuple] = {}
    if prober is not None and size is not None:
        out = prober.run(prober.feeds(1, size, batch_axes=fixed))
        if out is not None:
            concrete = {c.output: out[c.output].shape for c in cands}
    tensors = graph.tensors()
    for c in cands:
        dims = _dims_of(vis_in[c.input])
        axis = fixed[c.input]
        shape: list[Dim] = []
        for a, d in enumerate(dims):
            if a == axis:
                shape.append(d if isinstance(d, int) else "batch")
            elif isinstance(d, int):
                shape.append(d)
            elif c.output in concrete:
                shape.append(int(concrete[c.output][a]))  # a named symbol the exporter left: resolved
            else:
                raise ModelImportError(fmt(f"State input {c.input!r}", f"Dim {a} ({d!r}) is dynamic and not the batch dim",
                                           "Re-export with fixed state dims, or declare the pair with an override."))
        var_in, var_out = tensors[c.input], tensors[c.output]
        var_in.shape = list(shape)
        var_out.shape = list(shape)
        dtype = _np_dtype(var_in.dtype).name
        states.append(StatePair(c.input, c.output, tuple(shape), dtype, axis))
        notes.append(f"Paired explicit state {c.input!r} -> {c.output!r} {list(shape)} by names, shapes and wiring, "
                     "confirmed numerically.")
    return graph, states


def _state_axis(dims: list[Any], model: onnx.ModelProto) -> int:
    """The stream axis of an explicit state: its one dynamic dim; else the dynamic dim other inputs
    share by name; else a dim of size 1; else 0."""
    dynamic = [a for a, d in enumerate(dims) if not isinstance(d, int)]
    if len(dynamic) == 1:
        return dynamic[0]
    if dynamic:
        others = {d for vi in model.graph.input for d in _dims_of(vi) if isinstance(d, str)}
        shared = [a for a in dynamic if dims[a] in others and dims[a] is not None]
        return shared[0] if shared else dynamic[0]
    ones = [a for a, d in enumerate(dims) if d == 1]
    return ones[0] if ones else 0


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


def _describe(model: onnx.ModelProto, states: list[StatePair], continuation: Optional[Continuation], where: str,
              notes: list[str]) -> StepGraph:
    """The step graph's bindings: batch axes (symbolic, else numeric), dims named, config-valid shapes."""
    weights = {t.name for t in model.graph.initializer}
    if states and all(vi.name in {s.output for s in states} for vi in model.graph.output):
        model, states = _keep_state_outputs(model, states, notes)
    state_in = {s.input for s in states}
    state_out = {s.output for s in states}
    axes = _batch_axes(model)
    user_in = [vi.name for vi in model.graph.input if vi.name not in weights and vi.name not in state_in]
    if states and any(axes.get(n) is None for n in user_in + [vi.name for vi in model.graph.output if vi.name not in state_out]):
        probed = _probe_axes(model, states)
        if probed is not None:
            for name, axis in list(probed[0].items()) + list(probed[1].items()):
                if axes.get(name) is None:
                    axes[name] = axis
    for s in states:
        axes[s.input] = axes[s.output] = s.batch_axis
    if continuation is not None:
        axes[continuation.input] = continuation.batch_axis
    model = _name_dims(model, axes, states)
    inputs = [_spec(vi, axes) for vi in model.graph.input if vi.name not in weights and vi.name not in state_in]
    outputs = [_spec(vi, axes) for vi in model.graph.output if vi.name not in state_out]
    unbatched = [t.name for t in inputs if t.batch_axis is None and states]
    if unbatched:
        notes.append(f"Input(s) {unbatched} have no batch axis: a Session feeds them as they are, and a StreamPool "
                     "needs their value once (StreamPool(session, shared={NAME: VALUE})); an input that is the same "
                     "every call (a rate, a flag) can instead be bound here with --set NAME=VALUE.")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelImportError(fmt(f"Model {where!r}", f"The step graph is invalid ONNX: {err}")) from err
    source: dict[str, Any] = {"format": "onnx"}
    if where != "<in-memory model>":
        source["model"] = os.path.abspath(where)
    return StepGraph(model=model, inputs=inputs, outputs=outputs, states=states, continuation=continuation,
                     source=source, notes=notes)


def _keep_state_outputs(model: onnx.ModelProto, states: list[StatePair], notes: list[str]) -> tuple[onnx.ModelProto, list[StatePair]]:
    """Every model output is a state output: they stay user outputs and the states get copies ``<out>.state``."""
    model = copy.deepcopy(model)
    names = {vi.name for vi in model.graph.input} | {vi.name for vi in model.graph.output}
    names |= {o for n in model.graph.node for o in n.output}
    new_states = []
    for s in states:
        vi = next(v for v in model.graph.output if v.name == s.output)
        copy_name = f"{s.output}.state"
        while copy_name in names:
            copy_name += "_"
        model.graph.node.append(onnx.helper.make_node("Identity", [s.output], [copy_name], name=f"{copy_name}__copy"))
        out_vi = copy.deepcopy(vi)
        out_vi.name = copy_name
        model.graph.output.append(out_vi)
        new_states.append(s.model_copy(update={"output": copy_name}))
    notes.append(f"Every model output is a state output; {[s.output for s in states]} stay in step() results and "
                 f"the state is carried through copies {[s.output for s in new_states]}.")
    return model, new_states


def _name_dims(model: onnx.ModelProto, axes: Mapping[str, Optional[int]], states: list[StatePair]) -> onnx.ModelProto:
    """Names every dynamic dim of the bindings: state dims as the pair's shape, the batch axis of the
    other bindings as the states' batch dim, other unnamed dims ``<tensor>_dim<axis>``."""
    model = copy.deepcopy(model)
    by_in = {s.input: s for s in states}
    by_out = {s.output: s for s in states}
    batch_names = {s.shape[s.batch_axis] for s in states if isinstance(s.shape[s.batch_axis], str)}
    batch_name = "batch" if "batch" in batch_names or not batch_names else sorted(batch_names)[0]
    weights = {t.name for t in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name in weights or not vi.type.tensor_type.HasField("shape"):
            continue
        pair = by_in.get(vi.name) or by_out.get(vi.name)
        dims = _dims_of(vi)
        for a, d in enumerate(dims):
            if pair is not None and len(pair.shape) == len(dims):
                want = pair.shape[a]
                if isinstance(want, int) or not isinstance(d, int):
                    _set_dim(vi, a, want)
            elif isinstance(d, int):
                continue
            elif axes.get(vi.name) == a and batch_names:
                _set_dim(vi, a, batch_name)
            elif not d:
                _set_dim(vi, a, f"{vi.name}_dim{a}")
    return model


def _with_reset(step: StepGraph, name: str, where: str) -> StepGraph:
    """Adds the continuation input to every state pair of ``step`` (whatever declared them)."""
    import dataclasses

    if not step.states:
        return dataclasses.replace(step, notes=step.notes + ["add_reset was ignored: the model has no recurrent state."])
    notes = list(step.notes)
    with quiet_third_party():
        graph = gs.import_onnx(step.model)
        continuation = _add_reset(graph, step.states, name, notes)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        model = _infer(gs.export_onnx(graph, do_type_check=False))
    cont_vi = next(vi for vi in model.graph.input if vi.name == name)
    inputs = list(step.inputs) + [_spec(cont_vi, {name: continuation.batch_axis})]
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelImportError(fmt(f"Model {where!r}", f"The step graph is invalid ONNX: {err}")) from err
    return dataclasses.replace(step, model=model, inputs=inputs, continuation=continuation, notes=notes)


def _check_time_mixing(step: StepGraph, strict: bool, where: str) -> None:
    """Warns (``strict``: raises) when streaming one step per call differs from the whole-sequence run."""
    if not step.states or not any(n.op_type in RECURRENT_OPS for n in step.model.graph.node):
        return
    _, times = _rnn_axes(step.model)
    cont = step.continuation.input if step.continuation is not None else None
    timed = {t.name: times[t.name] for t in step.inputs if times.get(t.name) is not None and t.name != cont}
    if not timed:
        return
    dims = {vi.name: _dims_of(vi) for vi in step.model.graph.input}
    if any(isinstance(dims[n][a], int) for n, a in timed.items()):
        return  # a fixed time axis: the model is fed exactly that many steps per call
    prober = _prober(step.model, {})
    if prober is None:
        return
    steps = 4
    rng = np.random.default_rng(5)
    whole: dict[str, np.ndarray] = {}
    for t in step.inputs:
        shape = [steps if timed.get(t.name) == a else (1 if t.batch_axis == a else (d if isinstance(d, int) else 2))
                 for a, d in enumerate(dims[t.name])]
        value = np.ones(shape) if t.name == cont else rng.standard_normal(shape)
        whole[t.name] = value.astype(t.dtype)
    state = {s.input: np.zeros([1 if a == s.batch_axis else d for a, d in enumerate(s.shape)], s.dtype) for s in step.states}
    full = prober.run({**whole, **state})
    if full is None:
        return
    parts: list[dict] = []
    cur = dict(state)
    for k in range(steps):
        feeds = {n: (np.take(v, [k], axis=timed[n]) if n in timed else v) for n, v in whole.items()}
        out = prober.run({**feeds, **cur})
        if out is None:
            return
        parts.append(out)
        cur = {s.input: out[s.output] for s in step.states}
    worst, worst_name = 0.0, None
    for t in step.outputs:
        a, one = full[t.name], parts[0][t.name]
        axis = next((k for k in range(a.ndim) if a.ndim == one.ndim and a.shape[k] == steps and one.shape[k] == 1), None)
        if axis is None or not np.issubdtype(a.dtype, np.floating):
            continue
        streamed = np.concatenate([p[t.name] for p in parts], axis=axis)
        if streamed.shape == a.shape and a.size:
            err = float(np.max(np.abs(streamed - a)))
            if err > worst:
                worst, worst_name = err, t.name
    if worst > 1e-4:
        msg = fmt(f"Output {worst_name!r} of {where!r}", f"Streamed one time step per call, it differs from the "
                  f"whole-sequence run by up to {worst:.3g}: an op after the recurrence mixes time steps (e.g. a Conv "
                  "along time)", "Streaming cannot equal the whole-sequence run with this head; feed whole sequences "
                  "per call, or change the head. --strict makes this an error.")
        if strict:
            raise ModelImportError(msg)
        G_LOGGER.warning("%s", msg)
        step.notes.append("Warning: " + msg.replace("\n", " "))


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


def _spec(vi: onnx.ValueInfoProto, axes: Mapping[str, Optional[int]]) -> TensorSpec:
    dtype, shape = onnx_tensor_type(vi)
    if dtype is None:
        raise ModelImportError(fmt(f"Tensor {vi.name!r}", f"Has element type {vi.type.tensor_type.elem_type}, which rnnrt cannot bind"))
    if shape is None:
        raise ModelImportError(fmt(f"Tensor {vi.name!r}", "Has no known shape", "Export the model with shapes for every graph input and output."))
    return TensorSpec(vi.name, dtype, shape, axes.get(vi.name))


def _expose_and_pair(graph: gs.Graph, nodes: list[gs.Node], notes: list[str]) -> list[StatePair]:
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


def _add_reset(graph: gs.Graph, states: list[StatePair], name: str, notes: list[str]) -> Continuation:
    """Adds ``name`` [1, N]: each state input is multiplied by it (reshaped to its batch axis)."""
    tensors = graph.tensors()
    if name in tensors:
        raise ModelImportError(fmt(f"Reset input {name!r}", "Is already a tensor of the model", "Choose another reset_name."))
    first = states[0]
    batch = first.shape[first.batch_axis]
    dtype = tensors[first.input].dtype or np.float32
    cont = gs.Variable(name, dtype=dtype, shape=[1, batch])
    graph.inputs.append(cont)
    for k, s in enumerate(states):
        var = tensors[s.input]
        consumers = list(var.outputs)
        target = [1] * len(s.shape)
        target[s.batch_axis] = -1
        mask = gs.Variable(f"{s.input}__mask", dtype=dtype)
        graph.layer(op="Reshape", inputs=[cont, gs.Constant(f"{s.input}__mask_shape", np.array(target, np.int64))], outputs=[mask])
        masked = gs.Variable(f"{s.input}__masked", dtype=var.dtype)
        graph.layer(op="Mul", inputs=[var, mask], outputs=[masked])
        for node in consumers:
            _replace_input(node, var, masked)
    notes.append(f"Added reset input {name!r} [1, N]: 0 zeroes that stream's state before this call's first frame.")
    return Continuation(input=name, batch_axis=1, time_axis=0)
