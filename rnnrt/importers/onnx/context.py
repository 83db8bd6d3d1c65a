"""Input context as state: the last K samples of an input carried to the next call by graph surgery.

Silero VAD's wrapper prepends the last 64 samples of the previous chunk to each new 512-sample chunk;
streaming convolution front-ends need the same. ``--context input:64`` rewrites the graph so that

* the user feeds only the new samples: input ``input`` becomes ``[..., chunk]``;
* a new state input ``input.context`` ``[..., 64]`` (zeros at the start and after a reset) is
  concatenated in front of them along the last axis, and what the model saw as ``input`` is that
  concatenation;
* the new state output ``input.context_next`` is the last 64 samples of the concatenation.

When the input's first axis is a dynamic frame axis and it has no batch axis (Silero's sequence model:
``input [frames, 576]``), each row is a chunk: row t gets the last K samples of row t-1, row 0 those of
the previous call.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import onnx_graphsurgeon as gs

from rnnrt.errors import ConfigError, fmt
from rnnrt.importers.onnx.fold import unique_name
from rnnrt.ir.stepgraph import StatePair

__all__ = ["add_context", "parse_context"]

_INT_MAX = np.iinfo(np.int64).max


def parse_context(spec: Any) -> tuple[str, int]:
    """``"input:64"`` (or ``{"input": "input", "samples": 64}``) -> ``("input", 64)``."""
    if isinstance(spec, dict):
        name, k = spec.get("input"), spec.get("samples")
    else:
        name, _, k = str(spec).rpartition(":")
    try:
        k = int(k)
    except (TypeError, ValueError):
        k = -1
    if not name or k <= 0:
        raise ConfigError(fmt(f"--context {spec!r}", "Is not INPUT:K with K a positive number of samples",
                              "Example: --context input:64 carries the last 64 samples of 'input' to the next call."))
    return str(name), k


def add_context(graph: gs.Graph, name: str, k: int, batch_axis: Optional[int], used: set[str],
                notes: list[str]) -> StatePair:
    """Rewrites ``graph`` in place (see the module doc) and returns the new state pair."""
    inputs = {v.name: v for v in graph.inputs}
    if name not in inputs:
        raise ConfigError(fmt(f"--context {name}:{k}", "Is not an input of the model", f"Inputs: {sorted(inputs)}."))
    x = inputs[name]
    shape = list(x.shape or [])
    if not shape:
        raise ConfigError(fmt(f"--context {name}:{k}", "The input has no known shape or is a scalar",
                              "Context is carried along the last (sample) axis of an input of rank >= 1."))
    last = shape[-1]
    if isinstance(last, int) and last <= k:
        raise ConfigError(fmt(f"--context {name}:{k}", f"The input has only {last} samples along its last axis",
                              f"K must be smaller than the input's last dim {last}."))
    dynamic = [a for a, d in enumerate(shape[:-1]) if not isinstance(d, int) and a != batch_axis]
    rows = False
    if dynamic:
        if dynamic == [0] and batch_axis is None and len(shape) == 2:
            rows = True
        else:
            raise ConfigError(fmt(f"--context {name}:{k}", f"Dims {dynamic} of {name!r} {shape} are dynamic and not its batch axis",
                                  "The carried context needs a fixed shape apart from the batch dim."))
    dtype = x.dtype or np.float32
    chunk = last - k if isinstance(last, int) else "chunk"

    full = gs.Variable(f"{name}.with_context", dtype=dtype, shape=shape[:-1] + [last if isinstance(last, int) else None])
    for node in list(x.outputs):
        for idx, t in enumerate(node.inputs):
            if t is x:
                node.inputs[idx] = full
    # Subgraphs that read the input by name.
    _rename_in_subgraphs(graph, name, full.name)
    new_x = gs.Variable(name, dtype=dtype, shape=shape[:-1] + [chunk])
    graph.inputs[graph.inputs.index(x)] = new_x

    ctx_shape = list(shape[:-1]) + [k]
    if rows:
        ctx_shape[0] = 1
    elif batch_axis is not None and not isinstance(ctx_shape[batch_axis], int):
        ctx_shape[batch_axis] = ctx_shape[batch_axis] or "batch"
    in_name, out_name = unique_name(f"{name}.context", used), unique_name(f"{name}.context_next", used)
    ctx = gs.Variable(in_name, dtype=dtype, shape=ctx_shape)
    graph.inputs.append(ctx)
    i64 = lambda n, v: gs.Constant(f"{in_name}__{n}", np.array(v, np.int64))  # noqa: E731
    nxt = gs.Variable(out_name, dtype=dtype, shape=ctx_shape)
    if rows:
        # Row t of the call gets the last K samples of row t-1; row 0 those of the previous call.
        tails = gs.Variable(f"{in_name}__tails", dtype=dtype)
        graph.layer(op="Slice", inputs=[new_x, i64("tail_s", [-k]), i64("tail_e", [_INT_MAX]), i64("tail_a", [1])], outputs=[tails])
        prev = gs.Variable(f"{in_name}__prev_tails", dtype=dtype)
        graph.layer(op="Slice", inputs=[tails, i64("prev_s", [0]), i64("prev_e", [-1]), i64("prev_a", [0])], outputs=[prev])
        ctxs = gs.Variable(f"{in_name}__rows", dtype=dtype)
        graph.layer(op="Concat", inputs=[ctx, prev], outputs=[ctxs], attrs={"axis": 0})
        graph.layer(op="Concat", inputs=[ctxs, new_x], outputs=[full], attrs={"axis": 1})
        graph.layer(op="Slice", inputs=[tails, i64("last_s", [-1]), i64("last_e", [_INT_MAX]), i64("last_a", [0])], outputs=[nxt])
    else:
        graph.layer(op="Concat", inputs=[ctx, new_x], outputs=[full], attrs={"axis": len(shape) - 1})
        graph.layer(op="Slice", inputs=[full, i64("s", [-k]), i64("e", [_INT_MAX]), i64("a", [len(shape) - 1])], outputs=[nxt])
    graph.outputs.append(nxt)
    notes.append(f"Context: the last {k} samples of {name!r} are carried to the next call as state "
                 f"{in_name!r} -> {out_name!r}; feed only the new samples ({name!r} is now "
                 f"{[d if d is not None else 'batch' for d in shape[:-1]] + [chunk]}).")
    return StatePair(in_name, out_name, tuple(ctx_shape), np.dtype(dtype).name, 0 if rows else (batch_axis if batch_axis is not None else 0))


def _rename_in_subgraphs(graph: gs.Graph, old: str, new: str) -> None:
    for node in graph.nodes:
        for value in node.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, gs.Graph):
                    for inner in sub.nodes:
                        for idx, t in enumerate(inner.inputs):
                            if t.name == old and not t.inputs:
                                t.name = new
                    _rename_in_subgraphs(sub, old, new)
