"""Rewrites an fp32 ONNX step graph to compute in fp16 or bf16.

TensorRT 11 and TensorRT-RTX build *strongly typed* networks: there is no FP16 builder flag, every
layer runs in the type its ONNX tensors have. So reduced precision is a graph rewrite:

- float32 weights become fp16/bf16, and every float op computes in that type;
- a Cast follows each float graph input and precedes each float graph output, so the bindings keep
  ``io_dtype`` (float32 by default) whatever the compute type is;
- with ``state_dtype="float32"`` (the default) the recurrent state stays fp32, and so does the
  element-wise recurrence between state input and state output (gates, cell update); only the
  weight-bearing ops on that path (MatMul, Gemm, Conv, ...) run in the reduced type. A long stream then
  does not accumulate fp16 rounding in ``c``. ``state_dtype`` equal to the compute type makes the whole
  graph reduced, state buffers included;
- integer and bool tensors (Shape, Gather indices, ...) are untouched; Scan/Loop/If bodies are
  rewritten recursively, their loop-carried values being state like the graph's.

The rewrite is a pure ONNX pass (no TensorRT). :func:`emulate_precision` turns a rewritten graph back
into an fp32 graph that rounds every tensor to the reduced type after each op, which lets ONNX Runtime
on CPU (which has no bf16 kernels) check bf16 numerics.

Example::

    from rnnrt.build.precision import convert_precision

    fp16 = convert_precision(model, "fp16", state_inputs=["lstm1.h0", "lstm1.c0"],
                             state_outputs=["lstm1.hT", "lstm1.cT"])
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnrt.errors import ConfigError, ModelImportError, RnnrtInternalError, fmt

G_LOGGER = logging.getLogger("rnnrt.precision")

__all__ = ["DTYPES", "PRECISIONS", "HEAVY_OPS", "convert_precision", "emulate_precision", "precision_dtype"]

_FLOAT = TensorProto.FLOAT

DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}
"""Float dtype names a binding may have, and their ONNX element types."""

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""Compute precisions and the dtype each one computes in."""

_SHORT = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}

HEAVY_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "LSTM", "GRU", "RNN"})
"""Weight-bearing ops: they run in the reduced type even on the fp32 state path."""

# Inputs whose type the ONNX spec fixes independently of the op's data type (Resize scales: float only).
_FIXED_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
# Ops that accept any input type: their inputs are never cast.
_ANY_INPUT_OPS = frozenset({"Shape", "Size", "Cast"})
# Ops that only move data: they keep the type their input already has (no rounding, no extra Cast).
_MOVE_OPS = frozenset(
    {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Slice", "Gather", "Split", "Expand",
     "Tile", "Concat", "DepthToSpace", "SpaceToDepth"}
)
# Ops whose float output type comes from a `dtype` attribute (default float).
_DTYPE_ATTR_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike"})


def precision_dtype(precision: str) -> str:
    """The dtype name a precision computes in (``"fp16"`` -> ``"float16"``).

    Raises:
        ConfigError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ConfigError(fmt(f"Precision {precision!r}", "Is not supported", f"Expected one of {list(PRECISIONS)}."))
    return PRECISIONS[precision]


def _dtype(name: str, what: str) -> int:
    if name not in DTYPES:
        raise ConfigError(fmt(f"{what} {name!r}", "Is not a float dtype rnnrt can bind", f"Expected one of {list(DTYPES)}."))
    return DTYPES[name]


def _np_dtype(elem: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem))


def _convert_tensor(tensor: TensorProto, elem: int, name: str | None = None) -> TensorProto:
    array = numpy_helper.to_array(tensor)
    converted = array.astype(_np_dtype(elem))
    overflow = 0
    if elem == TensorProto.FLOAT16 and array.size and float(np.nanmax(np.abs(array), initial=0.0)) > 65504.0:
        overflow = int(np.count_nonzero(np.isfinite(array) & np.isinf(converted)))
    if overflow:
        G_LOGGER.warning(
            "Tensor %r | %d values overflow %s and become inf.", tensor.name, overflow, _SHORT.get(elem, elem)
        )
    return numpy_helper.from_array(converted, tensor.name if name is None else name)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads that it does not define itself."""
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    refs: set[str] = set()
    for node in graph.node:
        for name in itertools.chain(node.input, *(_outer_refs(g) for g in _subgraphs(node))):
            if name and name not in defined:
                refs.add(name)
        defined.update(o for o in node.output if o)
    refs.update(vo.name for vo in graph.output if vo.name not in defined)
    return refs


