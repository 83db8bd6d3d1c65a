"""Export a model config as a Triton Inference Server model repository (``rnnrt export-triton``).

Three engines:

- ``python``: Triton's python backend runs rnnrt itself (:mod:`rnnrt.serve.backend`): a StreamPool
  behind the sequence batcher's ``oldest`` strategy, state kept by rnnrt per correlation id. This is
  what ``rnnrt serve`` runs; see docs/serving.md.
- ``onnx`` / ``plan``: Triton's onnxruntime / tensorrt backends with Triton's implicit state, below.

``config.pbtxt`` is Triton's ``ModelConfig`` protobuf message (``tritonclient.grpc.model_config_pb2``)
written by protobuf's text format; model names are plain folder names inside the repository.

Triton's sequence batcher (``direct`` strategy) gives every live sequence its own batch slot, keeps the
recurrent state inside the server (implicit state, paired by name, zero initial state) and signals the
first request of a sequence with the START control. The export writes::

    REPO/<name>/config.pbtxt
    REPO/<name>/1/model.onnx        (--engine onnx; Triton backend "onnxruntime")
    REPO/<name>/1/model.plan        (--engine plan; Triton backend "tensorrt")

START semantics:

- With a continuation input (Caffe ``cont``): START is mapped onto it with ``fp32_false_true: [1, 0]``
  (``int32_false_true`` for an int32 input), so the first request of a sequence runs with cont=0 at
  t=0, exactly as ``Session.reset`` + auto-filled cont; later requests run with cont=1. Triton also
  resets the implicit state to ``initial_state`` (zeros) at START.
- Without one: START only resets the implicit state to zeros. For models whose cont does nothing but
  zero the previous state (Caffe LSTM/RNN) both give the same outputs; a model that reads cont in
  other ways needs the continuation input.

Layout: Triton batches along the first dim. A step graph whose batch axis is not 0 (Caffe's
``(T, N, ...)``), or whose continuation input is not ``(N, 1)``, is wrapped: batch-first graph inputs
and outputs with Transpose nodes to the original layout, and a ``(N, 1)`` START control input expanded
to the original continuation shape (the control at t=0, 1 elsewhere). Mid-request resets (cont=0 at
t>0) cannot be expressed through START; split such requests. A plan is rebuilt from the wrapped graph
when wrapping was needed.

Folded rows (a binding with ``batch_fold``, e.g. an LRCN net's ``T*N`` time-major frames): each batch row
of the Triton tensor is one sequence's ``outer*inner`` entries (its T frames); the wrapper reshapes and
transposes them into the graph's ``t*N + n`` rows and back. A continuation fed as ``T*N`` rows (clip
markers) gets START on its first time step.

Example::

    from rnnrt.serve.triton import export_triton

    model_dir = export_triton("out/model.yaml", "repo/", engine="onnx")
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from rnnrt.config import ModelConfig, load_config
from rnnrt.errors import ConfigError, fmt
from rnnrt.safe_write import staged, write_bytes, write_text

G_LOGGER = logging.getLogger("rnnrt")

__all__ = ["TRITON_DTYPES", "check_model_name", "export_triton", "triton_config", "triton_config_text"]

TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}

# START control value per continuation dtype: (field, [value when not START, value when START]).
_START_FIELDS = {"float32": ("fp32_false_true", "[ 1, 0 ]"), "int32": ("int32_false_true", "[ 1, 0 ]")}

DEFAULT_MAX_BATCH = 64
"""max_batch_size for a dynamic-batch model without a built profile."""


def _perm_to_first(rank: int, axis: int) -> list[int]:
    return [axis] + [i for i in range(rank) if i != axis]


def _perm_from_first(rank: int, axis: int) -> list[int]:
    # Inverse of _perm_to_first: original axis i is taken from batch-first axis perm[i].
    return [0 if i == axis else (i + 1 if i < axis else i) for i in range(rank)]


def _batch_first(shape: list, axis: Optional[int], fold: Optional[tuple] = None) -> list:
    if axis is None:
        return list(shape)
    if fold is not None:
        # A folded batch axis (outer*N*inner entries, see the config's batch_fold): one sequence's
        # request holds its outer*inner entries there.
        return ["batch"] + [fold[0] * fold[1] if i == axis else d for i, d in enumerate(shape)]
    return [shape[axis]] + [d for i, d in enumerate(shape) if i != axis]


class _Plan:
    """What the Triton model looks like: tensor shapes as Triton sees them and whether to wrap."""

    def __init__(self, cfg: ModelConfig, max_batch_size: Optional[int]) -> None:
        entries = [(t.shape, t.batch_axis) for t in cfg.inputs + cfg.outputs] + [(s.shape, s.batch_axis) for s in cfg.state]
        dynamic = [isinstance(shape[axis], str) for shape, axis in entries if axis is not None]
        self.batched = bool(dynamic) and all(dynamic) and all(axis is not None for _, axis in entries)
        if self.batched:
            if cfg.engine is not None and cfg.engine.profile is not None:
                self.max_batch = int(cfg.engine.profile.max) if max_batch_size is None else int(max_batch_size)
            else:
                self.max_batch = DEFAULT_MAX_BATCH if max_batch_size is None else int(max_batch_size)
            if cfg.engine is not None and cfg.engine.profile is not None and self.max_batch > cfg.engine.profile.max:
                raise ConfigError(
                    fmt("export-triton", f"max_batch_size={self.max_batch} exceeds the plan's profile max "
                        f"{cfg.engine.profile.max}", "Rebuild with a larger --batch range or lower --max-batch-size.")
                )
        else:
            self.max_batch = 0
            G_LOGGER.warning("export-triton | The model has no dynamic batch dim on every binding; exporting with "
                             "max_batch_size 0 (one sequence per model instance at a time).")
        self.cont = cfg.continuation
        cont_spec = next((t for t in cfg.inputs if self.cont and t.name == self.cont.input), None)
        if cont_spec is not None and cont_spec.dtype not in _START_FIELDS:
            raise ConfigError(
                fmt(f"Continuation input {cont_spec.name!r}", f"Has dtype {cont_spec.dtype!r}, which Triton's START "
                    "control cannot drive", f"Use one of {sorted(_START_FIELDS)}.")
            )
        self.cont_spec = cont_spec
        control_shape = ["batch", 1] if self.batched else [1]
        if cont_spec is None:
            self.wrap_cont = False
        elif self.batched:
            self.wrap_cont = not (cont_spec.batch_axis == 0 and list(cont_spec.shape[1:]) == [1])
        else:
            self.wrap_cont = list(cont_spec.shape) != [1]
        time_major = cont_spec is not None and cont_spec.batch_fold is not None and self.cont.time_axis == cont_spec.batch_axis
        if self.wrap_cont and not time_major and self.cont.time_axis is not None \
                and isinstance(cont_spec.shape[self.cont.time_axis], str):
            raise ConfigError(
                fmt(f"Continuation input {cont_spec.name!r}", "Has a dynamic time dim, so START cannot be expanded to "
                    "'0 at t=0, 1 later' inside the graph", "Export a step graph with a fixed time dim.")
            )
        self.transpose = {}
        self.folds = {t.name: tuple(t.batch_fold) for t in cfg.inputs + cfg.outputs if t.batch_fold is not None}
        if self.folds and not self.batched:
            raise ConfigError(fmt("export-triton", f"Bindings {sorted(self.folds)} fold the streams with other dims "
                                  "but the model has no dynamic batch on every binding", "Convert with --batch dynamic."))
        if cont_spec is not None and cont_spec.name in self.folds and self.cont.time_axis != cont_spec.batch_axis:
            raise ConfigError(
                fmt(f"Continuation input {cont_spec.name!r}", f"Folds the streams with other dims {list(self.folds[cont_spec.name])} "
                    "but not as T*N time-major rows", "START can drive only a plain or a time-major continuation input.")
            )
        if self.batched:
            for t in cfg.inputs + cfg.outputs:
                if (t.batch_axis != 0 or t.name in self.folds) and not (cont_spec is not None and t.name == cont_spec.name):
                    self.transpose[t.name] = (len(t.shape), t.batch_axis)
            for s in cfg.state:
                if s.batch_axis != 0:
                    self.transpose[s.input] = (len(s.shape), s.batch_axis)
                    self.transpose[s.output] = (len(s.shape), s.batch_axis)
        self.control_shape = control_shape
        self.wrap = bool(self.transpose) or self.wrap_cont

    def dims(self, shape: list, axis: Optional[int], fold: Optional[tuple] = None) -> list[int]:
        full = _batch_first(shape, axis, fold) if self.batched else list(shape)
        rest = full[1:] if self.batched else full
        return [-1 if isinstance(d, str) else int(d) for d in rest]


def _rename_uses(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_uses(sub, old, new)


def _wrap_model(cfg: ModelConfig, plan: _Plan) -> Any:
    """The step graph with batch-first I/O and a (N, 1) START control for the continuation input."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(cfg.model_path))
    graph = model.graph
    by_input = {vi.name: vi for vi in graph.input}
    by_output = {vi.name: vi for vi in graph.output}
    nodes_front, nodes_back = [], []

    def new_value_info(vi: Any, shape: list) -> Any:
        elem = vi.type.tensor_type.elem_type
        return helper.make_tensor_value_info(vi.name, elem, [d if isinstance(d, (int, str)) else None for d in shape])

    for name, (rank, axis) in plan.transpose.items():
        if name in by_input:
            vi = by_input[name]
            inner = f"{name}__rnnrt_orig"
            _rename_uses(graph, name, inner)
            shape = next(list(t.shape) for t in cfg.inputs if t.name == name) if name not in {s.input for s in cfg.state} \
                else next(list(s.shape) for s in cfg.state if s.input == name)
            fold = plan.folds.get(name)
            vi.CopyFrom(new_value_info(vi, _batch_first(shape, axis, fold)))
            if fold is not None:
                nodes_front += _unfold_first(graph, name, inner, shape, axis, fold)
                continue
            nodes_front.append(helper.make_node("Transpose", [name], [inner], perm=_perm_from_first(rank, axis),
                                                name=f"rnnrt_triton_in_{name}"))
        elif name in by_output:
            vi = by_output[name]
            inner = f"{name}__rnnrt_orig"
            for node in graph.node:
                for i, out in enumerate(node.output):
                    if out == name:
                        node.output[i] = inner
            _rename_uses(graph, name, inner)
            shape = next(list(t.shape) for t in cfg.outputs if t.name == name) if name not in {s.output for s in cfg.state} \
                else next(list(s.shape) for s in cfg.state if s.output == name)
            fold = plan.folds.get(name)
            vi.CopyFrom(new_value_info(vi, _batch_first(shape, axis, fold)))
            if fold is not None:
                nodes_back += _fold_first(graph, inner, name, shape, axis, fold)
                continue
            nodes_back.append(helper.make_node("Transpose", [inner], [name], perm=_perm_to_first(rank, axis),
                                               name=f"rnnrt_triton_out_{name}"))

    if plan.wrap_cont:
        spec = plan.cont_spec
        name, rank = spec.name, len(spec.shape)
        vi = by_input[name]
        inner = f"{name}__rnnrt_orig"
        _rename_uses(graph, name, inner)
        vi.CopyFrom(new_value_info(vi, plan.control_shape))
        dtype = np.dtype(spec.dtype)
        fold = plan.folds.get(name)
    if plan.wrap_cont and fold is not None:
        # T*N time-major rows (time_axis == batch_axis): one sequence's rows batch-first
        # (B x ... x T*inner x ...), 0 on the first time step at START, unfolded like an input.
        nodes_front += _time_major_cont(graph, name, inner, list(spec.shape), spec.batch_axis, fold, dtype)
    elif plan.wrap_cont:
        # mask: original shape with batch dim 1; 1 at t=0 (everywhere without a time axis).
        mask_shape = [1 if (i == spec.batch_axis or isinstance(d, str)) else int(d) for i, d in enumerate(spec.shape)]
        mask = np.zeros(mask_shape, dtype)
        index: list[Any] = [slice(None)] * rank
        if plan.cont.time_axis is not None:
            index[plan.cont.time_axis] = 0
        mask[tuple(index)] = 1
        ctrl_shape = [1] * rank
        if plan.batched:
            ctrl_shape[spec.batch_axis] = -1
        consts = {
            f"{name}__rnnrt_shape": np.asarray(ctrl_shape, np.int64),
            f"{name}__rnnrt_one": np.asarray(1, dtype),
            f"{name}__rnnrt_mask": mask,
        }
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
        p = f"{name}__rnnrt_"
        # cont = 1 - (1 - control) * mask: the control at t=0, 1 at every later time step.
        nodes_front += [
            helper.make_node("Reshape", [name, p + "shape"], [p + "ctrl"], name=p + "reshape"),
            helper.make_node("Sub", [p + "one", p + "ctrl"], [p + "not"], name=p + "not"),
            helper.make_node("Mul", [p + "not", p + "mask"], [p + "masked"], name=p + "mask_mul"),
            helper.make_node("Sub", [p + "one", p + "masked"], [inner], name=p + "cont"),
        ]
    new_nodes = nodes_front + list(graph.node) + nodes_back
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # stale shapes of renamed tensors; TensorRT and ORT re-infer them
    onnx.checker.check_model(model)
    return model


