"""The wrapped step graph for Triton's own backends: batch-first inputs and outputs (Transposes, or Reshapes for
folded rows) around the original layout and a ``(N, 1)`` START control expanded to the continuation input; the
plan rebuilt from it for ``--engine plan``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from rnnrt.ir.config import ModelConfig
from rnnrt.ir.manifest import EngineManifest
from rnnrt.serve.triton.layout import _batch_first, _perm_from_first, _perm_to_first, _TritonShapes


def _rename_uses(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_uses(sub, old, new)


def _wrap_model(cfg: ModelConfig, plan: _TritonShapes) -> Any:
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


def _build_wrapped_plan(cfg: ModelConfig, manifest: EngineManifest, plan: _TritonShapes, target: Path,
                        dims: Optional[Mapping[str, Any]]) -> None:
    """Builds the plan of the wrapped graph as the config's own plan was built (its manifest's options)."""
    from rnnrt.build.builder import BuildOptions, plan_from_onnx

    model = _wrap_model(cfg, plan)
    batch_axes = {t.name: (0 if t.batch_axis is not None else None) for t in cfg.inputs}
    batch_axes.update({s.input: 0 for s in cfg.state})
    profile = tuple(manifest.profile) if manifest.profile else None
    options = BuildOptions(precision=manifest.precision, io_dtype=manifest.io_dtype, state_dtype=manifest.state_dtype,
                           batch=profile, dims=dict(dims or {}), trt_module=manifest.flavour)
    result = plan_from_onnx(model, options, batch_axes=batch_axes, state_inputs=[s.input for s in cfg.state],
                            state_outputs=[s.output for s in cfg.state])
    target.write_bytes(bytes(result.plan))
