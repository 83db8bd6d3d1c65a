"""The state of one Caffe → ONNX conversion, shared by all layer converters.

Caffe blobs are mutable and may be rewritten in place (``top == bottom``); ONNX tensors are SSA.
:class:`ImportContext` maps each Caffe blob name to the ``gs.Variable`` that currently holds it and
tracks each variable's static shape and batch axis (the ONNX graph itself carries shapes only at its
inputs and outputs, so that a dynamic batch stays dynamic).
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


@dataclasses.dataclass
class TensorInfo:
    """Static facts about one ONNX tensor: its shape (at the prototxt's batch size) and batch axis."""

    shape: tuple[int, ...]
    batch_axis: int | None = None
    dtype: Any = np.float32


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

    def variable(self, name: str, shape: Sequence[int], batch_axis: int | None, dtype=np.float32) -> gs.Variable:
        """Creates a new intermediate tensor with a unique name derived from ``name``."""
        self.check_size(f"Tensor {name!r}", shape)
        var = gs.Variable(self.unique(name))
        self.info[var.name] = TensorInfo(tuple(int(d) for d in shape), batch_axis, dtype)
        return var

    def exact_variable(self, name: str, shape: Sequence[int], batch_axis: int | None) -> gs.Variable:
        """Creates a tensor named exactly ``name`` (a state output, say), failing if the name is taken."""
        self.check_size(f"Tensor {name!r}", shape)
        if name in self._names:
            raise ModelImportError(fmt(f"Tensor {name!r}", "Would be defined twice", "Layer names must make state names unique."))
        self._names.add(name)
        var = gs.Variable(name)
        self.info[name] = TensorInfo(tuple(int(d) for d in shape), batch_axis)
        return var

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
    ) -> gs.Variable:
        """Appends one single-output node and returns its output tensor."""
        base = name or f"{self.layer.name if self.layer is not None else 'node'}/{op}"
        out = self.variable(base, shape, batch_axis, dtype)
        add_node(self.graph, op, self.unique(f"{base}_node"), inputs, [out], attrs)
        return out

    def op_multi(
        self, op: str, inputs: Sequence[gs.Tensor], attrs: dict, outs: Sequence[tuple[str, Sequence[int], int | None]]
    ) -> list[gs.Variable]:
        """Appends one multi-output node; ``outs`` gives (name, shape, batch_axis) per output."""
        outputs = [self.variable(n, s, b) for n, s, b in outs]
        add_node(self.graph, op, self.unique(f"{self.layer.name}/{op}_node"), inputs, outputs, attrs)
        return outputs

    def reshape(self, x: gs.Tensor, shape: Sequence[int], batch_axis: int | None, name: str | None = None) -> gs.Tensor:
        """Reshapes ``x`` to the static ``shape``; with a dynamic batch, the batch dim becomes -1.

        Raises:
            ModelImportError: if the batch axis cannot be carried through this reshape.
        """
        shape = tuple(int(d) for d in shape)
        if shape == self.shape(x):
            return x
        target = list(shape)
        if self.dynamic_batch and self.batch_axis(x) is not None:
            if batch_axis is None:
                raise ModelImportError(
                    fmt(
                        f"Layer {self.layer.name!r}",
                        f"Reshape {self.shape(x)} -> {shape} mixes the batch axis {self.batch_axis(x)} with other axes",
                        "Dynamic batch needs the batch (stream) axis to survive every reshape; convert with a fixed batch.",
                    )
                )
            target[batch_axis] = -1
        return self.op(
            "Reshape", [x, self.ints(target, f"{self.layer.name}/shape")], shape=shape, batch_axis=batch_axis, name=name
        )

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
        self.info[name] = TensorInfo(tuple(shape), batch_axis, dtype)
        self.graph.inputs.append(var)
        self.graph_inputs.append(var)
        return var

    def export_shape(self, shape: Sequence[int], batch_axis: int | None) -> list:
        """The shape as written into the ONNX graph: the batch dim symbolic when dynamic."""
        out: list = [int(d) for d in shape]
        if self.dynamic_batch and batch_axis is not None:
            out[batch_axis] = BATCH_DIM
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
