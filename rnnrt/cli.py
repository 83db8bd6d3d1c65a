"""The ``rnnrt`` command line: convert | build | run | bench | inspect | schema | ...

Each subcommand lives in one ``_add_<name>(subparsers)`` function that registers its parser and sets
``func``; heavy modules are imported inside the handlers so ``rnnrt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rnnrt.errors import RnnrtError

G_LOGGER = logging.getLogger("rnnrt")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnrt", description="rnnrt: stateful recurrent inference for TensorRT (and ONNX Runtime on CPU)."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="More logging (-vv: debug).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="Caffe prototxt + caffemodel (or ONNX) -> ONNX step graph + YAML config.",
        description="Converts a model into an ONNX step graph whose recurrent state is explicit inputs/outputs, "
        "and writes DIR/model.onnx and DIR/model.yaml.",
    )
    p.add_argument("model", nargs="?", help="deploy.prototxt (Caffe) or model.onnx.")
    p.add_argument("weights", nargs="?", help="weights.caffemodel (Caffe). Without it, weights are random (seeded).")
    p.add_argument("--config", metavar="YAML", default=None,
                   help="Import options from YAML (see `rnnrt schema --kind import`); every flag overrides one field.")
    p.add_argument("-o", "--output", default=None, help="Output directory (default: out).")
    p.add_argument("--name", default=None, help="File stem of the written files (default: model).")
    p.add_argument("--batch", choices=["fixed", "dynamic"], default=None,
                   help="'dynamic' makes the batch (stream) axis symbolic; build then takes --batch MIN:OPT:MAX.")
    p.add_argument("--seed", type=int, default=None, help="Seed of random weights when no weights are given (default: 0).")
    p.add_argument("--add-reset", action="store_true", default=None,
                   help="ONNX: add a continuation input 'cont' [1, N] (0 zeroes a stream's state before the call).")
    p.add_argument("--forward-only", action="store_true", default=None,
                   help="ONNX: keep only the forward direction of bidirectional layers instead of failing.")
    p.add_argument("--override", metavar="YAML", default=None,
                   help="ONNX: YAML that fixes detected state pairs, batch axes or continuation (see docs/onnx.md).")
    p.add_argument("--phase", choices=["TEST", "TRAIN"], default=None, help="Caffe phase for include/exclude rules.")
    p.add_argument("--plugins", action="append", default=[], metavar="DIR",
                   help="Caffe layer plugins: a directory of plugin modules (*.py) or one .py file; repeatable. "
                   "Installed entry points of group 'rnnrt.caffe_layers' load too. See plugins/README.md.")
    p.add_argument("--list-layers", action="store_true",
                   help="List the Caffe layer types rnnrt converts (built-in and plugins) and exit.")
    p.set_defaults(func=_run_convert)


def _import_options(args):
    """The convert options: the --config YAML (if any) overridden flag by flag."""
    from rnnrt.config import ImportConfig, load_import_config

    fields = ("model", "weights", "output", "name", "batch", "seed", "phase", "plugins", "add_reset",
              "forward_only", "override")
    flags = {f: getattr(args, f) for f in fields}
    if args.config:
        return load_import_config(args.config, flags)
    return ImportConfig.model_validate({k: v for k, v in flags.items() if v is not None})


def _run_convert(args) -> int:
    from rnnrt.config import save_step_graph

    opts = _import_options(args)
    if args.list_layers:
        return _list_layers(opts)
    if opts.model is None:
        raise RnnrtError("convert | No model given.\nNote: rnnrt convert DEPLOY.prototxt [WEIGHTS.caffemodel] -o DIR")
    if opts.model.endswith(".onnx"):
        from rnnrt.importers.onnx.importer import convert_onnx  # issue: ONNX recurrent models

        step = convert_onnx(opts.model, **_onnx_convert_options(opts))
    else:
        from rnnrt.importers.caffe.convert import convert_caffe
        from rnnrt.importers.caffe.plugins import load_plugins

        plugins = load_plugins(opts.plugins)
        step = convert_caffe(
            opts.model,
            opts.weights,
            batch="dynamic" if opts.batch == "dynamic" else None,
            seed=opts.seed,
            phase=opts.phase,
            schema=plugins.schema,
            progress=sys.stderr.isatty(),
        )
        if plugins.plugins:
            step.source["plugins"] = plugins.describe()
    path = save_step_graph(step, opts.output, opts.name)
    print(f"wrote {path.with_suffix('.onnx')} and {path}")
    for s in step.states:
        print(f"  state {s.input} -> {s.output} {_dims(s.shape)}")
    if step.continuation is not None:
        print(f"  continuation input {step.continuation.input!r} (filled by the Session when omitted)")
    for note in step.notes:
        print(f"  note: {note}")
    return 0


def _list_layers(args) -> int:
    from rnnrt.importers.caffe.plugins import layer_table, load_plugins

    load_plugins(args.plugins)
    rows = layer_table("caffe")
    print(_table(["layer type", "origin", "source"], [list(r) for r in rows]))
    return 0


def _dims(shape) -> str:
    """A shape as the YAML writes it: ``[8, batch, 5]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _onnx_convert_options(opts) -> dict:
    return {"add_reset": opts.add_reset, "forward_only": opts.forward_only, "override": opts.override}