def _unfold_first(graph: Any, src: str, dst: str, shape: list, axis: int, fold: tuple) -> list:
    """Nodes: batch-first ``B x ... x outer*inner x ...`` -> the graph's ``... x outer*B*inner x ...`` (time-major)."""
    outer, inner = fold
    before, after = [int(d) for d in shape[:axis]], [int(d) for d in shape[axis + 1:]]
    p = f"{src}__rnnrt_fold_"
    split = [-1] + before + [outer, inner] + after          # B, ..., outer, inner, ...
    rank = len(split)
    perm = list(range(1, axis + 2)) + [0] + list(range(axis + 2, rank))  # ..., outer, B, inner, ...
    merged = before + [-1] + after
    return _reshape_transpose_reshape(graph, src, dst, p, split, perm, merged)


def _reshape_transpose_reshape(graph: Any, src: str, dst: str, prefix: str, split: list, perm: list,
                               merged: list) -> list:
    """Nodes ``src -> Reshape(split) -> Transpose(perm) -> Reshape(merged) -> dst`` (shapes as initializers)."""
    from onnx import helper, numpy_helper

    graph.initializer.extend([numpy_helper.from_array(np.asarray(split, np.int64), prefix + "split"),
                              numpy_helper.from_array(np.asarray(merged, np.int64), prefix + "merged")])
    return [
        helper.make_node("Reshape", [src, prefix + "split"], [prefix + "a"], name=prefix + "reshape_a"),
        helper.make_node("Transpose", [prefix + "a"], [prefix + "b"], perm=perm, name=prefix + "transpose"),
        helper.make_node("Reshape", [prefix + "b", prefix + "merged"], [dst], name=prefix + "reshape_b"),
    ]


