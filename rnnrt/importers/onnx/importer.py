"""ONNX model with LSTM/GRU/RNN nodes → step graph whose recurrent state is explicit inputs/outputs.

Exported recurrent models come in two shapes. Either the recurrent nodes have no state inputs (or
constant zeros, as torch emits when no ``h0`` is passed), so every call starts from zero and the model
cannot stream; or the model has ``h0``/``c0``-style inputs and ``hn``/``cn``-style outputs that nothing
connects. :func:`convert_onnx` handles both: it exposes absent or constant initial states as graph
inputs and the final states as graph outputs, and it pairs existing state inputs with state outputs by
following the graph (an index-tracing check, not names or positions).

This module is the driver; each step lives in its own module: :mod:`.rnn_ops` (checks and rewrites of
the recurrent nodes), :mod:`.recurrent` and :mod:`.wiring` (their state exposed or paired),
:mod:`.explicit` (the model's own state pairs), :mod:`.context`, :mod:`.batch`, :mod:`.time_steps`,
:mod:`.describe` (the step graph's bindings), :mod:`.reset` (``add_reset``) and :mod:`.time_mixing`.

::

    from rnnrt.ir.config import save_step_graph
    from rnnrt.importers.onnx.importer import convert_onnx

    step = convert_onnx("lstm.onnx", add_reset=True)
    save_step_graph(step, "out")          # out/model.onnx + out/model.yaml
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

import onnx
import onnx_graphsurgeon as gs

from rnnrt.errors import ConfigError, ModelImportError, fmt
from rnnrt.importers.onnx.acyclic import check_acyclic
from rnnrt.importers.onnx.axes import _probe_axes, _prober, time_axes
from rnnrt.importers.onnx.context import add_context, find_window, parse_context
from rnnrt.importers.onnx.describe import _describe
from rnnrt.importers.onnx.explicit import confirm_pairs, find_explicit_pairs
from rnnrt.importers.onnx.fold import bind_constants, fold, quiet_third_party
from rnnrt.importers.onnx.recurrent import _recurrent_states
from rnnrt.importers.onnx.reset import _with_reset
from rnnrt.importers.onnx.rnn_ops import RECURRENT_OPS
from rnnrt.importers.onnx.shapes import _dims_of, _infer, _np_dtype
from rnnrt.importers.onnx.sizes import check_declared_sizes
from rnnrt.importers.onnx.time_mixing import _check_time_mixing
from rnnrt.importers.onnx.time_steps import _set_time_steps
from rnnrt.ir.stepgraph import Dim, StatePair, StepGraph

__all__ = ["RECURRENT_OPS", "convert_onnx", "time_axes"]


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


def _has_if(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "If" for n in model.graph.node)


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
    batch: Optional[str] = None,
) -> StepGraph:
    """Converts a stateful ONNX model into a streaming step graph.

    Steps, in order: ``constants`` are bound and everything that became constant is folded (``If``
    nodes whose condition is now known are inlined); ``time_steps`` re-shapes the time axis; the state
    of every recurrent node (LSTM/GRU/RNN) of the main graph is exposed or paired (see below); explicit
    state pairs (``state -> stateN``, ``h_in -> h_out`` ...) among the remaining inputs and outputs are
    detected by shape, wiring and names and confirmed numerically (:mod:`.explicit`); ``context``
    adds carried input context, and causal windows on a known time axis get theirs (:mod:`.context`);
    ``batch="dynamic"`` makes a fixed batch symbolic (:mod:`.batch`); the override corrects the
    description; ``add_reset`` adds the continuation input to every state, whatever declared it.

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
        context (str | Mapping | list | None): ``"INPUT:K"`` or ``"INPUT:K:AXIS"`` (or a list of them):
            carry the last K entries of INPUT along its last axis (or AXIS) to the next call. Context for
            a causal window on a known time axis is inserted without being asked (:mod:`.context`).
        time_steps (int | str | None): ``N`` or ``"dynamic"``: re-shape the time axis of a fixed-T export.
        batch (str | None): ``"dynamic"``: make the batch (stream) dim of a fixed-batch export symbolic
            through the whole graph, proven by running streams batched and alone (:mod:`.batch`);
            ``"fixed"`` or None: keep the export's batch.
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
        rnnrt.ir.config.save_step_graph(step, "out")
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
        cache_inputs = set() if declared else _cache_inputs(model)
        graph, states, notes = _recurrent_states(graph, forward_only, notes, cache_inputs)
        if not declared:  # an override that declares the state replaces detection (and its ambiguities)
            graph, states = _explicit_states(graph, states, notes)
        specs = (context if isinstance(context, list) else [context]) if context else []
        used = set(graph.tensors())
        given = set()
        for spec in specs:
            name, k, axis = parse_context(spec)
            axes = _probe_axes(gs.export_onnx(graph, do_type_check=False), states)
            states.append(add_context(graph, name, k, axes[0].get(name) if axes else None, used, notes, axis))
            given.add(name)
        states += _windows_as_context(graph, states, given, used, notes)
        graph.cleanup(remove_unused_graph_inputs=True, recurse_subgraphs=False).toposort()
        out_model = gs.export_onnx(graph, do_type_check=False)
    out_model.producer_name = "rnnrt"
    out_model = _infer(out_model)
    known_axes: dict[str, Optional[int]] = {}
    if batch not in (None, "fixed", "dynamic"):
        raise ConfigError(fmt(f"--batch {batch}", "Is neither 'fixed' nor 'dynamic'"))
    if batch == "dynamic":
        out_model, states, known_axes = _dynamic_batch(out_model, states, where, notes)
    step = _describe(out_model, states, None, where, notes, known_axes)
    if override is not None:
        from rnnrt.importers.onnx.override import apply_override

        step = apply_override(step, override)
    if add_reset:
        step = _with_reset(step, reset_name, where)
    _check_time_mixing(step, strict, where)
    return step


