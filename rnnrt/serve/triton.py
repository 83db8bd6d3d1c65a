"""Export a model config as a Triton Inference Server model repository (``rnnrt export-triton``).

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

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from rnnrt.config import ModelConfig, load_config
from rnnrt.errors import ConfigError, fmt

G_LOGGER = logging.getLogger("rnnrt")

__all__ = ["TRITON_DTYPES", "export_triton", "triton_config_text"]

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
    from onnx import helper, numpy_helper

    outer, inner = fold
    before, after = [int(d) for d in shape[:axis]], [int(d) for d in shape[axis + 1:]]
    p = f"{src}__rnnrt_fold_"
    split = [-1] + before + [outer, inner] + after          # B, ..., outer, inner, ...
    rank = len(split)
    perm = list(range(1, axis + 2)) + [0] + list(range(axis + 2, rank))  # ..., outer, B, inner, ...
    merged = before + [-1] + after
    graph.initializer.extend([numpy_helper.from_array(np.asarray(split, np.int64), p + "split"),
                              numpy_helper.from_array(np.asarray(merged, np.int64), p + "merged")])
    return [
        helper.make_node("Reshape", [src, p + "split"], [p + "a"], name=p + "reshape_a"),
        helper.make_node("Transpose", [p + "a"], [p + "b"], perm=perm, name=p + "transpose"),
        helper.make_node("Reshape", [p + "b", p + "merged"], [dst], name=p + "reshape_b"),
    ]


def _fold_first(graph: Any, src: str, dst: str, shape: list, axis: int, fold: tuple) -> list:
    """Nodes: the graph's ``... x outer*B*inner x ...`` -> batch-first ``B x ... x outer*inner x ...``."""
    from onnx import helper, numpy_helper

    outer, inner = fold
    before, after = [int(d) for d in shape[:axis]], [int(d) for d in shape[axis + 1:]]
    p = f"{dst}__rnnrt_fold_"
    split = before + [outer, -1, inner] + after             # ..., outer, B, inner, ...
    rank = len(split)
    perm = [axis + 1] + list(range(0, axis + 1)) + list(range(axis + 2, rank))  # B, ..., outer, inner, ...
    merged = [-1] + before + [outer * inner] + after
    graph.initializer.extend([numpy_helper.from_array(np.asarray(split, np.int64), p + "split"),
                              numpy_helper.from_array(np.asarray(merged, np.int64), p + "merged")])
    return [
        helper.make_node("Reshape", [src, p + "split"], [p + "a"], name=p + "reshape_a"),
        helper.make_node("Transpose", [p + "a"], [p + "b"], perm=perm, name=p + "transpose"),
        helper.make_node("Reshape", [p + "b", p + "merged"], [dst], name=p + "reshape_b"),
    ]


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


def triton_config_text(cfg: ModelConfig, name: str, engine: str = "onnx", max_batch_size: Optional[int] = None,
                       idle_us: int = 60_000_000, instance_kind: str = "KIND_GPU") -> str:
    """Returns the ``config.pbtxt`` text for a model config (see the module doc).

    Args:
        cfg (ModelConfig): The model config.
        name (str): The Triton model name.
        engine (str): ``"onnx"`` or ``"plan"``. Defaults to ``"onnx"``.
        max_batch_size (int | None): Overrides the profile's max batch. Defaults to None.
        idle_us (int): ``max_sequence_idle_microseconds``. Defaults to 60 s.
        instance_kind (str): ``KIND_GPU`` or ``KIND_CPU``. Defaults to ``KIND_GPU``.
    """
    return _config_text(cfg, _Plan(cfg, max_batch_size), name, engine, idle_us, instance_kind)


def _config_text(cfg: ModelConfig, plan: _Plan, name: str, engine: str, idle_us: int, instance_kind: str) -> str:
    cont = plan.cont_spec

    def tensor(t: Any) -> str:
        dims = plan.dims(t.shape, t.batch_axis, plan.folds.get(t.name))
        return (f'  {{\n    name: "{t.name}"\n    data_type: {TRITON_DTYPES[t.dtype]}\n'
                f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}")

    lines = [
        f'name: "{name}"',
        f'backend: "{"onnxruntime" if engine == "onnx" else "tensorrt"}"',
        f"max_batch_size: {plan.max_batch}",
        "input [\n" + ",\n".join(tensor(t) for t in cfg.inputs if cont is None or t.name != cont.name) + "\n]",
        "output [\n" + ",\n".join(tensor(t) for t in cfg.outputs) + "\n]",
    ]
    seq = ["sequence_batching {", f"  max_sequence_idle_microseconds: {idle_us}", "  direct { }"]
    if cont is not None:
        field, values = _START_FIELDS[cont.dtype]
        seq += [
            "  control_input [",
            "    {",
            f'      name: "{cont.name}"',
            "      control [",
            f"        {{\n          kind: CONTROL_SEQUENCE_START\n          {field}: {values}\n        }}",
            "      ]",
            "    }",
            "  ]",
        ]
    if cfg.state:
        states = []
        for s in cfg.state:
            dims = ", ".join(str(d) for d in plan.dims(s.shape, s.batch_axis))
            dt = TRITON_DTYPES[s.dtype]
            states.append(
                f'    {{\n      input_name: "{s.input}"\n      output_name: "{s.output}"\n      data_type: {dt}\n'
                f"      dims: [ {dims} ]\n      initial_state [\n        {{\n          data_type: {dt}\n"
                f"          dims: [ {dims} ]\n          zero_data: true\n          name: \"zeros\"\n        }}\n      ]\n    }}"
            )
        seq += ["  state [", ",\n".join(states), "  ]"]
    seq.append("}")
    lines.append("\n".join(seq))
    lines.append(f"instance_group [\n  {{\n    count: 1\n    kind: {instance_kind}\n  }}\n]")
    header = f"# Triton model config written by `rnnrt export-triton` from {cfg.model_path.name}.\n"
    return header + "\n".join(lines) + "\n"