def _node_reads(node: onnx.NodeProto) -> list[str]:
    reads = [n for n in node.input if n]
    for g in _subgraphs(node):
        reads.extend(sorted(_outer_refs(g)))
    return reads


def _state_path(graph: onnx.GraphProto, state_inputs: Iterable[str], state_outputs: Iterable[str]) -> set[str]:
    """Tensors on a path from a state input to a state output."""
    forward = set(state_inputs)
    for node in graph.node:
        if any(n in forward for n in _node_reads(node)):
            forward.update(o for o in node.output if o)
    backward = set(state_outputs)
    for node in reversed(graph.node):
        if any(o in backward for o in node.output):
            backward.update(_node_reads(node))
    return forward & backward


def _collect_types(graph: onnx.GraphProto, types: dict[str, int]) -> None:
    for vi in itertools.chain(graph.input, graph.output, graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in graph.initializer:
        types[t.name] = t.data_type
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
                elif attr.name in ("value_float", "value_floats"):
                    types[node.output[0]] = _FLOAT
        for g in _subgraphs(node):
            _collect_types(g, types)


def _set_elem(vi: onnx.ValueInfoProto, elem: int) -> None:
    vi.type.tensor_type.elem_type = elem


_TYPE_STRS = {TensorProto.FLOAT16: "tensor(float16)", TensorProto.BFLOAT16: "tensor(bfloat16)"}


class _Context:
    """State shared by every graph scope of one rewrite."""

    def __init__(self, model: onnx.ModelProto, target: int, keep_state_fp32: bool) -> None:
        self.target = target
        self.keep_state_fp32 = keep_state_fp32
        self.opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        self._allows: dict[tuple[str, str], bool] = {}
        self.types: dict[str, int] = {}
        _collect_types(model.graph, self.types)
        self.names: set[str] = set(self.types)
        self._collect_names(model.graph)

    def _collect_names(self, graph: onnx.GraphProto) -> None:
        for node in graph.node:
            self.names.update(node.output)
            self.names.update(node.input)
            for g in _subgraphs(node):
                self._collect_names(g)

    def allows_target(self, node: onnx.NodeProto) -> bool:
        """Whether the op's ONNX schema (at the model's opset) accepts the target type for its float data.

        Example: Conv takes no bf16 before opset 22; such an op then computes in fp32.
        """
        domain = node.domain or "ai.onnx"
        key = (domain, node.op_type)
        if key not in self._allows:
            allowed = True
            try:
                schema = onnx.defs.get_schema(node.op_type, self.opsets.get(domain, 1), "" if domain == "ai.onnx" else domain)
            except onnx.defs.SchemaError:
                schema = None  # a custom op: trust the runtime
            if schema is not None:
                for constraint in schema.type_constraints:
                    strs = set(constraint.allowed_type_strs)
                    if "tensor(float)" in strs and _TYPE_STRS[self.target] not in strs:
                        allowed = False
            self._allows[key] = allowed
        return self._allows[key]

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def orig(self, name: str) -> int | None:
        return self.types.get(name)


class _Scope:
    """One graph being rewritten: the current type of each float tensor and the rewritten node list."""

    def __init__(self, graph: onnx.GraphProto, ctx: _Context, parent: _Scope | None = None) -> None:
        self.graph = graph
        self.ctx = ctx
        self.parent = parent
        self.current: dict[str, int] = {}
        self.inits = {t.name: t for t in graph.initializer}
        self.committed: dict[str, int] = {}
        self.copies: dict[tuple[str, int], str] = {}
        self.casts: dict[tuple[str, int], str] = {}
        self.nodes: list[onnx.NodeProto] = []

    def _owner(self, name: str) -> _Scope | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.current or name in scope.inits:
                return scope
            scope = scope.parent
        return None

    def get_as(self, name: str, elem: int) -> str:
        """A tensor name holding ``name``'s value in type ``elem`` (converting a weight or adding a Cast)."""
        owner = self._owner(name)
        if owner is None:
            raise RnnrtInternalError(f"Tensor {name!r} is read before it is defined")
        if name in owner.inits and name not in owner.current:
            committed = owner.committed.get(name)
            if committed is None:
                init = owner.inits[name]
                if init.data_type != elem:
                    init.CopyFrom(_convert_tensor(init, elem))
                owner.committed[name] = elem
                return name
            if committed == elem:
                return name
            key = (name, elem)
            if key not in owner.copies:
                copy = _convert_tensor(owner.inits[name], elem, self.ctx.unique(f"{name}__{_SHORT[elem]}"))
                owner.graph.initializer.append(copy)
                owner.copies[key] = copy.name
            return owner.copies[key]
        if owner.current[name] == elem:
            return name
        key = (name, elem)
        if key not in self.casts:
            out = self.ctx.unique(f"{name}__{_SHORT[elem]}")
            self.nodes.append(helper.make_node("Cast", [name], [out], to=elem, name=out))
            self.casts[key] = out
        return self.casts[key]

    def current_type(self, name: str) -> int | None:
        owner = self._owner(name)
        if owner is None:
            return None
        if name in owner.current:
            return owner.current[name]
        return owner.committed.get(name, owner.inits[name].data_type)


def _rename(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto], old: str, new: str) -> None:
    for t in graph.initializer:
        if t.name == old:
            t.name = new
    for node in nodes:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for i, n in enumerate(node.output):
            if n == old:
                node.output[i] = new
        for g in _subgraphs(node):
            defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
            if old not in defined:
                _rename(g, g.node, old, new)
                for vo in g.output:
                    if vo.name == old:
                        vo.name = new


