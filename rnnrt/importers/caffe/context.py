"""The state of one Caffe → ONNX conversion, shared by all layer converters.

Caffe blobs are mutable and may be rewritten in place (``top == bottom``); ONNX tensors are SSA.
:class:`ImportContext` maps each Caffe blob name to the ``gs.Variable`` that currently holds it and
tracks each variable's static shape and batch axis (the ONNX graph itself carries shapes only at its
inputs and outputs, so that a dynamic batch stays dynamic).

The stream (batch) axis is followed through the whole net. A batch axis need not hold the N streams
alone: LRCN-style nets run ``T*N`` frames through a CNN (rows ``t*N + n``, time-major) and Reshape them
to ``T x N x D`` before the LSTM. Each batch axis therefore carries a :class:`Rows` record, shared by
every tensor with the same row layout, whose ``fold`` ``(outer, inner)`` says that the axis has
``outer * N * inner`` entries, entry ``(o*N + n)*inner + i`` belonging to stream ``n``. A fold can be
unknown until a Reshape tells how the rows split (the frames of an LRCN net look like ``T*N`` plain
rows until the Reshape to ``T x N x D``), so undecided records are decided later and every tensor
sharing them follows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from rnnrt.errors import ModelImportError, UnsupportedOpError, fmt
from rnnrt.ir.stepgraph import StatePair

# Symbolic name of the dynamic batch dimension in the exported graph.
BATCH_DIM = "batch"

MAX_TENSOR_ELEMENTS = 2**31 - 1
"""The most elements a tensor or weight blob may have: TensorRT's limit per tensor. A prototxt that
declares more (by mistake or on purpose) is rejected before anything is allocated for it."""


class Rows:
    """The row layout of a batch axis of ``size`` entries: how they map to the N streams.

    ``fold`` is ``(outer, inner)``: the axis has ``outer * N * inner`` entries and entry
    ``(o*N + n)*inner + i`` belongs to stream ``n`` (``(1, 1)``: the axis is the streams alone;
    ``(T, 1)``: time-major rows ``t*N + n``). None until decided. Records that turn out to be the same
    layout are merged (``find`` gives the representative).
    """

    def __init__(self, size: int, fold: tuple[int, int] | None = None) -> None:
        self.size = int(size)
        self.fold = fold
        self.parent: Rows | None = None

    def find(self) -> "Rows":
        r = self
        while r.parent is not None:
            r = r.parent
        return r


def fold_dim(fold: tuple[int, int] | None, name: str = "") -> str:
    """The symbolic dim of a batch axis with ``fold``: ``batch``, ``4*batch``, ``batch*3``, ``4*batch*3``."""
    from_name = name or BATCH_DIM
    outer, inner = fold or (1, 1)
    return (f"{outer}*" if outer != 1 else "") + from_name + (f"*{inner}" if inner != 1 else "")


@dataclasses.dataclass
class TensorInfo:
    """Static facts about one ONNX tensor: its shape (at the prototxt's batch size), batch axis and rows."""

    shape: tuple[int, ...]
    batch_axis: int | None = None
    dtype: Any = np.float32
    rows: Rows | None = None


def _legacy_equal(found: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    # Caffe's Blob::ShapeEquals accepts a legacy 4-D (num, channels, height, width) blob whose
    # shape, left-padded with 1s, equals the expected one.
    if len(found) != 4 or len(expected) > 4:
        return False
    return tuple(found) == (1,) * (4 - len(expected)) + tuple(expected)


class ImportContext:
    """Holds the graph under construction and the blob → tensor map.

    Args:
        net: The CaffeNet being converted (from ``rnnrt.importers.caffe.reader.load_net``).
        dynamic_batch (bool): Emit a symbolic batch dimension instead of the prototxt's batch size.
        seed (int): Seed of the random weights used where the net has no caffemodel.
    """

    def __init__(self, net: Any, *, dynamic_batch: bool = False, seed: int = 0) -> None:
        self.net = net
        self.graph = gs.Graph(opset=17, name=net.name or "caffe_net")
        self.dynamic_batch = dynamic_batch
        self.blobs: dict[str, gs.Variable] = {}
        self.info: dict[str, TensorInfo] = {}
        self.states: list[StatePair] = []
        self.state_outputs: dict[str, gs.Variable] = {}
        self.notes: list[str] = []
        self.graph_inputs: list[gs.Variable] = []
        self.continuation_inputs: list[str] = []
        self._rng = np.random.default_rng(seed)
        self._shared: dict[str, np.ndarray] = {}
        self._names: set[str] = set()
        self.layer: Any = None
        # The number of streams at the prototxt's batch size, once known (recurrent state, or a Reshape
        # that splits a folded axis); see Rows.
        self.streams: int | None = None
        # Where the consumers of each blob read the streams (see convert._batch_axis_hints).
        self.hints: dict[str, int] = {}

    # ------------------------------------------------------------------ names and tensors
    def unique(self, name: str) -> str:
        """Returns ``name`` or, if taken, ``name__k`` for the smallest free k."""
        out, k = name, 0
        while out in self._names:
            k += 1
            out = f"{name}__{k}"
        self._names.add(out)
        return out

    def check_size(self, name: str, shape: Sequence[int]) -> None:
        """Rejects a tensor or blob of more than :data:`MAX_TENSOR_ELEMENTS` elements, naming the layer."""
        count = 1
        for d in shape:
            count *= int(d)
        if count > MAX_TENSOR_ELEMENTS:
            layer = self.layer
            subject = f"Layer {layer.name!r} ({layer.type})" if layer is not None else f"Net {self.net.name!r}"
            raise ModelImportError(
                fmt(subject, f"{name} of shape {[int(d) for d in shape]} would have {count} elements",
                    f"TensorRT takes at most {MAX_TENSOR_ELEMENTS} elements per tensor; check the prototxt's dims and num_output.")
            )

    def variable(
        self, name: str, shape: Sequence[int], batch_axis: int | None, dtype=np.float32, rows: Rows | None = None
    ) -> gs.Variable:
        """Creates a new intermediate tensor with a unique name derived from ``name``."""
        self.check_size(f"Tensor {name!r}", shape)
        var = gs.Variable(self.unique(name))
        shape = tuple(int(d) for d in shape)
        self.info[var.name] = TensorInfo(shape, batch_axis, dtype, self._rows_or_new(shape, batch_axis, rows))
        return var

    def exact_variable(self, name: str, shape: Sequence[int], batch_axis: int | None) -> gs.Variable:
        """Creates a tensor named exactly ``name`` (a state output, say), failing if the name is taken."""
        self.check_size(f"Tensor {name!r}", shape)
        if name in self._names:
            raise ModelImportError(fmt(f"Tensor {name!r}", "Would be defined twice", "Layer names must make state names unique."))
        self._names.add(name)
        var = gs.Variable(name)
        shape = tuple(int(d) for d in shape)
        self.info[name] = TensorInfo(shape, batch_axis, rows=self._rows_or_new(shape, batch_axis, None))
        return var

    # ------------------------------------------------------------------ the stream axis
    def _rows_or_new(self, shape: tuple[int, ...], batch_axis: int | None, rows: Rows | None) -> Rows | None:
        if batch_axis is None:
            return None
        if rows is not None:
            return rows.find()
        size = shape[batch_axis]
        return Rows(size, (1, 1) if self.streams is not None and size == self.streams else None)

    def rows(self, var: gs.Tensor) -> Rows | None:
        """The row layout of ``var``'s batch axis (None if it has none)."""
        if isinstance(var, gs.Constant):
            return None
        info = self.info[var.name]
        return None if info.rows is None else info.rows.find()

    def fold(self, var: gs.Tensor) -> tuple[int, int] | None:
        """``(outer, inner)`` of ``var``'s batch axis, None while undecided or without a batch axis."""
        rows = self.rows(var)
        return None if rows is None else rows.fold

    def hint(self, blob: str) -> int | None:
        """The axis on which the layers around ``blob`` read its streams, if they tell."""
        return self.hints.get(blob)

    def cannot_follow(self, what: str, hint: str = "") -> None:
        """Raises (dynamic batch) that the stream axis cannot be followed through the current layer."""
        if self.dynamic_batch:
            layer = self.layer
            subject = f"Layer {layer.name!r} ({layer.type})" if layer is not None else "Net"
            raise ModelImportError(
                fmt(
                    subject,
                    what,
                    hint or "Dynamic batch needs every layer to keep the streams apart; convert with a fixed batch.",
                )
            )

    def set_streams(self, n: int, why: str) -> bool:
        """Records the number of streams N (at the prototxt's batch), checking it against an earlier one."""
        if self.streams is None:
            self.streams = int(n)
            return True
        if self.streams != n:
            self.cannot_follow(
                f"{why} gives {n} streams where the net has {self.streams} elsewhere",
                "Every stream (batch) axis must hold the same number of streams.",
            )
            return False
        return True

    def decide(self, rows: Rows, fold: tuple[int, int], why: str) -> bool:
        """Decides an undecided record (or checks a decided one); sets N from it if N is not known yet."""
        rows = rows.find()
        outer, inner = fold
        if rows.size % (outer * inner):
            return False
        if not self.set_streams(rows.size // (outer * inner), why):
            return False
        if rows.fold is None:
            rows.fold = (outer, inner)
        return rows.fold == (outer, inner)

    def unify(self, a: Rows, b: Rows) -> Rows | None:
        """Merges two records that must be the same layout; None (or an error) when they differ."""
        a, b = a.find(), b.find()
        if a is b:
            return a
        if a.size != b.size:
            return None
        if a.fold is None:
            a.parent = b
            return b
        if b.fold is None or b.fold == a.fold:
            b.parent = a
            return a
        return None

    def _rows_for_op(self, inputs: Sequence[gs.Tensor], shape: tuple[int, ...], batch_axis: int | None) -> Rows | None:
        # An op whose output batch axis has as many entries as an input's keeps that input's rows
        # (element-wise ops, convolutions, the leading axes of a MatMul); inputs with the same number
        # of entries must have the same layout.
        if batch_axis is None:
            return None
        size = shape[batch_axis]
        same = [r for r in (self.rows(t) for t in inputs) if r is not None and r.size == size]
        if not same:
            return None
        out = same[0]
        for other in same[1:]:
            merged = self.unify(out, other)
            if merged is None:
                self.cannot_follow(
                    f"Combines inputs whose stream axes are laid out differently (folds {out.fold} and {other.fold})",
                    "The inputs of an element-wise layer must hold the streams the same way.",
                )
                return None
            out = merged
        return out

    def shape(self, var: gs.Tensor) -> tuple[int, ...]:
        """The static shape of ``var`` (batch dim at the prototxt's size)."""
        if isinstance(var, gs.Constant):
            return tuple(var.values.shape)
        return self.info[var.name].shape

    def batch_axis(self, var: gs.Tensor) -> int | None:
        if isinstance(var, gs.Constant):
            return None
        return self.info[var.name].batch_axis

    def bottoms(self, layer: Any, count: int | Sequence[int] | None = None) -> list[gs.Variable]:
        """The current tensors of ``layer``'s bottoms, checking how many there are."""
        if count is not None:
            allowed = (count,) if isinstance(count, int) else tuple(count)
            if len(layer.bottoms) not in allowed:
                raise ModelImportError(
                    fmt(
                        f"Layer {layer.name!r} ({layer.type})",
                        f"Has {len(layer.bottoms)} bottoms",
                        f"Expected {' or '.join(map(str, allowed))}.",
                    )
                )
        out = []
        for b in layer.bottoms:
            if b not in self.blobs:
                raise ModelImportError(
                    fmt(f"Layer {layer.name!r}", f"Bottom blob {b!r} is not produced by any earlier layer")
                )
            out.append(self.blobs[b])
        return out

    def const(self, values: np.ndarray, name: str) -> gs.Constant:
        """A named constant (an ONNX initializer); a strided view (a transpose) is kept, not copied."""
        arr = np.asarray(values)
        return gs.Constant(self.unique(name), arr.reshape(1) if arr.ndim == 0 else arr)

    def ints(self, values: Sequence[int], name: str) -> gs.Constant:
        return self.const(np.asarray(values, dtype=np.int64), name)

    def op(
        self,
        op: str,
        inputs: Sequence[gs.Tensor],
        attrs: dict | None = None,
        *,
        shape: Sequence[int],
        batch_axis: int | None,
        name: str | None = None,
        dtype=np.float32,
        rows: Rows | None = None,
    ) -> gs.Variable:
        """Appends one single-output node and returns its output tensor.

        The output keeps the row layout (:class:`Rows`) of the inputs whose batch axis has as many
        entries as its own, unless ``rows`` gives it. With a dynamic batch, an output without a batch
        axis computed from inputs with one mixes the streams, and is refused.
        """
        base = name or f"{self.layer.name if self.layer is not None else 'node'}/{op}"
        shape = tuple(int(d) for d in shape)
        if batch_axis is None and op not in ("Shape", "Size") and any(self.batch_axis(t) is not None for t in inputs):
            self.cannot_follow(f"Its {op} output has no stream axis although its input has one: it would mix the streams")
        if rows is None:
            rows = self._rows_for_op(inputs, shape, batch_axis)
        out = self.variable(base, shape, batch_axis, dtype, rows)
        add_node(self.graph, op, self.unique(f"{base}_node"), inputs, [out], attrs)
        return out

    def op_multi(
        self, op: str, inputs: Sequence[gs.Tensor], attrs: dict, outs: Sequence[tuple[str, Sequence[int], int | None]]
    ) -> list[gs.Variable]:
        """Appends one multi-output node; ``outs`` gives (name, shape, batch_axis) per output."""
        outputs = [self.variable(n, s, b, rows=self._rows_for_op(inputs, tuple(s), b)) for n, s, b in outs]
        add_node(self.graph, op, self.unique(f"{self.layer.name}/{op}_node"), inputs, outputs, attrs)
        return outputs

    def reshape(
        self,
        x: gs.Tensor,
        shape: Sequence[int],
        batch_axis: int | None = None,
        name: str | None = None,
        literal: Sequence[bool] | None = None,
    ) -> gs.Tensor:
        """Reshapes ``x`` to the static ``shape``, following the stream axis through it.

        The output's batch axis is the axis that holds the stream digit of ``x``'s batch axis whole:
        the reshape may split a folded axis (``T*N`` rows -> ``T x N``), fold the streams with
        neighbouring axes (``T x N x D`` -> ``T*N x D``) or move them past unit dims. Where several axes
        could hold the streams (unit dims when the prototxt's N is 1), ``batch_axis`` (where the
        consumer reads the streams) picks one. With a dynamic batch the emitted target has ``-1`` on
        the stream axis and literal dims elsewhere; ``literal`` (per output dim: written as a number in
        the prototxt) makes a note when a literal dim is rewritten to follow the streams.

        Raises:
            ModelImportError: (dynamic batch) if the streams cannot be followed through this reshape.
        """
        shape = tuple(int(d) for d in shape)
        in_shape = self.shape(x)
        if shape == in_shape:
            return x
        bax = self.batch_axis(x)
        out_axis, out_rows, cands = (None, None, []) if bax is None else self._follow_reshape(x, in_shape, bax, shape, batch_axis)
        target = list(shape)
        if self.dynamic_batch and out_axis is not None:
            target[out_axis] = -1
            if literal is not None and literal[out_axis]:
                why = (
                    f"; axes {cands} could hold the streams at the prototxt's batch, axis {out_axis} is where the next layer reads them"
                    if len(cands) > 1
                    else ""
                )
                self.notes.append(
                    f"Reshape {self.layer.name!r} writes a literal {shape[out_axis]} on the stream axis (dim {out_axis} of "
                    f"{list(shape)}); with the dynamic batch it follows the streams: target {target}{why}."
                )
        return self.op(
            "Reshape", [x, self.ints(target, f"{self.layer.name}/shape")], shape=shape, batch_axis=out_axis, name=name,
            rows=out_rows,
        )

    def _follow_reshape(
        self, x: gs.Tensor, in_shape: tuple[int, ...], bax: int, shape: tuple[int, ...], want: int | None
    ) -> tuple[int | None, Rows | None, list[int]]:
        rows = self.rows(x)
        size, before = in_shape[bax], math.prod(in_shape[:bax])
        pre = [math.prod(shape[:k]) for k in range(len(shape) + 1)]
        n = self.streams
        if rows.fold is None and n is not None and size == n:
            self.decide(rows, (1, 1), f"Input of {self.layer.name!r}")
        # Candidates: (axis, fold of the output there, fold decided for the input, kind).
        cands: list[tuple[int, tuple[int, int], tuple[int, int] | None, str]] = []
        for k in range(len(shape)):
            lo, hi = pre[k], pre[k + 1]
            if rows.fold is not None:
                outer, inner = rows.fold
                a = before * outer  # entries above the stream digit
                b = a * self.streams
                if a % lo == 0 and hi % b == 0:
                    fold = (a // lo, hi // b)
                    cands.append((k, fold, None, "same" if fold == rows.fold and shape[k] == size else "moved"))
            else:
                if lo % before == 0 and (before * size) % hi == 0:
                    # Output axis k lies inside the input's batch axis.
                    if lo == before and hi == before * size:
                        cands.append((k, (1, 1), None, "same"))
                    elif n is None or shape[k] == n:
                        cands.append((k, (1, 1), (lo // before, before * size // hi), "split"))
                elif before % lo == 0 and hi % (before * size) == 0 and (n is None or size == n):
                    # Output axis k folds the input's batch axis (taken as the streams) with its neighbours.
                    cands.append((k, (before // lo, hi // (before * size)), (1, 1), "merge"))
        chosen = None
        if want is not None:
            chosen = next((c for c in cands if c[0] == want), None)
        if chosen is None and cands:
            rank = {"same": 0, "moved": 1, "split": 2, "merge": 3}
            chosen = min(cands, key=lambda c: (rank[c[3]], c[0]))
        if chosen is None:
            self.cannot_follow(
                f"Reshape {in_shape} -> {shape} mixes the batch axis {bax} with other axes",
                "Dynamic batch needs the batch (stream) axis to survive every reshape whole (split off a time "
                "axis, folded with neighbours, or moved past unit dims); convert with a fixed batch.",
            )
            return None, None, []
        k, fold, in_fold, kind = chosen
        if in_fold is not None:
            n_streams = shape[k] if kind == "split" else size
            if not self.set_streams(n_streams, f"Reshape {in_shape} -> {shape}") or not self.decide(rows, in_fold, "Reshape"):
                return None, None, []
        where = [c[0] for c in cands]
        if kind == "same":
            return k, rows, where
        return k, Rows(shape[k], fold), where

    def set_top(self, layer: Any, index: int, var: gs.Variable) -> None:
        """Binds ``var`` as the current value of ``layer``'s ``index``-th top blob."""
        self.blobs[layer.tops[index]] = var

    # ------------------------------------------------------------------ graph inputs and state
    def add_input(self, name: str, shape: Sequence[int], batch_axis: int | None, dtype=np.float32) -> gs.Variable:
        """Adds a graph input named exactly ``name``."""
        self.check_size(f"Input {name!r}", shape)
        if name in self._names:
            raise ModelImportError(fmt(f"Input {name!r}", "Is declared twice"))
        self._names.add(name)
        var = gs.Variable(name, dtype=dtype, shape=self.export_shape(shape, batch_axis))
        shape = tuple(int(d) for d in shape)
        self.info[name] = TensorInfo(shape, batch_axis, dtype, self._rows_or_new(shape, batch_axis, None))
        self.graph.inputs.append(var)
        self.graph_inputs.append(var)
        return var

    def export_shape(self, shape: Sequence[int], batch_axis: int | None, fold: tuple[int, int] | None = None) -> list:
        """The shape as written into the ONNX graph: the batch dim symbolic when dynamic (``4*batch`` when folded)."""
        out: list = [int(d) for d in shape]
        if self.dynamic_batch and batch_axis is not None:
            out[batch_axis] = fold_dim(fold)
        return out

    def add_state(self, name_in: str, name_out: str, shape: Sequence[int], batch_axis: int = 0) -> gs.Variable:
        """Declares a recurrent state: a graph input ``name_in`` paired with a future output ``name_out``."""
        var = self.add_input(name_in, shape, batch_axis)
        self.states.append(
            StatePair(
                input=name_in,
                output=name_out,
                shape=tuple(self.export_shape(shape, batch_axis)),
                dtype="float32",
                batch_axis=batch_axis,
            )
        )
        return var

    # ------------------------------------------------------------------ weights
    def weights(self, layer: Any, expected: Sequence[tuple[int, ...]], *, kinds: Sequence[str] | None = None) -> list[np.ndarray]:
        """The blobs of ``layer`` checked against the ``expected`` shapes.

        Where the net has no caffemodel, blobs are drawn at random (seeded) from the layer's fillers,
        and blobs shared through ``param { name }`` are drawn once.

        Args:
            layer: The CaffeLayer.
            expected (Sequence[tuple[int, ...]]): Shape of each blob, in Caffe's blob order.
            kinds (Sequence[str] | None): Per blob ``"weight"``, ``"bias"``, ``"mean"``, ``"variance"`` or
                ``"factor"``: which filler to use for random weights. Default: first weight, rest bias.

        Raises:
            ModelImportError: naming the layer, the blob index and the expected vs found shapes.
        """
        expected = [tuple(int(d) for d in s) for s in expected]
        for i, shape in enumerate(expected):
            self.check_size(f"Blob {i}", shape)
        kinds = list(kinds) if kinds is not None else ["weight"] + ["bias"] * (len(expected) - 1)
        names = list(getattr(layer, "param_names", []) or [])
        blobs = list(layer.blobs)
        out: list[np.ndarray] = []
        if blobs or self.net.has_weights:
            if len(blobs) < len(expected):
                raise ModelImportError(
                    fmt(
                        f"Layer {layer.name!r} ({layer.type})",
                        f"The caffemodel has {len(blobs)} blobs for this layer",
                        f"Expected {len(expected)} blobs of shapes {expected}.",
                    )
                )
            for i, (blob, shape) in enumerate(zip(blobs, expected)):
                found = tuple(blob.shape)
                if found != shape:
                    if _legacy_equal(found, shape):
                        blob = blob.reshape(shape)
                    else:
                        raise ModelImportError(
                            fmt(
                                f"Layer {layer.name!r} ({layer.type}) blob {i}",
                                f"Has shape {list(found)} in the caffemodel",
                                f"Expected shape {list(shape)}.",
                            )
                        )
                out.append(np.asarray(blob, dtype=np.float32))
            return out
        for i, (shape, kind) in enumerate(zip(expected, kinds)):
            shared = names[i] if i < len(names) else ""
            if shared and shared in self._shared:
                arr = self._shared[shared]
                if arr.shape != shape:
                    raise ModelImportError(
                        fmt(
                            f"Layer {layer.name!r} param {shared!r}",
                            f"Is shared with shape {list(arr.shape)} elsewhere but this layer needs {list(shape)}",
                        )
                    )
            else:
                arr = self._random_blob(layer, shape, kind)
                if shared:
                    self._shared[shared] = arr
            out.append(arr)
        return out

    def _random_blob(self, layer: Any, shape: tuple[int, ...], kind: str) -> np.ndarray:
        # float32 draws: the realworld nets have 10^8-value embeddings, and float64 draws triple the time.
        rng = self._rng

        def uniform(lo: float, hi: float) -> np.ndarray:
            a = rng.random(shape, dtype=np.float32)
            a *= np.float32(hi - lo)
            a += np.float32(lo)
            return a

        def normal(mean: float, std: float) -> np.ndarray:
            a = rng.standard_normal(shape, dtype=np.float32)
            a *= np.float32(std)
            a += np.float32(mean)
            return a

        if kind == "variance":
            return uniform(0.5, 1.5)
        if kind == "factor":
            return np.ones(shape, np.float32)
        if kind == "mean":
            return uniform(-0.1, 0.1)
        filler = _layer_filler(layer, kind)
        ftype = filler.type if filler is not None else ""
        if ftype == "constant":
            return np.full(shape, filler.value, np.float32)
        if ftype == "gaussian":
            return normal(filler.mean, filler.std)
        if ftype in ("xavier", "msra"):
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
            if ftype == "msra":
                return normal(0.0, math.sqrt(2.0 / max(fan_in, 1)))
            scale = math.sqrt(3.0 / max(fan_in, 1))
            return uniform(-scale, scale)
        if ftype == "uniform":
            return uniform(filler.min, filler.max)
        # No filler given: small uniform values keep deep random nets finite.
        return uniform(-0.08, 0.08)


_FILLER_OWNERS = (
    "recurrent_param",
    "inner_product_param",
    "convolution_param",
    "embed_param",
    "scale_param",
    "bias_param",
)


def _layer_filler(layer: Any, kind: str) -> Any:
    field = "weight_filler" if kind == "weight" else "bias_filler"
    if kind == "weight" and layer.param.HasField("scale_param"):
        field = "filler"
    for owner in _FILLER_OWNERS:
        if layer.param.HasField(owner):
            params = getattr(layer.param, owner)
            if params.DESCRIPTOR.fields_by_name.get(field) is not None and params.HasField(field):
                return getattr(params, field)
    return None


def add_node(
    graph: gs.Graph, op: str, name: str, inputs: Sequence[gs.Tensor], outputs: Sequence[gs.Tensor], attrs: dict | None = None
) -> gs.Node:
    """Appends one node to ``graph``; names are unique already (``ImportContext.unique``).

    ``gs.Graph.layer`` would rebuild ``graph.tensors()`` for every node it adds, which makes a
    conversion quadratic in the layer count (20k layers: hours); this is linear.
    """
    node = gs.Node(op=op, name=name, attrs=dict(attrs or {}), inputs=list(inputs), outputs=list(outputs))
    graph.nodes.append(node)
    return node


def normalize_axis(layer: Any, axis: int, rank: int, what: str = "axis") -> int:
    """Turns a possibly negative Caffe axis into an index, naming the layer if out of range."""
    if not -rank <= axis < rank:
        raise ModelImportError(
            fmt(f"Layer {layer.name!r} ({layer.type})", f"{what} {axis} is out of range for a {rank}-D input")
        )
    return axis % rank


def unsupported(layer: Any, feature: str) -> UnsupportedOpError:
    """An UnsupportedOpError naming the layer and the feature."""
    return UnsupportedOpError(fmt(f"Layer {layer.name!r} ({layer.type})", f"{feature} is not supported"))