# Subcommand registrars, in the order `rnnrt --help` lists them. Each module that owns a subcommand
# appends its registrar here (see the _add_* functions below).
_SUBCOMMANDS: list = [_add_convert]


# --- run / inspect / schema (owner: config + Session) -------------------------------------------
def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="Replay a recorded stream through a Session.",
        description="Replays FEED.npz (keys call{k}/{input}; call k is one step, state carried) and writes "
        "call{k}/{output} for every model output to OUT.npz.",
    )
    p.add_argument("config", help="The model YAML config.")
    p.add_argument("--feed", required=True, help="Input .npz with keys call{k}/{input}.")
    p.add_argument("--out", required=True, help="Output .npz to write (keys call{k}/{output}).")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"], help="Engine backend.")
    p.add_argument("--batch-size", type=int, default=None, help="Slots, for a dynamic batch (default: from the feed).")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import re

    import numpy as np

    from rnnrt.config import load_config
    from rnnrt.errors import BindingError, fmt
    from rnnrt.runtime.session import load

    cfg = load_config(args.config)
    try:
        with np.load(args.feed) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise BindingError(fmt(f"Feed {args.feed!r}", f"Cannot be read as .npz: {err}")) from err
    inputs = {t.name: t for t in cfg.inputs}
    outputs = {t.name for t in cfg.outputs}
    calls: dict[int, dict[str, np.ndarray]] = {}
    for key, value in data.items():
        m = re.fullmatch(r"call(\d+)/(.+)", key)
        if m is None:
            raise BindingError(fmt(f"Feed key {key!r}", "Is not of the form call{k}/{input}"))
        k, name = int(m.group(1)), m.group(2)
        if name in inputs:
            calls.setdefault(k, {})[name] = value
        elif name not in outputs and not name.startswith("_internal/"):
            # Recorded outputs and extra blobs (as in the golden io.npz files) are skipped.
            raise BindingError(fmt(f"Feed key {key!r}", f"Names {name!r}, which is not a model input",
                                   f"Inputs: {sorted(inputs)}."))
    if sorted(calls) != list(range(len(calls))):
        raise BindingError(fmt(f"Feed {args.feed!r}", f"Has calls {sorted(calls)}", "Calls are numbered 0, 1, 2 ... without gaps."))
    batch_size = args.batch_size
    if batch_size is None and calls:
        for t in cfg.inputs:
            if t.batch_axis is not None and isinstance(t.shape[t.batch_axis], str) and t.name in calls[0]:
                batch_size = int(calls[0][t.name].shape[t.batch_axis])
                break
    kw = {"batch_size": batch_size} if batch_size is not None else {}
    if args.threads is not None:
        kw["threads"] = args.threads
    out: dict[str, np.ndarray] = {}
    with load(cfg, backend=args.backend, **kw) as session:
        for k in range(len(calls)):
            for name, value in session.step(calls[k]).items():
                out[f"call{k}/{name}"] = value
    np.savez(args.out, **out)
    print(f"{len(calls)} calls, outputs {sorted(outputs)} -> {args.out}")
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="Show a config's bindings, state pairs and op counts, or a .plan's engine.")
    p.add_argument("path", help="A model YAML config, or a TensorRT plan (.plan/.engine).")
    p.add_argument("--trt-module", choices=["auto", "tensorrt", "tensorrt_rtx"], default=None,
                   help="TensorRT module that deserializes a plan (default: the flavour that built it).")
    p.set_defaults(func=_inspect)


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _inspect(args: argparse.Namespace) -> int:
    from collections import Counter
    from pathlib import Path

    from rnnrt.errors import ConfigError, fmt

    if Path(args.path).suffix.lower() in (".plan", ".engine"):
        return _inspect_plan(args)
    if Path(args.path).suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(fmt(f"Path {args.path!r}", "Is not a .yaml config", "`rnnrt inspect` reads model configs (.yaml)."))
    import onnx

    from rnnrt.config import load_config

    cfg = load_config(args.path)
    model = onnx.load(str(cfg.model_path), load_external_data=False)
    ops: Counter = Counter()

    def count(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            ops[node.op_type] += 1
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    count(g)

    count(model.graph)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default="?")
    print(f"Model: {cfg.model_path} (opset {opset}, {sum(ops.values())} nodes)")
    if cfg.source:
        print("Source: " + ", ".join(f"{k}={v}" for k, v in cfg.source.items()))
    print()
    rows = [["input", t.name, t.dtype, _dims(t.shape), t.batch_axis] for t in cfg.inputs]
    rows += [["output", t.name, t.dtype, _dims(t.shape), t.batch_axis] for t in cfg.outputs]
    print(_table(["role", "name", "dtype", "shape", "batch_axis"], rows))
    print()
    if cfg.state:
        rows = [[s.input, s.output, s.dtype, _dims(s.shape), s.batch_axis, s.initial] for s in cfg.state]
        print(_table(["state input", "state output", "dtype", "shape", "batch_axis", "initial"], rows))
    else:
        print("State: none (stateless model)")
    c = cfg.continuation
    print()
    print(f"Continuation: {c.input} (batch_axis {c.batch_axis}, time_axis {c.time_axis}, fill {c.fill})" if c else "Continuation: none")
    if cfg.engine is not None:
        e = cfg.engine
        print(f"Engine: {e.plan} ({e.flavour} {e.version}, {e.precision}"
              + (f", batch {e.profile.min}/{e.profile.opt}/{e.profile.max})" if e.profile else ")"))
    print()
    print(_table(["op", "count"], sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
    return 0


def _add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="Print the JSON schema of the model YAML config (or of import options).")
    p.add_argument("--kind", choices=["model", "import"], default="model",
                   help="model: the model config written by convert; import: the options of `convert --config`.")
    p.set_defaults(func=_schema)


def _schema(args: argparse.Namespace) -> int:
    import json

    from rnnrt.config import json_schema

    print(json.dumps(json_schema(getattr(args, "kind", "model")), indent=2))
    return 0


_SUBCOMMANDS.extend([_add_run, _add_inspect, _add_schema])


# --- build, inspect of .plan files (owner: build) -------------------------------------------------
def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="Build a TensorRT engine (plan) from a model YAML config and record it in the config.",
        description="Parses the config's ONNX step graph with TensorRT (tensorrt if importable, else tensorrt_rtx), "
        "builds a plan with one optimization profile and writes the engine section of the config.",
    )
    p.add_argument("config", help="The model YAML config (DIR/model.yaml).")
    p.add_argument("-o", "--output", default=None, help="Plan file to write (default: the config's path with .plan).")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="Compute precision; fp16/bf16 rewrite the graph's compute and weights (default: fp32).")
    p.add_argument("--io-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="dtype of the user inputs/outputs (default: float32).")
    p.add_argument("--state-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="dtype of the recurrent state; float32 also keeps the state path in fp32 (default).")
    p.add_argument("--batch", default=None, metavar="MIN:OPT:MAX",
                   help="Batch (stream count) range of a dynamic-batch graph (default 1:1:64).")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=MIN:OPT:MAX",
                   help="Range of another dynamic dim, by name (repeatable).")
    p.add_argument("--trt-module", choices=["auto", "tensorrt", "tensorrt_rtx"], default="auto",
                   help="TensorRT module (default: tensorrt if importable, else tensorrt_rtx).")
    p.add_argument("--target", default=None, metavar="SM,...",
                   help="TensorRT-RTX compute capabilities, e.g. sm80,sm86,sm89,sm120 (default: portable).")
    p.add_argument("--runtime-cache", metavar="PATH", default=None,
                   help="TensorRT-RTX runtime cache file recorded in the config's session section; the engine "
                   "reads it at load and writes it at release (kernels compiled for the GPU it runs on).")
    p.add_argument("--timing-cache", default=None, metavar="PATH", help="Timing cache file (read, then updated).")
    p.add_argument("--workspace", type=int, default=None, metavar="MIB", help="Workspace memory-pool limit in MiB.")
    p.add_argument("--opt-level", type=int, default=None, choices=range(6), help="Builder optimization level 0-5.")
    p.add_argument("--layers", "--verbose", dest="layers", action="store_true",
                   help="Print the parsed network's layers and the engine layers the builder reports.")
    p.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from rnnrt.build import BuildOptions, parse_range, plan_from_config
    from rnnrt.errors import ConfigError, fmt

    dims = {}
    for item in args.dim:
        name, sep, rng = item.partition("=")
        if not sep or not name:
            raise ConfigError(fmt(f"--dim {item!r}", "Is not NAME=MIN:OPT:MAX"))
        dims[name] = parse_range(rng, f"--dim {name}")
    options = BuildOptions(
        precision=args.precision,
        io_dtype=args.io_dtype,
        state_dtype=args.state_dtype,
        batch=parse_range(args.batch) if args.batch else None,
        dims=dims,
        trt_module=args.trt_module,
        targets=tuple(t for t in (args.target or "").split(",") if t.strip()),
        timing_cache=args.timing_cache,
        workspace_mib=args.workspace,
        optimization_level=args.opt_level,
        progress=True,
    )
    r = plan_from_config(args.config, args.output, options)
    if args.runtime_cache:
        import os

        from rnnrt.config import load_config, save_config

        cfg = load_config(r.config_path, validate=False)
        rel = os.path.relpath(os.path.abspath(args.runtime_cache), cfg.base_dir)
        save_config(cfg.with_session(runtime_cache=rel), r.config_path)
    prof = f", batch {r.profile[0]}:{r.profile[1]}:{r.profile[2]}" if r.profile else ""
    print(f"wrote {r.plan_path} ({len(r.plan) / 2**20:.1f} MiB; {r.flavour} {r.version}, {r.precision}{prof}) "
          f"in {r.parse_seconds + r.build_seconds:.2f} s; updated {r.config_path}")
    for b in r.bindings:
        print(f"  {b.describe()}")
    if args.layers:
        print(f"network layers ({len(r.layers)}):")
        for layer in r.layers:
            print(f"  {layer.describe()}")
        print(f"engine layers ({len(r.engine_layers)}):")
        for line in r.engine_layers:
            print(f"  {line}")
    return 0


def _inspect_plan(args: argparse.Namespace) -> int:
    from rnnrt.build import inspect_plan
    from rnnrt.errors import BuildError

    report = inspect_plan(args.path, None if args.trt_module in (None, "auto") else args.trt_module)
    print(report.text())
    if report.error is not None:
        raise BuildError(f"Plan {args.path!r} | Could not be deserialized: {report.error}\n"
                         "Note: Executing or inspecting an engine needs an NVIDIA GPU that its TensorRT flavour "
                         "supports; what is known from the build record and the config is printed above.")
    return 0


_SUBCOMMANDS.insert(_SUBCOMMANDS.index(_add_convert) + 1, _add_build)


# --- export-triton (owner: rnnrt/serve/triton.py) ------------------------------------------------------
def _add_export_triton(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-triton",
        help="Write a Triton model repository (sequence batching, implicit state) for a model config.",
        description="Writes REPO/NAME/config.pbtxt (sequence_batching direct, START -> continuation input, "
        "implicit state pairs with zero initial state) and REPO/NAME/1/model.plan or model.onnx.",
    )
    p.add_argument("config", help="The model YAML config (DIR/model.yaml).")
    p.add_argument("-o", "--output", required=True, help="Triton model repository directory.")
    p.add_argument("--engine", choices=["plan", "onnx"], default="plan",
                   help="plan: the built TensorRT plan (backend tensorrt); onnx: the step graph (backend onnxruntime).")
    p.add_argument("--name", default=None, help="Triton model name (default: the config's directory name).")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="Default: the plan's profile max, or 64 for a dynamic batch without a profile.")
    p.add_argument("--idle-us", type=int, default=60_000_000, help="max_sequence_idle_microseconds (default: 60 s).")
    p.add_argument("--instance-kind", choices=["KIND_GPU", "KIND_CPU"], default="KIND_GPU")
    p.set_defaults(func=_export_triton)