def _convert_graph(
    scope: _Scope,
    in_types: dict[str, int],
    out_types: dict[str, int],
    state_pairs: Sequence[tuple[str, str]],
) -> None:
    ctx, graph = scope.ctx, scope.graph
    keep: set[str] = set()
    if ctx.keep_state_fp32 and state_pairs:
        keep = _state_path(graph, [p[0] for p in state_pairs], [p[1] for p in state_pairs])
    for vi in graph.input:
        if vi.name in scope.inits:
            continue  # an old-style initializer listed as input: a weight, converted on demand
        elem = vi.type.tensor_type.elem_type
        if elem == _FLOAT:
            elem = in_types.get(vi.name, ctx.target)
            _set_elem(vi, elem)
        scope.current[vi.name] = elem
    old_nodes = list(graph.node)
    for node in old_nodes:
        _convert_node(scope, node, keep)
    for vo in graph.output:
        if ctx.orig(vo.name) != _FLOAT:
            continue
        want = out_types.get(vo.name, ctx.target)
        have = scope.current_type(vo.name)
        if have is None:
            raise RnnrtInternalError(f"Graph output {vo.name!r} has no producer")
        if have != want and vo.name in scope.inits and vo.name not in scope.committed:
            scope.get_as(vo.name, want)
            have = want
        if have != want:
            if not any(vo.name in n.output for n in scope.nodes):
                raise ModelImportError(
                    fmt(
                        f"Graph output {vo.name!r}",
                        f"Is a graph input or weight passed straight through, with type {_SHORT.get(have, have)} "
                        f"but the binding needs {_SHORT.get(want, want)}",
                        "Give the output its own node (e.g. an Identity) in the step graph.",
                    )
                )
            internal = ctx.unique(f"{vo.name}__{_SHORT[have]}")
            _rename(graph, scope.nodes, vo.name, internal)
            scope.nodes.append(helper.make_node("Cast", [internal], [vo.name], to=want, name=f"{vo.name}__cast"))
        _set_elem(vo, want)
    del graph.node[:]
    graph.node.extend(scope.nodes)
    # Inferred intermediate types are stale now; ORT and TensorRT re-infer them.
    del graph.value_info[:]


def _float_attr_tensor(node: onnx.NodeProto, elem: int) -> None:
    """Rewrites the float `value` attribute of Constant / ConstantOfShape to type ``elem``."""
    for attr in list(node.attribute):
        if attr.name == "value" and attr.t.data_type == _FLOAT:
            attr.t.CopyFrom(_convert_tensor(attr.t, elem, attr.t.name))
        elif attr.name in ("value_float", "value_floats"):
            values = [attr.f] if attr.name == "value_float" else list(attr.floats)
            array = np.array(values if attr.name == "value_floats" else values[0], dtype=np.float32)
            node.attribute.remove(attr)
            node.attribute.append(
                helper.make_attribute("value", numpy_helper.from_array(array.astype(_np_dtype(elem))))
            )