def _fold_first(graph: Any, src: str, dst: str, shape: list, axis: int, fold: tuple) -> list:
    """Nodes: the graph's ``... x outer*B*inner x ...`` -> batch-first ``B x ... x outer*inner x ...``."""
    outer, inner = fold
    before, after = [int(d) for d in shape[:axis]], [int(d) for d in shape[axis + 1:]]
    p = f"{dst}__rnnrt_fold_"
    split = before + [outer, -1, inner] + after             # ..., outer, B, inner, ...
    rank = len(split)
    perm = [axis + 1] + list(range(0, axis + 1)) + list(range(axis + 2, rank))  # B, ..., outer, inner, ...
    merged = [-1] + before + [outer * inner] + after
    return _reshape_transpose_reshape(graph, src, dst, p, split, perm, merged)


def _time_major_cont(graph: Any, name: str, dst: str, shape: list, axis: int, fold: tuple, dtype: np.dtype) -> list:
    """Nodes: START control ``(B, 1)`` -> a T*N time-major continuation input, 0 at t=0 of started sequences."""
    from onnx import helper, numpy_helper

    outer, inner = fold
    first = [1] + [int(d) if i != axis else outer * inner for i, d in enumerate(shape)]
    mask = np.zeros(first, dtype)
    index: list[Any] = [slice(None)] * len(first)
    index[axis + 1] = slice(0, inner)  # the first time step: entries 0..inner-1 of each sequence
    mask[tuple(index)] = 1
    p = f"{name}__rnnrt_"
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray([-1] + [1] * len(shape), np.int64), p + "shape"),
        numpy_helper.from_array(np.asarray(1, dtype), p + "one"),
        numpy_helper.from_array(mask, p + "mask"),
    ])
    # cont = 1 - (1 - control) * mask, batch-first, then unfolded like a folded input.
    return [
        helper.make_node("Reshape", [name, p + "shape"], [p + "ctrl"], name=p + "reshape"),
        helper.make_node("Sub", [p + "one", p + "ctrl"], [p + "not"], name=p + "not"),
        helper.make_node("Mul", [p + "not", p + "mask"], [p + "masked"], name=p + "mask_mul"),
        helper.make_node("Sub", [p + "one", p + "masked"], [p + "first"], name=p + "cont"),
    ] + _unfold_first(graph, p + "first", dst, shape, axis, fold)


