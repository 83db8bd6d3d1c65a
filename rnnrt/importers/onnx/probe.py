"""Numeric probes of an ONNX model in ONNX Runtime: shapes it runs with, batch axes, stream independence.

Detection by names and shapes proposes; these probes confirm. Every probe feeds random values with the
model's fixed dims and a chosen size for each dynamic one (the batch dims get the batch size, other
dynamic dims the first size from :data:`PROBE_SIZES` the model accepts).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import onnx

from rnnrt.ir.bindings import onnx_tensor_type

G_LOGGER = logging.getLogger("rnnrt.onnx")

__all__ = ["PROBE_SIZES", "Prober", "inner_shapes", "onnx_dims"]

PROBE_SIZES = (16, 64, 256, 512, 1024, 1, 4, 8, 32, 128, 2048, 4096)

_ONNX_TO_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
               11: np.float64}


def onnx_dims(vi: onnx.ValueInfoProto) -> list[Any]:
    """A graph tensor's dims: ints, names for named dynamic dims, None for unnamed ones ([] if unknown)."""
    _, dims = onnx_tensor_type(vi, unnamed="")
    return [None if d == "" else d for d in dims] if dims is not None else []


_dims = onnx_dims


class Prober:
    """Runs one model in ONNX Runtime with generated inputs.

    Args:
        model (onnx.ModelProto): The model.
        batch_axes (Mapping[str, int | None]): Known batch axes of inputs (others: none).
    """

    def __init__(self, model: onnx.ModelProto, batch_axes: Optional[Mapping[str, Optional[int]]] = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        weights = {t.name for t in model.graph.initializer}
        self.inputs = {vi.name: vi for vi in model.graph.input if vi.name not in weights}
        self.outputs = [vi.name for vi in model.graph.output]
        self.batch_axes = dict(batch_axes or {})
        self.size: Optional[int] = None

    def shape(self, name: str, batch: int, size: int, batch_axes: Optional[Mapping[str, Optional[int]]] = None) -> tuple[int, ...]:
        axes = self.batch_axes if batch_axes is None else batch_axes
        # A dim named like a known batch dim is the batch too.
        names = {_dims(self.inputs[n])[a] for n, a in axes.items() if a is not None and n in self.inputs}
        names = {d for d in names if isinstance(d, str)}
        out = []
        for axis, d in enumerate(_dims(self.inputs[name])):
            if axes.get(name) == axis or (isinstance(d, str) and d in names and name not in axes):
                out.append(batch if not isinstance(d, int) else d)
            elif isinstance(d, int):
                out.append(d)
            else:
                out.append(size)
        return tuple(out)

    def feeds(self, batch: int, size: int, seed: int = 0, batch_axes: Optional[Mapping[str, Optional[int]]] = None,
              **fixed: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = {}
        for name, vi in self.inputs.items():
            if name in fixed:
                feeds[name] = fixed[name]
                continue
            dtype = _ONNX_TO_NP.get(vi.type.tensor_type.elem_type, np.float32)
            shape = self.shape(name, batch, size, batch_axes)
            if np.issubdtype(dtype, np.floating):
                feeds[name] = (rng.standard_normal(shape) * 0.5).astype(dtype)
            elif dtype == np.bool_:
                feeds[name] = np.ones(shape, dtype)
            else:
                feeds[name] = np.ones(shape, dtype)
        return feeds

    def run(self, feeds: Mapping[str, np.ndarray]) -> Optional[dict[str, np.ndarray]]:
        try:
            return dict(zip(self.outputs, self.session.run(self.outputs, dict(feeds))))
        except Exception as err:
            G_LOGGER.debug("Probe run failed: %s", err)
            return None

    def find_size(self, batch: int = 1, batch_axes: Optional[Mapping[str, Optional[int]]] = None) -> Optional[int]:
        """The first size from :data:`PROBE_SIZES` for the dynamic non-batch dims that the model runs with."""
        if self.size is not None and batch_axes is None:
            return self.size
        for size in PROBE_SIZES:
            if self.run(self.feeds(batch, size, batch_axes=batch_axes)) is not None:
                if batch_axes is None:
                    self.size = size
                return size
        return None

    def rows_independent(self, batch_axes: Mapping[str, Optional[int]], size: int) -> Optional[dict[str, Optional[int]]]:
        """Whether batch rows are independent streams along ``batch_axes``; returns the outputs' batch axes.

        Runs a batch of 2 with different rows and each row alone; the outputs of each row must agree
        (atol 1e-4, relative to the output's magnitude) and each output must have an axis that is 2 in
        the first run and 1 in the second (its batch axis), or no batch dependence at all (None).
        """
        both = self.feeds(2, size, seed=1, batch_axes=batch_axes)
        if any(axis is not None and both[name].shape[axis] != 2 for name, axis in batch_axes.items() if name in both):
            # A static batch (e.g. 1): the rows cannot be varied; outputs take the first axis of that size.
            static = {both[n].shape[a] for n, a in batch_axes.items() if n in both and a is not None}
            out1 = self.run(both)
            if out1 is None or len(static) != 1:
                return None
            n = static.pop()
            return {name: next((k for k, d in enumerate(arr.shape) if d == n), None) for name, arr in out1.items()}
        out2 = self.run(both)
        if out2 is None:
            return None
        rows = []
        for r in range(2):
            feeds = {}
            for name, arr in both.items():
                axis = batch_axes.get(name)
                feeds[name] = np.take(arr, [r], axis=axis) if axis is not None else arr
            out1 = self.run(feeds)
            if out1 is None:
                return None
            rows.append(out1)
        axes: dict[str, Optional[int]] = {}
        for name in self.outputs:
            a2, a1 = out2[name], rows[0][name]
            if a2.shape == a1.shape:
                axes[name] = None
                if not all(np.allclose(a2, rows[r][name], atol=1e-4, equal_nan=True) for r in range(2)):
                    return None
                continue
            cand = [k for k in range(a2.ndim) if a2.ndim == a1.ndim and a2.shape[k] == 2 and a1.shape[k] == 1
                    and all(a2.shape[j] == a1.shape[j] for j in range(a2.ndim) if j != k)]
            if len(cand) != 1:
                return None
            axis = cand[0]
            scale = max(1.0, float(np.max(np.abs(a2))) if a2.size and np.issubdtype(a2.dtype, np.floating) else 1.0)
            for r in range(2):
                got = np.take(a2, [r], axis=axis)
                if not np.allclose(got, rows[r][name], atol=1e-4 * scale, equal_nan=True):
                    return None
            axes[name] = axis
        return axes

    def batch_axes_for(self, fixed: Mapping[str, Optional[int]], candidates: Mapping[str, Sequence[Optional[int]]]) -> Optional[tuple[dict, dict]]:
        """The first assignment of input batch axes (``fixed`` plus one of each input's ``candidates``)
        under which rows are independent; returns (input axes, output axes) or None."""
        import itertools

        names = list(candidates)
        for combo in itertools.product(*(candidates[n] for n in names)):
            axes = dict(fixed)
            axes.update(dict(zip(names, combo)))
            size = self.find_size(1, axes)
            if size is None:
                continue
            outs = self.rows_independent(axes, size)
            if outs is not None:
                return axes, outs
        return None


def inner_shapes(model: onnx.ModelProto, names: Sequence[str], batch_axes: Optional[Mapping[str, Optional[int]]] = None,
                 sizes: Sequence[int] = (3, 5)) -> Optional[list[dict[str, tuple[int, ...]]]]:
    """The shapes of inner tensors ``names`` in runs where every dynamic non-batch dim of the inputs is
    each of ``sizes`` in turn (batch 1); None if the model cannot be run so.

    Which dims of an inner tensor follow an input's dynamic dim (a recurrent node's sequence axis
    following a spectrogram's time axis) and which stay fixed (a batch of 1 the exporter named
    after the time symbol) shows in how its shape changes between the runs.
    """
    import copy

    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    try:
        prober = Prober(m, batch_axes)
    except Exception as err:
        G_LOGGER.debug("Cannot load the model in ONNX Runtime for probing: %s", err)
        return None
    runs = []
    for size in sizes:
        out = prober.run(prober.feeds(1, size))
        if out is None:
            return None
        runs.append({name: tuple(out[name].shape) for name in names})
    return runs