def _convert_node(scope: _Scope, node: onnx.NodeProto, keep: set[str]) -> None:
    ctx = scope.ctx
    op = node.op_type
    for o in node.output:
        if o and ctx.orig(o) is None:
            raise ModelImportError(
                fmt(
                    f"Node {node.name or node.output[0]!r} ({op})",
                    f"The element type of its output {o!r} is unknown after ONNX shape inference",
                    "Precision rewriting needs every tensor's type; run onnx.shape_inference on the step graph.",
                )
            )
    float_outs = [o for o in node.output if o and ctx.orig(o) == _FLOAT]
    if op in ("Scan", "Loop", "If"):
        _convert_control_flow(scope, node, keep)
        return
    on_state_path = ctx.keep_state_fp32 and any(o in keep for o in float_outs)
    elem = _FLOAT if on_state_path and op not in HEAVY_OPS else ctx.target
    if elem != _FLOAT and not ctx.allows_target(node):
        elem = _FLOAT
    if op in _MOVE_OPS:
        have = {scope.current_type(n) for n in node.input if n and ctx.orig(n) == _FLOAT}
        if len(have) == 1 and None not in have:
            elem = have.pop()  # type: ignore[assignment]
    if op == "Cast":
        to = helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))
        if to == _FLOAT:
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = elem
            scope.current[node.output[0]] = elem
        else:
            scope.current[node.output[0]] = to
        scope.nodes.append(node)
        return
    if op not in _ANY_INPUT_OPS:
        fixed = _FIXED_INPUTS.get(op, ())
        for i, name in enumerate(node.input):
            if name and ctx.orig(name) == _FLOAT:
                node.input[i] = scope.get_as(name, _FLOAT if i in fixed else elem)
    if float_outs:
        if op in ("Constant", "ConstantOfShape"):
            _float_attr_tensor(node, elem)
            if op == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
                node.attribute.append(
                    helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, _np_dtype(elem))))
                )
        elif op in _DTYPE_ATTR_OPS:
            attrs = {a.name: a for a in node.attribute}
            if "dtype" in attrs and attrs["dtype"].i == _FLOAT:
                attrs["dtype"].i = elem
            elif "dtype" not in attrs and op in ("RandomNormal", "RandomUniform"):
                node.attribute.append(helper.make_attribute("dtype", elem))
    for o in node.output:
        if o:
            scope.current[o] = elem if o in float_outs else ctx.orig(o)
    scope.nodes.append(node)


def _attr_graph(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == name)


