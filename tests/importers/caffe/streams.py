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
    """One stream's random frame for every input of ``cfg`` (word ids for Embed inputs, 0/1 for cont)."""
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
