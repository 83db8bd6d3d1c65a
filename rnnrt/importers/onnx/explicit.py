"""Explicit state pairs: graph inputs whose next value the model returns as a graph output.

Silero VAD (``state -> stateN``), hand-written cells (``h_in -> h_out``), streaming encoders
(``cache_k -> new_cache_k``) carry state this way, with no ONNX recurrent op to look at. A pair is
proposed when

1. the input and the output have the same dtype and rank and their fixed dims agree,
2. the output depends on the input's *values* (not only on its shape), and
3. the names follow a usual convention (``state/stateN``, ``h/hn``, ``h0/hn``, ``x_in/x_out``,
   ``cache_*/new_cache_*``, ``past_*/present_*``, ``*_prev/*_next``), or, where they do not (Keras
   exports: DTLN's ``input_5 -> tf_op_layer_stack_5``), the output carries the input on the way state
   does (see :func:`carries_state`) and the model keeps a user input and a user output besides
   (a stateless ``x -> y`` of equal shapes must stay stateless);

and confirmed numerically in ONNX Runtime: the output has the input's shape, it changes when the input
changes, and the batch rows are independent streams. Two equally good partners are an
:class:`~rnnrt.errors.ConfigError` that lists them and prints the override that settles it.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Optional

import numpy as np
import onnx

from rnnrt.errors import ConfigError, fmt
from rnnrt.importers.onnx.probe import onnx_dims

G_LOGGER = logging.getLogger("rnnrt.onnx")

__all__ = ["Candidate", "carries_state", "confirm_pairs", "find_explicit_pairs", "names_match"]

_IN_PREFIXES = ("", "past_", "past.", "prev_", "previous_", "old_", "last_", "in_", "input_", "cur_", "init_", "initial_")
_OUT_PREFIXES = ("", "new_", "new.", "next_", "present_", "present.", "out_", "output_", "updated_", "final_")
_IN_SUFFIXES = ("", "_in", ".in", "_input", "_0", "0", "_prev", "_past", "_old", "_init", "_initial", "_t")
_OUT_SUFFIXES = ("", "n", "_n", "_out", ".out", "_output", "_new", "_next", "_t1", "_final", "t", "_t", "_last", "_updated")


def _stems(name: str, prefixes: tuple, suffixes: tuple) -> set[tuple[str, bool]]:
    low = name.lower()
    out = set()
    for p in prefixes:
        if not low.startswith(p):
            continue
        for s in suffixes:
            if s and not low.endswith(s) or len(low) <= len(p) + len(s):
                continue
            stem = low[len(p):len(low) - len(s)] if s else low[len(p):]
            stem = stem.strip("._")
            if stem:
                out.add((stem, bool(p or s)))
    return out


def names_match(input_name: str, output_name: str) -> bool:
    """Whether two names follow a state naming convention (see the module doc)."""
    a = _stems(input_name, _IN_PREFIXES, _IN_SUFFIXES)
    b = _stems(output_name, _OUT_PREFIXES, _OUT_SUFFIXES)
    for (sa, ca), (sb, cb) in itertools.product(a, b):
        if sa == sb and (ca or cb):
            return True
    return False


def _dims(vi: onnx.ValueInfoProto) -> Optional[list[Any]]:
    return onnx_dims(vi) if vi.type.tensor_type.HasField("shape") else None


def _value_ancestors(model: onnx.ModelProto) -> dict[str, set[str]]:
    """Per graph output, the graph inputs whose values reach it (Shape/Size edges do not count)."""
    producer: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for o in node.output:
            producer[o] = node
    inputs = {vi.name for vi in model.graph.input}
    memo: dict[str, set[str]] = {}

    def value_deps(node: onnx.NodeProto) -> set[str]:
        """The names a node reads: its inputs and what its subgraphs (If/Loop/Scan bodies) read."""
        deps = set(node.input)
        for a in node.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                      a.graphs if a.type == onnx.AttributeProto.GRAPHS else []):
                for n in g.node:
                    deps |= value_deps(n)
        return deps

    def visit(name: str) -> set[str]:
        stack = [(name, False)]
        order = []
        seen = set()
        while stack:
            cur, done = stack.pop()
            if done:
                order.append(cur)
                continue
            if cur in memo or cur in seen:
                continue
            seen.add(cur)
            stack.append((cur, True))
            node = producer.get(cur)
            if node is None or node.op_type in ("Shape", "Size"):
                continue
            stack.extend((d, False) for d in value_deps(node) if d)
        for cur in order:
            node = producer.get(cur)
            found = {cur} if cur in inputs else set()
            if node is not None and node.op_type not in ("Shape", "Size"):
                for d in value_deps(node):
                    if d:
                        found |= memo.get(d, {d} if d in inputs else set())
            memo[cur] = found
        return memo.get(name, set())

    return {vi.name: visit(vi.name) for vi in model.graph.output}


class Candidate:
    """A proposed pair: input, output, whether the names follow a convention."""

    def __init__(self, input: str, output: str, named: bool) -> None:
        self.input = input
        self.output = output
        self.named = named

    def __repr__(self) -> str:
        return f"{self.input} -> {self.output}"


def _compatible(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b) if isinstance(x, int) and isinstance(y, int))


def _override_text(pairs: list[tuple[str, str]]) -> str:
    lines = ["state:"] + [f"  - {{input: {i}, output: {o}}}" for i, o in pairs]
    return "\n".join(lines)


def find_explicit_pairs(model: onnx.ModelProto, taken_inputs: set[str], taken_outputs: set[str],
                        notes: list[str]) -> list[Candidate]:
    """Proposes explicit state pairs among the inputs/outputs not already taken (see the module doc).

    Args:
        model (onnx.ModelProto): The (folded, shape-inferred) model.
        taken_inputs (set[str]): Inputs already paired (recurrent-op states) or not to consider.
        taken_outputs (set[str]): Outputs already paired.
        notes (list[str]): Gets a line per decision the user should know about.

    Returns:
        list[Candidate]: The pairs, each numerically confirmed.

    Raises:
        ConfigError: An input or an output has two equally good partners.
    """
    weights = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in weights and vi.name not in taken_inputs}
    outputs = {vi.name: vi for vi in model.graph.output if vi.name not in taken_outputs}
    if not inputs or not outputs:
        return []
    deps = _value_ancestors(model)
    cands: dict[str, list[Candidate]] = {}
    for i, ivi in inputs.items():
        idims = _dims(ivi)
        for o, ovi in outputs.items():
            odims = _dims(ovi)
            if idims is None or ivi.type.tensor_type.elem_type != ovi.type.tensor_type.elem_type:
                continue
            if odims is not None and not _compatible(idims, odims):
                continue
            if odims is None and i not in deps.get(o, set()):
                continue
            if i not in deps.get(o, set()):
                continue
            cands.setdefault(i, []).append(Candidate(i, o, names_match(i, o)))

    chosen: list[Candidate] = []
    for i, cs in cands.items():
        named = [c for c in cs if c.named]
        if len(named) > 1:
            raise ConfigError(fmt(f"State input {i!r}", f"Could be carried by any of the outputs {[c.output for c in named]}",
                                  "Say which with an override (--override FILE.yaml):\n" + _override_text([(i, named[0].output)])))
        if named:
            chosen.append(named[0])
        elif len(cs) == 1:
            chosen.append(cs[0])  # confirmed or dropped numerically by confirm_pairs
    by_output: dict[str, list[Candidate]] = {}
    for c in chosen:
        by_output.setdefault(c.output, []).append(c)
    for o, cs in by_output.items():
        if len(cs) > 1:
            named = [c for c in cs if c.named]
            if len(named) == 1 or not named:
                for c in cs:
                    if not named or c is not named[0]:
                        chosen.remove(c)
                if not named:
                    notes.append(f"Inputs {[c.input for c in cs]} could each be carried by {o!r} and the names follow "
                                 "no convention; none is paired (declare the pair with an override).")
                continue
            raise ConfigError(fmt(f"State output {o!r}", f"Could carry any of the inputs {[c.input for c in cs]}",
                                  "Say which with an override (--override FILE.yaml):\n" + _override_text([(cs[0].input, o)])))
    return chosen


def confirm_pairs(model: onnx.ModelProto, pairs: list[Candidate], prober: Any, size: int, batch_axes: dict,
                  notes: list[str], taken: tuple[set[str], set[str]] = (set(), set())) -> list[Candidate]:
    """Keeps the pairs whose output has the input's shape and changes when the input changes; a pair whose
    names follow no convention also has to :func:`carry its state <carries_state>` and leave the model a
    user input and a user output (besides the state inputs/outputs ``taken`` already)."""
    kept = []
    base = prober.feeds(1, size, seed=3, batch_axes=batch_axes)
    out0 = prober.run(base)
    if out0 is None:
        notes.append("The model could not be run with generated inputs, so its state pairs were not confirmed numerically.")
        return [c for c in pairs if c.named]
    for c in sorted(pairs, key=lambda c: not c.named):
        if not c.named:
            if not carries_state(prober, base, out0, c):
                notes.append(f"{c.input!r} -> {c.output!r} has the shape and wiring of a state pair but the names follow "
                             "no convention and the output does not carry the input on the way state does (changing "
                             "one element of the input changes all of the output); not paired (declare it with an "
                             "override if it is one).")
                continue
            if (not set(base) - taken[0] - {k.input for k in kept} - {c.input}
                    or not set(out0) - taken[1] - {k.output for k in kept} - {c.output}):
                notes.append(f"{c.input!r} -> {c.output!r} has the shape and wiring of a state pair but the names follow "
                             "no convention and pairing it would leave the model no user input or output; not paired "
                             "(declare it with an override if it is one).")
                continue
        feeds = dict(base)
        feeds[c.input] = (np.asarray(base[c.input]) + 1).astype(base[c.input].dtype)
        out1 = prober.run(feeds)
        same_shape = out0[c.output].shape == base[c.input].shape
        changes = out1 is not None and not np.array_equal(out0[c.output], out1[c.output])
        if same_shape and changes:
            kept.append(c)
            if not c.named:
                notes.append(f"{c.input!r} -> {c.output!r}: the names follow no convention, but changing one element of "
                             "the input changes only a few elements of the output, as a cell state or a shifted cache "
                             "does; paired as state (declare the pairs with an override if this is wrong).")
        else:
            why = "has another shape" if not same_shape else "does not change when the input changes"
            notes.append(f"{c.input!r} -> {c.output!r} looked like a state pair but the output {why}; not paired.")
    return kept


def carries_state(prober: Any, base: dict, out0: dict, c: Candidate, probes: int = 48, seed: int = 11) -> bool:
    """Whether ``c.output`` carries ``c.input`` on the way recurrent state does.

    Carried state passes elements of its input on to its next value: an LSTM's cell state
    (``c' = f*c + i*g``: changing one cell changes that cell and its ``h``), a GRU's ``z*h`` term, a
    cache shifted by one frame. A layer that transforms its input (a Conv, a MatMul) spreads a change of
    one input element over all of its output. The probe changes single elements (``probes`` of them,
    at random) and asks whether one change reaches at least one and fewer than half of the output's
    elements.
    """
    x = np.asarray(base[c.input])
    if x.size == 0 or not np.issubdtype(x.dtype, np.floating):
        return False
    y0 = out0[c.output]
    scale = max(1.0, float(np.max(np.abs(y0)))) if y0.size else 1.0
    rng = np.random.default_rng(seed)
    picks = rng.choice(x.size, size=min(probes, x.size), replace=False)
    for j in picks:
        feeds = dict(base)
        moved = x.copy()
        moved.flat[j] += 1.0
        feeds[c.input] = moved
        out = prober.run(feeds)
        if out is None or out[c.output].shape != y0.shape:
            return False
        changed = int(np.count_nonzero(np.abs(out[c.output] - y0) > 1e-6 * scale))
        if 1 <= changed and 2 * changed < y0.size:
            return True
    return False