_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
ENGINES = ("plan", "onnx", "python")
INSTANCE_KINDS = ("auto", "KIND_GPU", "KIND_CPU")
PYTHON_MODEL_DIR = "rnnrt_model"
"""Folder of the rnnrt config and model files next to ``model.py`` (never ``rnnrt``: it would shadow the package)."""


def model_config_pb2() -> Any:
    """Triton's ``ModelConfig`` protobuf module (shipped by ``tritonclient``)."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError as err:
        raise ConfigError(fmt("export-triton", "Needs Triton's model config messages, which tritonclient ships",
                              "pip install 'rnnrt[serve]' (tritonclient[grpc]).")) from err
    return pb


def check_model_name(name: str) -> str:
    """Returns ``name`` when it is a safe Triton model name: one path component, no ``..``, no separators."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(fmt(f"Model name {name!r}", "Is not a plain model name",
                              "Use 1-128 letters, digits, '_', '.' or '-' (not starting with '.' or '-'); "
                              "a name is one folder inside the repository, never a path."))
    return name


def default_instance_kind() -> str:
    """``KIND_GPU`` when a CUDA GPU is usable here, else ``KIND_CPU``."""
    from rnnrt import cuda

    try:
        return "KIND_GPU" if cuda.available() else "KIND_CPU"
    except Exception:  # noqa: BLE001 - any failure to probe means no usable GPU
        return "KIND_CPU"