def _convert_control_flow(scope: _Scope, node: onnx.NodeProto, keep: set[str]) -> None:
    """Scan / Loop / If: pick a type per slot, cast the outer inputs, rewrite the bodies recursively."""
    ctx = scope.ctx

    def slot(outer: str) -> int | None:
        if not outer or ctx.orig(outer) != _FLOAT:
            return None
        return _FLOAT if ctx.keep_state_fp32 and outer in keep else ctx.target

    def carried_slot(outer_in: str, outer_out: str) -> int | None:
        if not outer_in or ctx.orig(outer_in) != _FLOAT:
            return None
        on_path = outer_in in keep or outer_out in keep
        return _FLOAT if ctx.keep_state_fp32 and on_path else ctx.target

    def cast_input(i: int, elem: int | None) -> None:
        if elem is not None and node.input[i]:
            node.input[i] = scope.get_as(node.input[i], elem)

    def run_body(body: onnx.GraphProto, ins: dict[str, int | None], outs: dict[str, int | None], pairs) -> None:
        child = _Scope(body, ctx, parent=scope)
        _convert_graph(
            child,
            {k: v for k, v in ins.items() if v is not None},
            {k: v for k, v in outs.items() if v is not None},
            [(a, b) for a, b in pairs if ins.get(a) == _FLOAT],
        )

    outs_types: list[int | None] = []
    if node.op_type == "Scan":
        body = _attr_graph(node, "body")
        m = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
        n = len(node.input) - m
        carried = [carried_slot(node.input[j], node.output[j]) for j in range(n)]
        scanned = [slot(node.input[n + k]) for k in range(m)]
        for j in range(n):
            cast_input(j, carried[j])
        for k in range(m):
            cast_input(n + k, scanned[k])
        scan_outs = [slot(o) for o in node.output[n:]]
        ins = {body.input[j].name: carried[j] for j in range(n)}
        ins.update({body.input[n + k].name: scanned[k] for k in range(m)})
        outs = {body.output[j].name: carried[j] for j in range(n)}
        outs.update({body.output[n + k].name: scan_outs[k] for k in range(len(scan_outs))})
        run_body(body, ins, outs, [(body.input[j].name, body.output[j].name) for j in range(n)])
        outs_types = carried + scan_outs
    elif node.op_type == "Loop":
        body = _attr_graph(node, "body")
        n = len(node.input) - 2
        carried = [carried_slot(node.input[2 + j], node.output[j]) for j in range(n)]
        for j in range(n):
            cast_input(2 + j, carried[j])
        scan_outs = [slot(o) for o in node.output[n:]]
        ins = {body.input[2 + j].name: carried[j] for j in range(n)}
        outs = {body.output[1 + j].name: carried[j] for j in range(n)}
        outs.update({body.output[1 + n + k].name: scan_outs[k] for k in range(len(scan_outs))})
        run_body(body, ins, outs, [(body.input[2 + j].name, body.output[1 + j].name) for j in range(n)])
        outs_types = carried + scan_outs
    else:  # If
        outs_types = [slot(o) for o in node.output]
        for branch in ("then_branch", "else_branch"):
            body = _attr_graph(node, branch)
            run_body(body, {}, {vo.name: t for vo, t in zip(body.output, outs_types)}, [])
    for o, elem in zip(node.output, outs_types):
        if o:
            scope.current[o] = elem if elem is not None else ctx.orig(o)
    scope.nodes.append(node)


def convert_precision(
    model: onnx.ModelProto,
    precision: str,
    *,
    io_dtype: str = "float32",
    state_dtype: str = "float32",
    state_inputs: Sequence[str] = (),
    state_outputs: Sequence[str] = (),
) -> onnx.ModelProto:
    """Returns a copy of an fp32 step graph that computes in ``precision``.

    Args:
        model (onnx.ModelProto): The fp32 step graph (not modified).
        precision (str): ``"fp32"`` (returns an unchanged copy), ``"fp16"`` or ``"bf16"``.
        io_dtype (str): dtype of the float user inputs and outputs. Defaults to ``"float32"``.
        state_dtype (str): dtype of the state inputs and outputs. ``"float32"`` (the default) also keeps
            the element-wise path from state input to state output in fp32, with only :data:`HEAVY_OPS`
            in ``precision``; the compute dtype makes the state fully reduced.
        state_inputs (Sequence[str]): Graph inputs that are recurrent state. Defaults to none.
        state_outputs (Sequence[str]): Graph outputs that are recurrent state, paired with
            ``state_inputs`` by position. Defaults to none.

    Returns:
        onnx.ModelProto: The rewritten graph; it passes ``onnx.checker.check_model``.

    Raises:
        ConfigError: An unknown precision or dtype, a reduced io/state dtype with fp32 compute, or
            state names that are not graph inputs/outputs.
        ModelImportError: A tensor's type cannot be inferred.
    """
    target = DTYPES[precision_dtype(precision)]
    io_elem = _dtype(io_dtype, "io_dtype")
    state_elem = _dtype(state_dtype, "state_dtype")
    if len(state_inputs) != len(state_outputs):
        raise ConfigError(
            fmt("State pairs", f"{len(state_inputs)} state inputs but {len(state_outputs)} state outputs", "Pass one output per input.")
        )
    inputs = {vi.name for vi in model.graph.input}
    outputs = {vo.name for vo in model.graph.output}
    for name in state_inputs:
        if name not in inputs:
            raise ConfigError(fmt(f"State input {name!r}", "Is not a graph input", f"Graph inputs: {sorted(inputs)}."))
    for name in state_outputs:
        if name not in outputs:
            raise ConfigError(fmt(f"State output {name!r}", "Is not a graph output", f"Graph outputs: {sorted(outputs)}."))
    if target == _FLOAT:
        if io_elem != _FLOAT or state_elem != _FLOAT:
            raise ConfigError(
                fmt(
                    f"Precision {precision!r}",
                    f"io_dtype {io_dtype!r} / state_dtype {state_dtype!r} need a reduced compute precision",
                    "With fp32 compute the bindings are float32; pass --precision fp16 or bf16.",
                )
            )
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out

    ctx = _Context(_typed_skeleton(model), target, keep_state_fp32=(state_elem == _FLOAT))
    inferred = onnx.ModelProto()
    inferred.CopyFrom(model)
    state_in, state_out = set(state_inputs), set(state_outputs)
    in_types = {vi.name: (state_elem if vi.name in state_in else io_elem) for vi in inferred.graph.input}
    out_types = {vo.name: (state_elem if vo.name in state_out else io_elem) for vo in inferred.graph.output}
    _convert_graph(_Scope(inferred.graph, ctx), in_types, out_types, list(zip(state_inputs, state_outputs)))
    _drop_unused_initializers(inferred.graph)
    return inferred