def _windows_as_context(graph: gs.Graph, states: list[StatePair], given: set[str], used: set[str],
                        notes: list[str]) -> list[StatePair]:
    """Carried context for every causal window on a known time axis (:func:`time_axes`) of an input the
    user gave no ``--context`` for; a window that looks ahead is refused (:func:`.context.find_window`)."""
    if not states:
        return []
    with quiet_third_party():
        model = _infer(gs.export_onnx(graph, do_type_check=False))
    added = []
    for name, axis in time_axes(model, states).items():
        if name in given:
            continue
        window = find_window(graph, name, axis)
        if window is None:
            continue
        with quiet_third_party():
            axes = _probe_axes(gs.export_onnx(graph, do_type_check=False), states + added)
        added.append(add_context(graph, name, window.k, axes[0].get(name) if axes else None, used, notes, axis))
        notes[-1] += f" (inserted by convert: {window.label} reads {window.k} past frames along the time axis.)"
    return added


def _cache_inputs(model: onnx.ModelProto) -> set[str]:
    """The inputs of the model's own state pairs whose names follow a convention (``conv_cache ->
    conv_cache_out``): where they exist, they carry the state and take precedence over recurrent nodes."""
    try:
        return {c.input for c in find_explicit_pairs(model, set(), set(), []) if c.named}
    except ConfigError:  # ambiguous partners: _explicit_states reports them
        return set()


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
        cands = confirm_pairs(model, cands, prober, size, fixed, notes, (taken_in, taken_out))
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
        how = "names, shapes and wiring" if c.named else "shapes, wiring and how the output carries the input"
        notes.append(f"Paired explicit state {c.input!r} -> {c.output!r} {list(shape)} by {how}, confirmed numerically.")
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


def _dynamic_batch(model: onnx.ModelProto, states: list[StatePair], where: str,
                   notes: list[str]) -> tuple[onnx.ModelProto, list[StatePair], dict[str, Optional[int]]]:
    """``--batch dynamic``: the fixed batch of the export made symbolic (:func:`.batch.make_batch_dynamic`).
    Candidate batch axes: a state's detected axis, then its other axes of size 1; an input's axes of size 1
    (or named like the states' batch), then none (the input is the same for every stream)."""
    from rnnrt.importers.onnx.batch import BATCH, make_batch_dynamic

    if not states:
        raise ConfigError(fmt(f"--batch dynamic for {where!r}", "The model has no state, so it has no streams to pool",
                              "A stateless model needs no batch axis of rnnrt's; convert without --batch dynamic."))
    if all(isinstance(s.shape[s.batch_axis], str) for s in states):
        notes.append("--batch dynamic: the batch is dynamic already.")
        return model, states, {}
    weights = {t.name for t in model.graph.initializer}
    by_in = {s.input: s for s in states}
    candidates: dict[str, list[Optional[int]]] = {}
    for vi in model.graph.input:
        if vi.name in weights:
            continue
        dims = _dims_of(vi)
        ones = [a for a, d in enumerate(dims) if d == 1]
        if vi.name in by_in:
            s = by_in[vi.name]
            candidates[vi.name] = [s.batch_axis] + [a for a in ones if a != s.batch_axis]
        else:
            candidates[vi.name] = ones + [None]
    model, in_axes, out_axes = make_batch_dynamic(model, candidates, where)
    new_states = []
    for s in states:
        axis = in_axes[s.input]
        shape = [BATCH if a == axis else d for a, d in enumerate(s.shape)]
        new_states.append(s.model_copy(update={"shape": tuple(shape), "batch_axis": axis}))
    shared = [n for n, a in in_axes.items() if a is None and n not in by_in]
    notes.append("--batch dynamic: the export's fixed batch is now the symbolic dim 'batch' through the whole graph, "
                 f"proven by running streams batched and alone" + (f"; {shared} are the same for every stream (shared)" if shared else "") + ".")
    return _infer(model), new_states, {**in_axes, **out_axes}