def _export_triton(args: argparse.Namespace) -> int:
    from rnnrt.serve.triton import export_triton

    model_dir = export_triton(args.config, args.output, engine=args.engine, name=args.name,
                              max_batch_size=args.max_batch_size, idle_us=args.idle_us,
                              instance_kind=args.instance_kind)
    print(f"wrote {model_dir / 'config.pbtxt'} and {model_dir / '1'}")
    return 0


_SUBCOMMANDS.append(_add_export_triton)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="Time Session.step on a model config with random frames (host time per step).",
        description="Streams random frames through a Session and reports per-step host latency "
        "(median and percentiles over several rounds). The continuation input is left to the Session.",
    )
    p.add_argument("config", help="The model YAML config.")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    p.add_argument("--batch", type=int, default=None, help="Batch size (slots); required for a dynamic batch.")
    p.add_argument("--steps", type=int, default=500, help="Timed steps per round (default: 500).")
    p.add_argument("--warmup", type=int, default=50, help="Untimed steps first (default: 50).")
    p.add_argument("--rounds", type=int, default=3, help="Rounds; the median of round medians is reported.")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    import rnnrt

    kw = {"batch_size": args.batch} if args.batch else {}
    if args.threads:
        kw["threads"] = args.threads
    with rnnrt.load(args.config, backend=args.backend, **kw) as session:
        cfg = session.config
        cont = cfg.continuation.input if cfg.continuation else None
        rng = np.random.default_rng(0)
        frame = {}
        for t in cfg.inputs:
            if t.name == cont:
                continue
            shape = [session.batch_size if isinstance(d, str) else d for d in t.shape]
            frame[t.name] = rng.uniform(-1, 1, shape).astype(t.dtype)
        for _ in range(args.warmup):
            session.step(frame)
        medians, all_times = [], []
        for _ in range(args.rounds):
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                session.step(frame)
                times.append(time.perf_counter() - t0)
            medians.append(float(np.median(times)))
            all_times += times
        us = np.array(all_times) * 1e6
        print(f"{session!r}")
        print(f"steps {args.rounds} x {args.steps}, batch {session.batch_size}: "
              f"median {np.median(medians) * 1e6:.1f} us/step (rounds {', '.join(f'{m * 1e6:.1f}' for m in medians)}), "
              f"p10 {np.percentile(us, 10):.1f}, p90 {np.percentile(us, 90):.1f}, p99 {np.percentile(us, 99):.1f} us")
    return 0


_SUBCOMMANDS.insert(_SUBCOMMANDS.index(_add_run) + 1, _add_bench)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rnnrt`` console script; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="[%(levelname)s] %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except RnnrtError as err:
        print(f"rnnrt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
