"""``rnnrt inspect``: a model config's bindings, state pairs, engine and op counts, or a plan's engine."""

from __future__ import annotations

import argparse

from rnnrt.cli.args import Subcommand, add_json, add_trt_module
from rnnrt.cli.output import binding_json, check_json_target, dims_text, report, table
from rnnrt.errors import ConfigError, fmt

SCHEMA = "rnnrt.inspect/1"
"""``schema`` of ``rnnrt inspect --json``."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="A model YAML config, or a TensorRT plan (.plan/.engine).")
    add_trt_module(p, "the first installed runtime the plan's manifest lists", runtimes=True)
    add_json(p, SCHEMA)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rnnrt.paths import check_input_file

    check_input_file(args.path, "Path")
    check_json_target(args.json)
    suffix = Path(args.path).suffix.lower()
    if suffix in (".plan", ".engine"):
        return _plan(args)
    if suffix not in (".yaml", ".yml", ".onnx"):  # load_config names an .onnx for what it is
        raise ConfigError(fmt(f"Path {args.path!r}", "Is not a .yaml config (nor a .plan)",
                              "`rnnrt inspect` reads model configs (.yaml) and TensorRT plans (.plan/.engine)."))
    return _config(args)


def _op_counts(model) -> dict[str, int]:
    """ONNX op types and how often each occurs, subgraphs included; most frequent first."""
    from collections import Counter

    ops: Counter = Counter()

    def count(graph) -> None:
        for node in graph.node:
            ops[node.op_type] += 1
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    count(g)

    count(model.graph)
    return dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def _config(args: argparse.Namespace) -> int:
    import onnx

    from rnnrt.ir.config import load_config
    from rnnrt.ir.manifest import find_engine

    cfg = load_config(args.path)
    model = onnx.load(str(cfg.model_path), load_external_data=False)
    ops = _op_counts(model)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    manifest = find_engine(cfg, config_path=args.path)  # the plan built for the config, if any
    lines = [f"Model: {cfg.model_path} (opset {opset if opset is not None else '?'}, {sum(ops.values())} nodes)"]
    if cfg.source:
        lines.append("Source: " + ", ".join(f"{k}={v}" for k, v in cfg.source.items()))
    lines.append("")
    rows = [["input", t.name, t.dtype, dims_text(t.shape), t.batch_axis] for t in cfg.inputs]
    rows += [["output", t.name, t.dtype, dims_text(t.shape), t.batch_axis] for t in cfg.outputs]
    lines += [table(["role", "name", "dtype", "shape", "batch_axis"], rows), ""]
    if cfg.state:
        rows = [[s.input, s.output, s.dtype, dims_text(s.shape), s.batch_axis, s.initial] for s in cfg.state]
        lines.append(table(["state input", "state output", "dtype", "shape", "batch_axis", "initial"], rows))
    else:
        lines.append("State: none (stateless model)")
    c = cfg.continuation
    lines += ["", f"Continuation: {c.input} (batch_axis {c.batch_axis}, time_axis {c.time_axis}, fill {c.fill})"
              if c else "Continuation: none"]
    engine = None
    if manifest is not None:
        p = manifest.profile
        engine = {"plan": str(manifest.plan_path), "flavour": manifest.flavour, "version": manifest.version,
                  "precision": manifest.precision, "io_dtype": manifest.io_dtype, "state_dtype": manifest.state_dtype,
                  "profile": {"min": p[0], "opt": p[1], "max": p[2]} if p else None}
        lines.append(f"Engine: {engine['plan']} ({manifest.flavour} {manifest.version}, {manifest.precision}"
                     + (f", batch {p[0]}/{p[1]}/{p[2]})" if p else ")"))
    lines += ["", table(["op", "count"], [[op, n] for op, n in ops.items()])]
    data = {
        "schema": SCHEMA,
        "kind": "config",
        "path": str(args.path),
        "model": str(cfg.model_path),
        "opset": opset,
        "nodes": sum(ops.values()),
        "source": dict(cfg.source or {}),
        "inputs": [t.model_dump(mode="json") for t in cfg.inputs],
        "outputs": [t.model_dump(mode="json") for t in cfg.outputs],
        "state": [st.model_dump(mode="json") for st in cfg.state],
        "continuation": c.model_dump(mode="json") if c else None,
        "engine": engine,
        "ops": ops,
    }
    report("\n".join(lines), data, args.json)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from rnnrt.build.inspect import inspect_plan
    from rnnrt.errors import EngineError

    found = inspect_plan(args.path, None if args.trt_module in (None, "auto") else args.trt_module)
    data = {
        "schema": SCHEMA,
        "kind": "plan",
        "path": str(found.path),
        "bytes": found.size,
        "flavour": found.flavour,
        "bindings": [binding_json(b) for b in found.bindings],
        "layers": list(found.layers),
        "error": found.error,
        "manifest": found.build_record,
        "manifest_error": found.manifest_error,
    }
    report(found.text(), data, args.json)
    if found.error is not None:
        raise EngineError(fmt(f"Plan {args.path!r}", f"Could not be deserialized: {found.error}",
                             "Executing or inspecting an engine needs an NVIDIA GPU that its TensorRT flavour "
                             "supports; what its manifest says is printed above."))
    return 0


COMMAND = Subcommand(
    "inspect",
    help="Show a config's bindings, state pairs and op counts, or a .plan's engine.",
    description="For a model YAML config: its bindings, state pairs, continuation, engine record and the "
    "ONNX op counts. For a TensorRT plan: its build record and, where the GPU allows, its deserialized "
    "bindings.",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt inspect out/model.yaml\nrnnrt inspect out/model.plan\nrnnrt inspect out/model.yaml --json -",
)