def _check_counts(max_batch_size: Optional[int], idle_us: int, max_sequences: Optional[int]) -> None:
    for what, value, low in (("max_batch_size", max_batch_size, 1), ("idle_us", idle_us, 1),
                             ("max_sequences", max_sequences, 1)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(fmt(f"export-triton {what}={value!r}", f"Is not an integer >= {low}",
                                  "Counts and idle microseconds are positive integers."))


def triton_config(cfg: ModelConfig, name: str, engine: str = "onnx", max_batch_size: Optional[int] = None,
                  idle_us: int = 60_000_000, instance_kind: str = "auto", max_sequences: Optional[int] = None,
                  backend: str = "auto", queue_delay_us: int = 0, shared: Optional[Mapping[str, Any]] = None) -> Any:
    """Returns the Triton ``ModelConfig`` message for a model config (see the module doc).

    Args:
        cfg (ModelConfig): The model config.
        name (str): The Triton model name.
        engine (str): ``"onnx"``, ``"plan"`` or ``"python"``. Defaults to ``"onnx"``.
        max_batch_size (int | None): onnx/plan: overrides the profile's max batch. Defaults to None.
        idle_us (int): ``max_sequence_idle_microseconds``. Defaults to 60 s.
        instance_kind (str): ``auto`` (GPU when one is usable here), ``KIND_GPU`` or ``KIND_CPU``.
        max_sequences (int | None): python: ``max_candidate_sequences`` = the pool's slots. Defaults to
            the plan's profile max, or 64.
        backend (str): python: the rnnrt engine backend (``auto``, ``onnxruntime``, ``tensorrt``).
        queue_delay_us (int): python: the oldest strategy's ``max_queue_delay_microseconds`` (how long
            Triton may hold a request to batch it with others). Defaults to 0.
        shared (Mapping[str, Any] | None): python: the values of the inputs without a batch axis (e.g.
            Silero's ``sr``), fed with every step (``StreamPool(shared=...)``). Defaults to None.
    """
    check_model_name(name)
    _check_counts(max_batch_size, idle_us, max_sequences)
    if isinstance(queue_delay_us, bool) or not isinstance(queue_delay_us, (int, np.integer)) or queue_delay_us < 0:
        raise ConfigError(fmt(f"export-triton queue_delay_us={queue_delay_us!r}", "Is not an integer >= 0"))
    if engine not in ENGINES:
        raise ConfigError(fmt("export-triton", f"Unknown engine {engine!r}", "Use 'plan', 'onnx' or 'python'."))
    if instance_kind not in INSTANCE_KINDS:
        raise ConfigError(fmt("export-triton", f"Unknown instance kind {instance_kind!r}",
                              "Use auto, KIND_GPU or KIND_CPU."))
    kind = default_instance_kind() if instance_kind == "auto" else instance_kind
    if engine == "python":
        return _python_config(cfg, name, idle_us, kind, max_sequences, backend, queue_delay_us, shared)
    if shared:
        raise ConfigError(fmt("export-triton shared=", f"Is for --engine python only, not {engine!r}",
                              "Fold the value into the model instead (rnnrt convert --set NAME=VALUE)."))
    return _backend_config(cfg, _Plan(cfg, max_batch_size), name, engine, idle_us, kind)


def triton_config_text(cfg: ModelConfig, name: str, engine: str = "onnx", max_batch_size: Optional[int] = None,
                       idle_us: int = 60_000_000, instance_kind: str = "auto", **kwargs: Any) -> str:
    """Returns the ``config.pbtxt`` text (:func:`triton_config` serialized by protobuf's text format)."""
    msg = triton_config(cfg, name, engine, max_batch_size, idle_us, instance_kind, **kwargs)
    return _to_text(cfg, msg)


def _to_text(cfg: ModelConfig, msg: Any) -> str:
    from google.protobuf import text_format

    header = f"# Triton model config written by `rnnrt export-triton` from {cfg.model_path.name}.\n"
    return header + text_format.MessageToString(msg)


def _tensor(pb: Any, cls: Any, name: str, dtype: str, dims: list[int], optional: bool = False) -> Any:
    t = cls(name=name, data_type=pb.DataType.Value(TRITON_DTYPES[dtype]), dims=dims)
    if optional:
        t.optional = True
    return t


def _backend_config(cfg: ModelConfig, plan: _Plan, name: str, engine: str, idle_us: int, kind: str) -> Any:
    pb = model_config_pb2()
    cont = plan.cont_spec
    msg = pb.ModelConfig(name=name, backend="onnxruntime" if engine == "onnx" else "tensorrt",
                         max_batch_size=plan.max_batch)
    for t in cfg.inputs:
        if cont is None or t.name != cont.name:
            msg.input.append(_tensor(pb, pb.ModelInput, t.name, t.dtype, plan.dims(t.shape, t.batch_axis, plan.folds.get(t.name))))
    for t in cfg.outputs:
        msg.output.append(_tensor(pb, pb.ModelOutput, t.name, t.dtype, plan.dims(t.shape, t.batch_axis, plan.folds.get(t.name))))
    seq = msg.sequence_batching
    seq.max_sequence_idle_microseconds = int(idle_us)
    seq.direct.SetInParent()
    Control = pb.ModelSequenceBatching.Control
    if cont is not None:
        field, _ = _START_FIELDS[cont.dtype]
        control = Control(kind=Control.CONTROL_SEQUENCE_START)
        getattr(control, field).extend([1, 0])
        seq.control_input.append(pb.ModelSequenceBatching.ControlInput(name=cont.name, control=[control]))
    for s in cfg.state:
        dims = plan.dims(s.shape, s.batch_axis)
        dt = pb.DataType.Value(TRITON_DTYPES[s.dtype])
        state = pb.ModelSequenceBatching.State(input_name=s.input, output_name=s.output, data_type=dt, dims=dims)
        state.initial_state.append(pb.ModelSequenceBatching.InitialState(data_type=dt, dims=dims, zero_data=True,
                                                                        name="zeros"))
        seq.state.append(state)
    msg.instance_group.append(pb.ModelInstanceGroup(count=1, kind=pb.ModelInstanceGroup.Kind.Value(kind)))
    return msg


def _shared_values(cfg: ModelConfig, shared: Optional[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The values of the inputs without a batch axis, checked against their bindings (dtype exact, shape)."""
    if shared is None:
        shared = {}
    if not isinstance(shared, Mapping):
        raise ConfigError(fmt("export-triton shared=", f"Is a {type(shared).__name__}, not a mapping",
                              "Pass shared={input name: value}, e.g. shared={'sr': 16000}."))
    inputs = {t.name: t for t in cfg.inputs}
    values = {}
    for key, value in shared.items():
        t = inputs.get(key)
        if t is None or t.batch_axis is not None:
            raise ConfigError(fmt(f"export-triton shared={{{key!r}: ...}}", "Is not an input without a batch axis",
                                  f"Such inputs: {sorted(n for n, i in inputs.items() if i.batch_axis is None)}."))
        try:
            raw = np.asarray(value)
            arr = raw.astype(np.dtype(t.dtype))
            exact = raw.shape == arr.shape and bool(np.all(arr == raw))
        except (TypeError, ValueError):
            exact = False
        if not exact:
            raise ConfigError(fmt(f"Input {key!r}", f"Value {value!r} is not exactly a {t.dtype} value",
                                  f"Give a {t.dtype} value of shape {list(t.shape)}."))
        if arr.ndim != len(t.shape) or any(isinstance(d, int) and d != n for d, n in zip(t.shape, arr.shape)):
            raise ConfigError(fmt(f"Input {key!r}", f"Value has shape {list(arr.shape)}", f"Expected {list(t.shape)}."))
        values[key] = arr
    return values


def _python_config(cfg: ModelConfig, name: str, idle_us: int, kind: str, max_sequences: Optional[int],
                   backend: str, queue_delay_us: int = 0, shared: Optional[Mapping[str, Any]] = None) -> Any:
    from rnnrt.serve.backend import (CONTROL_INPUT, FLAGS_INPUT, FRAMES_INPUT, STATE_TENSOR, STATUS_TENSOR,
                                     STREAMS_INPUT)

    pb = model_config_pb2()
    if backend not in ("auto", "onnxruntime", "tensorrt"):
        raise ConfigError(fmt("export-triton", f"Unknown rnnrt backend {backend!r}",
                              "Use auto, onnxruntime or tensorrt."))
    shared_values = _shared_values(cfg, shared)
    for role, tensors in (("Input", cfg.inputs), ("Output", cfg.outputs)):
        for t in tensors:
            if role == "Input" and t.batch_axis is None:
                if t.name not in shared_values:
                    raise ConfigError(fmt(f"Input {t.name!r}", f"Has no batch axis (shape {list(t.shape)}): one value "
                                          "for every stream of the server",
                                          f"Give it: shared={{{t.name!r}: value}} (CLI: --shared {t.name}=VALUE), "
                                          f"or fold it in at conversion (--set {t.name}=VALUE)."))
                continue
            if t.batch_axis is None or not isinstance(t.shape[t.batch_axis], str):
                raise ConfigError(fmt(f"{role} {t.name!r}", f"Has no dynamic batch dim (shape {list(t.shape)}, "
                                      f"batch_axis {t.batch_axis}), so streams cannot get their own slots",
                                      "Convert with --batch dynamic for --engine python."))
    profile = cfg.engine.profile if cfg.engine is not None else None
    slots = int(max_sequences) if max_sequences is not None else (int(profile.max) if profile is not None
                                                                   else DEFAULT_MAX_BATCH)
    if profile is not None and slots > profile.max:
        raise ConfigError(fmt("export-triton", f"max_sequences={slots} exceeds the plan's profile max {profile.max}",
                              "Rebuild with a larger --batch range or lower --max-sequences."))

    def per_request(shape: list, axis: int) -> list[int]:
        # [frames, ...shape without the batch axis]; Triton adds the request's batch dim 1 in front.
        return [-1] + [-1 if isinstance(d, str) else int(d) for i, d in enumerate(shape) if i != axis]

    msg = pb.ModelConfig(name=name, backend="python", max_batch_size=slots)
    batched = [t for t in cfg.inputs if t.name not in shared_values]
    for t in batched:
        msg.input.append(_tensor(pb, pb.ModelInput, t.name, t.dtype, per_request(t.shape, t.batch_axis), optional=True))
    msg.input.append(pb.ModelInput(name=CONTROL_INPUT, data_type=pb.TYPE_INT32, dims=[1], optional=True))
    msg.input.append(pb.ModelInput(name=STATE_TENSOR, data_type=pb.TYPE_UINT8, dims=[-1], optional=True))
    # Multi-stream requests (rnnrt.serve.backend): the streams, their frame counts and flags.
    msg.input.append(pb.ModelInput(name=STREAMS_INPUT, data_type=pb.TYPE_UINT64, dims=[-1], optional=True))
    msg.input.append(pb.ModelInput(name=FRAMES_INPUT, data_type=pb.TYPE_INT32, dims=[-1], optional=True))
    msg.input.append(pb.ModelInput(name=FLAGS_INPUT, data_type=pb.TYPE_INT32, dims=[-1], optional=True))
    for t in cfg.outputs:
        msg.output.append(_tensor(pb, pb.ModelOutput, t.name, t.dtype, per_request(t.shape, t.batch_axis)))
    msg.output.append(pb.ModelOutput(name=STATE_TENSOR, data_type=pb.TYPE_UINT8, dims=[-1]))
    msg.output.append(pb.ModelOutput(name=STATUS_TENSOR, data_type=pb.TYPE_UINT8, dims=[-1]))
    seq = msg.sequence_batching
    seq.max_sequence_idle_microseconds = int(idle_us)
    seq.oldest.max_candidate_sequences = slots
    seq.oldest.max_queue_delay_microseconds = int(queue_delay_us)
    Control = pb.ModelSequenceBatching.Control
    for cname, ckind in (("START", Control.CONTROL_SEQUENCE_START), ("END", Control.CONTROL_SEQUENCE_END),
                         ("READY", Control.CONTROL_SEQUENCE_READY)):
        control = Control(kind=ckind, int32_false_true=[0, 1])
        seq.control_input.append(pb.ModelSequenceBatching.ControlInput(name=cname, control=[control]))
    corrid = Control(kind=Control.CONTROL_SEQUENCE_CORRID, data_type=pb.TYPE_UINT64)
    seq.control_input.append(pb.ModelSequenceBatching.ControlInput(name="CORRID", control=[corrid]))
    msg.instance_group.append(pb.ModelInstanceGroup(count=1, kind=pb.ModelInstanceGroup.Kind.Value(kind)))
    layout = {"inputs": {t.name: t.batch_axis for t in batched},
              "outputs": {t.name: t.batch_axis for t in cfg.outputs},
              "continuation": cfg.continuation.input if cfg.continuation is not None else None}
    params = {"rnnrt_config": f"{PYTHON_MODEL_DIR}/model.yaml", "rnnrt_bindings": json.dumps(layout),
              "rnnrt_backend": backend}
    if shared_values:
        params["rnnrt_shared"] = json.dumps({n: {"value": a.tolist(), "dtype": a.dtype.name}
                                             for n, a in shared_values.items()})
    for key, value in params.items():
        msg.parameters[key].string_value = value
    return msg


_MODEL_PY = '''# Written by `rnnrt export-triton --engine python`: Triton's python backend loads this file.
# The model (rnnrt.serve.backend) runs an rnnrt StreamPool behind the sequence batcher; the rnnrt
# config and model files are in rnnrt_model/ beside this file. rnnrt must be importable by the
# python backend's interpreter: installed there, or in the folders of $RNNRT_PYTHONPATH (`rnnrt serve` sets it).
import os
import sys

sys.path[:0] = [p for p in os.environ.get("RNNRT_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

from rnnrt.serve.backend import TritonPythonModel  # noqa: E402,F401
'''


def _write_python_model(cfg: ModelConfig, version_dir: Path) -> None:
    from rnnrt.config import save_config

    target = version_dir / PYTHON_MODEL_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    from rnnrt.ir.weights import external_data_files

    model = cfg.model_path
    _copy_file(model, target / model.name)
    for rel in external_data_files(model):  # big models: model.onnx.data beside it
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        _copy_file(model.parent / rel, target / rel)
    update: dict[str, Any] = {"model": model.name}
    if cfg.engine is not None and cfg.plan_path is not None and cfg.plan_path.is_file():
        _copy_file(cfg.plan_path, target / cfg.plan_path.name)
        update["engine"] = cfg.engine.model_copy(update={"plan": cfg.plan_path.name})
    new = cfg.model_copy(update=update).with_base_dir(target)
    save_config(new, target / "model.yaml")
    write_text(version_dir / "model.py", _MODEL_PY, "Triton model file")


def export_triton(
    config: Union[str, os.PathLike, ModelConfig],
    repo: Union[str, os.PathLike],
    *,
    engine: str = "plan",
    name: Optional[str] = None,
    version: int = 1,
    max_batch_size: Optional[int] = None,
    idle_us: int = 60_000_000,
    instance_kind: str = "auto",
    max_sequences: Optional[int] = None,
    backend: str = "auto",
    queue_delay_us: int = 0,
    shared: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Writes a Triton model repository entry for a model config.

    Args:
        config (str | os.PathLike | ModelConfig): The model YAML config (or a loaded one).
        repo (str | os.PathLike): The model repository directory; created if missing.
        engine (str): ``"plan"`` (the config's TensorRT plan, rebuilt if the layout needs wrapping),
            ``"onnx"`` (the ONNX step graph for Triton's ONNX Runtime backend) or ``"python"`` (Triton's
            python backend running an rnnrt StreamPool; see :mod:`rnnrt.serve.backend`). Defaults to ``"plan"``.
        name (str | None): Triton model name: one folder name, never a path. Defaults to the config's
            directory name.
        version (int): Model version directory. Defaults to 1.
        max_batch_size (int | None): onnx/plan: defaults to the plan's profile max, or 64 for a
            dynamic-batch model without a profile.
        idle_us (int): ``max_sequence_idle_microseconds``. Defaults to 60 s.
        instance_kind (str): ``auto`` (``KIND_GPU`` when a GPU is usable here, else ``KIND_CPU``),
            ``KIND_GPU`` or ``KIND_CPU``. Defaults to ``auto``.
        max_sequences (int | None): python: ``max_candidate_sequences``, the pool's slots. Defaults to
            the plan's profile max, or 64.
        backend (str): python: the rnnrt backend inside the server. Defaults to ``auto``.
        queue_delay_us (int): python: ``max_queue_delay_microseconds`` of the oldest strategy. Defaults to 0.
        shared (Mapping[str, Any] | None): python: values of the inputs without a batch axis (one for
            every stream, as ``StreamPool(shared=...)``). Required for each such input. Defaults to None.

    Returns:
        Path: ``repo/<name>``.

    Raises:
        ConfigError: ``engine='plan'`` without a built plan, an unknown engine, a name that is not a
            plain folder name, a negative count, or a continuation dtype Triton's START control cannot drive.
        BuildError: The wrapped graph's plan could not be built.
    """
    cfg = config if isinstance(config, ModelConfig) else load_config(config)
    from rnnrt.build.manifest import with_built_engine  # the plan's manifest says what was built

    cfg = with_built_engine(cfg, None if isinstance(config, ModelConfig) else config)
    if engine not in ENGINES:
        raise ConfigError(fmt("export-triton", f"Unknown engine {engine!r}", "Use 'plan', 'onnx' or 'python'."))
    name = check_model_name(name if name is not None else cfg.base_dir.name)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ConfigError(fmt(f"export-triton version={version!r}", "Is not an integer >= 1"))
    if engine == "plan" and (cfg.plan_path is None or not cfg.plan_path.is_file()):
        raise ConfigError(
            fmt(f"Config {str(cfg.model_path.with_suffix('.yaml'))!r}", "Records no built plan" if cfg.engine is None
                else f"Its plan {str(cfg.plan_path)!r} does not exist", "Run `rnnrt build` first, or pass --engine onnx.")
        )
    msg = triton_config(cfg, name, engine, max_batch_size, idle_us, instance_kind, max_sequences=max_sequences,
                        backend=backend, queue_delay_us=queue_delay_us, shared=shared)
    repo_dir = Path(repo).absolute()
    model_dir = repo_dir / name
    if model_dir.resolve().parent != repo_dir.resolve():
        raise ConfigError(fmt(f"Model name {name!r}", f"Resolves outside the repository {str(repo_dir)!r}"))
    version_dir = model_dir / str(int(version))
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(fmt(f"Repository {str(repo)!r}", f"Cannot be created: {err.strerror}")) from err

    if engine == "python":
        _write_python_model(cfg, version_dir)
    elif engine == "onnx":
        import onnx

        plan = _Plan(cfg, max_batch_size)
        target = version_dir / "model.onnx"
        if plan.wrap:
            with staged([target], "Triton model file") as (tmp,):
                onnx.save(_wrap_model(cfg, plan), str(tmp))
        else:
            _copy_file(cfg.model_path, target)
            from rnnrt.ir.weights import external_data_files

            for rel in external_data_files(cfg.model_path):  # big models: model.onnx.data beside it
                (version_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                _copy_file(cfg.model_path.parent / rel, version_dir / rel)
    else:
        plan = _Plan(cfg, max_batch_size)
        target = version_dir / "model.plan"
        if cfg.engine.flavour == "tensorrt_rtx":
            G_LOGGER.warning("export-triton | The plan was built by TensorRT-RTX; Triton's 'tensorrt' backend loads "
                             "plans of standard TensorRT only. Rebuild with --trt tensorrt for Triton.")
        if plan.wrap:
            _build_wrapped_plan(cfg, plan, target)
        else:
            _copy_file(cfg.plan_path, target)
    write_text(model_dir / "config.pbtxt", _to_text(cfg, msg), "Triton config")
    return model_dir


def _copy_file(src: Path, dst: Path) -> None:
    """Copies a model file into the repository safely (:mod:`rnnrt.safe_write`: no link or special file replaced)."""
    with staged([dst], "Triton model file") as (tmp,):
        shutil.copyfile(src, tmp)

def _build_wrapped_plan(cfg: ModelConfig, plan: _Plan, target: Path) -> None:
    from rnnrt.build import BuildOptions, plan_from_onnx

    e = cfg.engine
    model = _wrap_model(cfg, plan)
    batch_axes = {t.name: (0 if t.batch_axis is not None else None) for t in cfg.inputs}
    batch_axes.update({s.input: 0 for s in cfg.state})
    profile = (e.profile.min, e.profile.opt, e.profile.max) if e.profile is not None else None
    options = BuildOptions(precision=e.precision, io_dtype=e.io_dtype, state_dtype=e.state_dtype, batch=profile,
                           trt_module=e.flavour)
    result = plan_from_onnx(model, options, batch_axes=batch_axes, state_inputs=[s.input for s in cfg.state],
                            state_outputs=[s.output for s in cfg.state])
    write_bytes(target, bytes(result.plan), "Triton model file")