def export_triton(
    config: Union[str, os.PathLike, ModelConfig],
    repo: Union[str, os.PathLike],
    *,
    engine: str = "plan",
    name: Optional[str] = None,
    version: int = 1,
    max_batch_size: Optional[int] = None,
    idle_us: int = 60_000_000,
    instance_kind: str = "KIND_GPU",
) -> Path:
    """Writes a Triton model repository entry for a model config.

    Args:
        config (str | os.PathLike | ModelConfig): The model YAML config (or a loaded one).
        repo (str | os.PathLike): The model repository directory; created if missing.
        engine (str): ``"plan"`` (the config's TensorRT plan, rebuilt if the layout needs wrapping) or
            ``"onnx"`` (the ONNX step graph for Triton's ONNX Runtime backend). Defaults to ``"plan"``.
        name (str | None): Triton model name. Defaults to the config's directory name.
        version (int): Model version directory. Defaults to 1.
        max_batch_size (int | None): Defaults to the plan's profile max, or 64 for a dynamic-batch
            model without a profile.
        idle_us (int): ``max_sequence_idle_microseconds``. Defaults to 60 s.
        instance_kind (str): ``KIND_GPU`` or ``KIND_CPU``. Defaults to ``KIND_GPU``.

    Returns:
        Path: ``repo/<name>``.

    Raises:
        ConfigError: ``engine='plan'`` without a built plan, an unknown engine, or a continuation
            dtype Triton's START control cannot drive.
        BuildError: The wrapped graph's plan could not be built.
    """
    cfg = config if isinstance(config, ModelConfig) else load_config(config)
    from rnnrt.build.manifest import with_built_engine  # the plan's manifest says what was built

    cfg = with_built_engine(cfg, None if isinstance(config, ModelConfig) else config)
    if engine not in ("plan", "onnx"):
        raise ConfigError(fmt("export-triton", f"Unknown engine {engine!r}", "Use 'plan' or 'onnx'."))
    if instance_kind not in ("KIND_GPU", "KIND_CPU"):
        raise ConfigError(fmt("export-triton", f"Unknown instance kind {instance_kind!r}", "Use KIND_GPU or KIND_CPU."))
    if engine == "plan" and (cfg.plan_path is None or not cfg.plan_path.is_file()):
        raise ConfigError(
            fmt(f"Config {str(cfg.model_path.with_suffix('.yaml'))!r}", "Records no built plan" if cfg.engine is None
                else f"Its plan {str(cfg.plan_path)!r} does not exist", "Run `rnnrt build` first, or pass --engine onnx.")
        )
    plan = _Plan(cfg, max_batch_size)
    name = name or cfg.base_dir.name
    model_dir = Path(repo) / name
    version_dir = model_dir / str(int(version))
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(fmt(f"Repository {str(repo)!r}", f"Cannot be created: {err.strerror}")) from err

    import onnx

    if engine == "onnx":
        target = version_dir / "model.onnx"
        if plan.wrap:
            onnx.save(_wrap_model(cfg, plan), str(target))
        else:
            shutil.copyfile(cfg.model_path, target)
            from rnnrt.ir.weights import external_data_files

            for rel in external_data_files(cfg.model_path):  # big models: model.onnx.data beside it
                (version_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cfg.model_path.parent / rel, version_dir / rel)
    else:
        target = version_dir / "model.plan"
        if cfg.engine.flavour == "tensorrt_rtx":
            G_LOGGER.warning("export-triton | The plan was built by TensorRT-RTX; Triton's 'tensorrt' backend loads "
                             "plans of standard TensorRT only. Rebuild with --trt tensorrt for Triton.")
        if plan.wrap:
            _build_wrapped_plan(cfg, plan, target)
        else:
            shutil.copyfile(cfg.plan_path, target)
    (model_dir / "config.pbtxt").write_text(_config_text(cfg, plan, name, engine, idle_us, instance_kind))
    return model_dir


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
    target.write_bytes(bytes(result.plan))
