"""Helpers of the stream-axis tests: one stream's frames for a config, packing them as the batch does.

A binding with ``batch_fold = (outer, inner)`` has ``outer * N * inner`` entries on its batch axis, entry
``(o*N + n)*inner + i`` belonging to stream ``n``; :func:`stream_view` shows it with the streams on an
axis of their own.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def stream_view(array: np.ndarray, axis: int, fold: Sequence[int] | None, n: int) -> tuple[np.ndarray, int]:
    """``array`` reshaped to ``... x outer x n x inner x ...``; returns the view and its stream axis."""
    outer, inner = fold or (1, 1)
    return array.reshape(array.shape[:axis] + (outer, n, inner) + array.shape[axis + 1 :]), axis + 1


def one_stream_shape(spec: Any) -> list[int]:
    """The shape of one stream's part of a config binding (its batch dim for one stream)."""
    outer, inner = spec.batch_fold or (1, 1)
    return [outer * inner if i == spec.batch_axis else int(d) for i, d in enumerate(spec.shape)]


def random_frame(cfg: Any, rng: np.random.Generator, *, with_cont: bool = True, vocab: int = 10) -> dict[str, np.ndarray]:
    """One stream's random frame for every input of ``cfg`` (a config or a step graph; word ids for Embed
    inputs, 0/1 for cont)."""
    frame = {}
    cont = cfg.continuation.input if cfg.continuation is not None else None
    for t in cfg.inputs:
        shape = one_stream_shape(t)
        if t.name == cont or "cont" in t.name or "marker" in t.name:
            if not with_cont and t.name == cont:
                continue
            frame[t.name] = (rng.random(shape) > 0.25).astype(np.float32)
        elif "sentence" in t.name:  # Embed: integer word ids stored as float
            frame[t.name] = rng.integers(0, vocab, shape).astype(np.float32)
        else:
            frame[t.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return frame


def pack(specs: Sequence[Any], frames: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The batch of ``len(frames)`` streams, stream k's frame in slot k."""
    n = len(frames)
    out = {}
    for t in specs:
        if t.name not in frames[0]:
            continue
        parts = [stream_view(f[t.name], t.batch_axis, t.batch_fold, 1) for f in frames]
        whole = np.concatenate([p for p, _ in parts], axis=parts[0][1])
        shape = list(frames[0][t.name].shape)
        outer, inner = t.batch_fold or (1, 1)
        shape[t.batch_axis] = outer * n * inner
        out[t.name] = whole.reshape(shape)
    return out


def unpack(spec: Any, array: np.ndarray, n: int, k: int) -> np.ndarray:
    """Stream k's part of a batch output of ``n`` streams, shaped as one stream's output."""
    view, axis = stream_view(array, spec.batch_axis, spec.batch_fold, n)
    part = np.take(view, [k], axis=axis)
    return part.reshape(one_stream_shape(spec)[: spec.batch_axis] + [-1] + list(array.shape[spec.batch_axis + 1 :]))


def _ort(step: Any):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(step.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(sess: Any, step: Any, calls: list[dict[str, np.ndarray]], n: int) -> list[dict[str, np.ndarray]]:
    state = {s.input: np.zeros([n if isinstance(d, str) else d for d in s.shape], np.float32) for s in step.states}
    names = [o.name for o in sess.get_outputs()]
    out = []
    for feeds in calls:
        got = dict(zip(names, sess.run(None, {**feeds, **state})))
        state = {s.input: got[s.output] for s in step.states}
        out.append(got)
    return out


def packed_vs_alone(step: Any, streams: int = 3, calls: int = 2, seed: int = 0) -> float:
    """Runs ``streams`` random streams packed into one batch and each alone through a dynamic step
    graph (ONNX Runtime, state carried over ``calls`` calls); returns the largest output difference."""
    rng = np.random.default_rng(seed)
    sess = _ort(step)
    alone = [[random_frame(step, rng) for _ in range(calls)] for _ in range(streams)]
    together = _run(sess, step, [pack(step.inputs, [alone[k][c] for k in range(streams)]) for c in range(calls)], streams)
    worst = 0.0
    for k in range(streams):
        mine = _run(sess, step, alone[k], 1)
        for c in range(calls):
            for o in step.outputs:
                got = unpack(o, together[c][o.name], streams, k)
                worst = max(worst, float(np.abs(got - mine[c][o.name].reshape(got.shape)).max()))
    return worst