def _typed_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every tensor's type inferred, its big float weights replaced by typed inputs.

    Shape inference copies the whole model; for a model with 1 GiB of weights that costs gigabytes.
    Float weights never drive shape inference (only small integer constants do), so they are dropped.
    """
    skeleton = onnx.ModelProto()
    _copy_without_float_weights(model, skeleton)
    return onnx.shape_inference.infer_shapes(skeleton)


def _copy_without_float_weights(model: onnx.ModelProto, skeleton: onnx.ModelProto) -> None:
    graph = model.graph
    skeleton.CopyFrom(onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import))
    skeleton.graph.name = graph.name
    skeleton.graph.node.extend(graph.node)
    skeleton.graph.input.extend(graph.input)
    skeleton.graph.output.extend(graph.output)
    skeleton.graph.value_info.extend(graph.value_info)
    inputs = {vi.name for vi in graph.input}
    for init in graph.initializer:
        if init.data_type == _FLOAT and init.name not in inputs:
            skeleton.graph.input.append(helper.make_tensor_value_info(init.name, _FLOAT, list(init.dims)))
        else:
            skeleton.graph.initializer.append(init)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used: set[str] = {vo.name for vo in graph.output}
    for node in graph.node:
        used.update(_node_reads(node))
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


def _emulate_graph(graph: onnx.GraphProto, types: dict[str, int], names: set[str]) -> None:
    reduced = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    for vi in itertools.chain(graph.input, graph.output):
        if vi.type.tensor_type.elem_type in reduced:
            _set_elem(vi, _FLOAT)
    for init in graph.initializer:
        if init.data_type in reduced:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i in reduced:
                attr.i = _FLOAT
            elif attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in reduced:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
        if node.op_type in ("Scan", "Loop", "If"):
            # Their outputs come from body outputs, which the body already rounds.
            for g in _subgraphs(node):
                _emulate_graph(g, types, names)
            continue
        for i, out in enumerate(node.output):
            elem = types.get(out)
            if not out or elem not in reduced:
                continue
            raw = out + "__raw"
            while raw in names:
                raw += "_"
            names.update((raw, raw + "_r"))
            node.output[i] = raw
            nodes.append(helper.make_node("Cast", [raw], [raw + "_r"], to=elem))
            nodes.append(helper.make_node("Cast", [raw + "_r"], [out], to=_FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]


def emulate_precision(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turns a graph made by :func:`convert_precision` into an fp32 graph that emulates its rounding.

    Every fp16/bf16 tensor becomes float32 and is rounded to its reduced type after the op that makes
    it (a Cast to the reduced type and back). Arithmetic inside each op is fp32, like TensorRT's
    fp16/bf16 kernels, which accumulate in fp32. ONNX Runtime's CPU provider has almost no bf16
    kernels; this graph runs everywhere.

    Args:
        model (onnx.ModelProto): A rewritten graph (not modified).

    Returns:
        onnx.ModelProto: The emulating fp32 graph.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    _collect_types(inferred.graph, types)
    _emulate_graph(inferred.graph, types, set(types))
    return inferred
