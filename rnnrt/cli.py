"""The ``rnnrt`` command line.

Every subcommand is one row of :data:`SUBCOMMANDS` (in the order ``rnnrt --help`` lists them): its name, help
line, description, ``--help`` examples, a function that adds its arguments and a function that runs it on the
parsed arguments and returns the exit code. Argument groups that several subcommands share (the Session options,
``-o/--output``) are defined once. Heavy modules are imported inside the handlers so ``rnnrt --help`` stays fast.

A flag means one thing everywhere:

- ``-o/--output``: where the subcommand writes (convert: a directory; build: the plan; run: the .npz).
- ``--name``: the name of what is written (convert: file stem; export-triton: Triton model name).
- ``--backend``, ``--threads``, ``--streams``: the Session (run, bench; ``--streams`` also verify;
  ``--backend`` also the Session inside a served model: export-triton --engine python, serve); ``--streams`` is the number of slots,
  the batch size of a dynamic-batch graph.
- ``--batch fixed|dynamic`` (convert): whether the graph's batch (stream) axis is symbolic;
  ``--batch-profile MIN:OPT:MAX`` (build): the range of stream counts a plan accepts.
- ``-v``, ``-q/--quiet`` (before or after the subcommand): logging.

Old spellings keep working and log one deprecation warning: ``build --batch`` (``--batch-profile``),
``build --verbose`` (``--layers``), ``run --batch-size`` and ``bench --batch`` (``--streams``), ``run --out``
(``--output``).

Exit codes: 0 success; 2 a user error (an :class:`~rnnrt.errors.RnnrtError`, a bad flag, a file that cannot be
read or written), printed as ``rnnrt <command>: error: <message>`` without a traceback; 130 interrupted. A bug
(:class:`~rnnrt.errors.RnnrtInternalError` or any other exception) keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from rnnrt.errors import BindingError, ConfigError, RnnrtError, fmt

if TYPE_CHECKING:
    import numpy as np

G_LOGGER = logging.getLogger("rnnrt")

# TensorRT dimensions are int64, but a batch profile beyond int32 cannot be allocated or built anywhere.
_MAX_DIM = 2**31 - 1
# A feed (.npz) is decompressed into memory; its arrays may declare at most this much (`run --max-feed-mib`).
DEFAULT_MAX_FEED_MIB = 1024


@dataclass(frozen=True)
class Subcommand:
    """One ``rnnrt`` subcommand: how it is listed, which arguments it takes and what runs it."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    examples: str = ""


# --- argument types and shared groups ----------------------------------------------------------------


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (argparse turns the ArgumentTypeError into a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is more than {high}")
        return value

    parse.__name__ = "integer"
    return parse


_POSITIVE = _int_at_least(1)
_NON_NEGATIVE = _int_at_least(0)


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's dest and records one deprecation warning.

    Hidden from ``--help``; :func:`main` logs the warning once logging is configured.
    """

    def __init__(self, option_strings, dest, replacement: str, nargs=None, const=None, **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, const=const, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        used = list(getattr(namespace, "_deprecated", None) or [])
        if (option_string, self.replacement) not in used:
            used.append((option_string, self.replacement))
        namespace._deprecated = used


def _alias(p: argparse.ArgumentParser, old: str, dest: str, replacement: str, **kwargs) -> None:
    p.add_argument(old, dest=dest, action=_DeprecatedAlias, replacement=replacement, default=argparse.SUPPRESS, **kwargs)


def _add_session_group(p: argparse.ArgumentParser) -> None:
    """Options of the Session a subcommand runs (run, bench)."""
    g = p.add_argument_group("session")
    g.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"],
                   help="Engine backend (default: auto = TensorRT when a plan is built and a GPU is usable, "
                   "else ONNX Runtime).")
    g.add_argument("--threads", type=_POSITIVE, default=None, metavar="N", help="ONNX Runtime intra-op threads.")
    g.add_argument("--streams", type=_POSITIVE, default=None, metavar="N",
                   help="Slots of the Session: the batch size of a dynamic-batch model (run: default from the feed; "
                   "bench: required for a dynamic batch).")


def _add_logging_group(p: argparse.ArgumentParser) -> None:
    """``-v``/``-q`` after the subcommand too (``rnnrt convert x -v`` == ``rnnrt -v convert x``)."""
    g = p.add_argument_group("logging")
    g.add_argument("-v", dest="verbose", action="count", default=argparse.SUPPRESS, help="Debug logging.")
    g.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=argparse.SUPPRESS,
                   help="Only warnings and errors.")


def _add_trt_module(p: argparse.ArgumentParser, default: str, runtimes: bool = False) -> None:
    choices = ["auto", "tensorrt", "tensorrt_rtx"] + (["tensorrt_lean", "tensorrt_dispatch"] if runtimes else [])
    p.add_argument("--trt-module", choices=choices, default="auto", help=f"TensorRT module (default: auto = {default}).")


def _add_output(p: argparse.ArgumentParser, help: str, *, required: bool = False, metavar: str = "PATH") -> None:
    p.add_argument("-o", "--output", default=None, required=required, metavar=metavar, help=help)


# --- convert -------------------------------------------------------------------------------------------


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="deploy.prototxt (Caffe) or model.onnx.")
    p.add_argument("weights", nargs="?", help="weights.caffemodel (Caffe). Without it, weights are random (seeded).")
    p.add_argument("--config", metavar="YAML", default=None,
                   help="Import options from YAML (see `rnnrt schema --kind import`); every flag overrides one field.")
    _add_output(p, "Output directory (default: out).", metavar="DIR")
    p.add_argument("--name", default=None, help="File stem of the written files, a plain name (default: model).")
    p.add_argument("--batch", choices=["fixed", "dynamic"], default=None,
                   help="'dynamic' makes the batch (stream) axis symbolic; `rnnrt build --batch-profile` then sets "
                   "its range (default: fixed).")
    caffe = p.add_argument_group("Caffe")
    caffe.add_argument("--seed", type=_NON_NEGATIVE, default=None,
                       help="Seed of random weights when no weights are given (default: 0).")
    caffe.add_argument("--phase", choices=["TEST", "TRAIN"], default=None, help="Phase for include/exclude rules.")
    caffe.add_argument("--plugins", action="append", default=[], metavar="DIR",
                       help="Layer plugins: a directory of plugin modules (*.py) or one .py file; repeatable. "
                       "entry:NAME loads the installed entry point NAME of group 'rnnrt.caffe_layers' (entry:* all); "
                       "nothing else is imported. Plugins run arbitrary code: trusted ones only. See plugins/README.md.")
    caffe.add_argument("--list-layers", action="store_true",
                       help="List the layer types rnnrt converts (built-in and plugins) and exit.")
    onnx = p.add_argument_group("ONNX")
    onnx.add_argument("--add-reset", action="store_true", default=None,
                      help="Add a continuation input 'cont' [1, N] (0 zeroes a stream's state before the call).")
    onnx.add_argument("--forward-only", action="store_true", default=None,
                      help="Keep only the forward direction of bidirectional layers instead of failing.")
    onnx.add_argument("--override", metavar="YAML", default=None,
                      help="YAML that fixes detected state pairs, batch axes or continuation (see docs/onnx.md).")
    onnx.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="set_values",
                      help="Bind input NAME to a constant (e.g. --set sr=16000) and fold what becomes constant "
                      "(Ifs on it are inlined); repeatable.")
    onnx.add_argument("--context", action="append", default=[], metavar="INPUT:K",
                      help="Carry the last K samples of INPUT (last axis) to the next call as state (e.g. input:64); "
                      "repeatable.")
    onnx.add_argument("--time-steps", default=None, metavar="N|dynamic",
                      help="Re-shape the time axis of a fixed-T export to N steps per call, or make it dynamic.")
    onnx.add_argument("--strict", action="store_true", default=None,
                      help="Fail (instead of warning) when an op after the recurrence mixes time steps.")
    onnx.add_argument("--dim", action="append", default=[], metavar="NAME=N", dest="dims",
                      help="Pin the dynamic dim NAME of the inputs to N (e.g. --dim chunk=512): recorded in the "
                      "config and checked at every step; repeatable.")
    check = p.add_argument_group("Equivalence check (docs/onnx.md)")
    check.add_argument("--no-check", action="store_true", default=None,
                       help="Skip the check that the step graph streams like the original (streaming, batch, reset).")
    check.add_argument("--check-steps", type=_int_at_least(2), default=None, metavar="N",
                       help="Calls per stream of the check: two sequences with a reset between them (default: 8, fewer "
                       "when one call of the model takes long).")
    check.add_argument("--check-reference", default=None, metavar="NPZ",
                       help="A recorded stream (call{k}/{input} and call{k}/{output}, e.g. from the package's own "
                       "wrapper) that the step graph must reproduce.")


def _import_options(args: argparse.Namespace):
    """The convert options: the --config YAML (if any) overridden flag by flag."""
    from rnnrt.config import ImportConfig, load_import_config

    import pydantic

    if args.name is not None:
        _check_name(args.name, "--name")
    _check_input_file(args.config, "--config")
    fields = ("model", "weights", "output", "name", "batch", "seed", "phase", "plugins", "add_reset",
              "forward_only", "override")
    flags = {f: getattr(args, f) for f in fields}
    flags["set"] = _set_values(args.set_values, "--set") or None
    flags["context"] = list(args.context) or None
    flags["time_steps"] = _time_steps(args.time_steps)
    flags["strict"] = args.strict
    flags["dims"] = _dim_sizes(args.dims, "chunk=512") or None
    flags["no_check"] = args.no_check
    flags["check_steps"] = args.check_steps
    flags["check_reference"] = args.check_reference
    if args.config:
        return load_import_config(args.config, flags)
    try:
        return ImportConfig.model_validate({k: v for k, v in flags.items() if v is not None})
    except pydantic.ValidationError as err:
        what = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(fmt("convert options", f"Invalid: {what}")) from err


def _set_values(items: list, flag: str) -> dict:
    """``["sr=16000", ...]`` -> ``{"sr": "16000"}`` (the value is read as YAML where it is used)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(fmt(f"{flag} {item!r}", "Is not NAME=VALUE", f"For example {flag} sr=16000."))
        out[name] = value
    return out


def _dim_sizes(items: list, example: str) -> dict[str, int]:
    """``["chunk=512", ...]`` -> ``{"chunk": 512}``: sizes of dynamic non-batch dims (positive ints)."""
    sizes = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.isdigit() or int(value) < 1:
            raise ConfigError(fmt(f"--dim {item!r}", "Is not NAME=N", f"For example --dim {example}."))
        sizes[name] = int(value)
    return sizes


def _time_steps(text):
    if text is None or text == "dynamic":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(fmt(f"--time-steps {text!r}", "Is neither a positive number nor 'dynamic'",
                              "For example --time-steps 1 (one frame per call) or --time-steps dynamic."))
    return value


def _convert(args: argparse.Namespace) -> int:
    from rnnrt.config import save_step_graph

    opts = _import_options(args)
    if args.list_layers:
        return _list_layers(opts.plugins)
    if opts.model is None:
        raise ConfigError(fmt("convert", "No model given", "rnnrt convert DEPLOY.prototxt [WEIGHTS.caffemodel] -o DIR"))
    if opts.seed < 0:
        raise ConfigError(fmt(f"seed {opts.seed}", "Is negative", "A seed is an integer >= 0."))
    _check_name(opts.name, "--name")
    _check_output_dir(opts.output, "-o/--output")
    for path, what in ((opts.model, "Model"), (opts.weights, "Weights"), (opts.override, "--override"),
                       (opts.check_reference, "--check-reference")):
        _check_input_file(path, what)
    if opts.model.endswith(".onnx"):
        from rnnrt.importers.onnx.importer import convert_onnx

        step = convert_onnx(opts.model, add_reset=opts.add_reset, forward_only=opts.forward_only,
                            override=opts.override, constants=dict(opts.set), context=list(opts.context),
                            time_steps=opts.time_steps, strict=opts.strict)
    else:
        from rnnrt.importers.caffe.convert import convert_caffe
        from rnnrt.importers.caffe.plugins import load_plugins
        from rnnrt.ir.weights import FILE_EMBED_LIMIT

        plugins = load_plugins(opts.plugins)
        step = convert_caffe(
            opts.model,
            opts.weights,
            batch="dynamic" if opts.batch == "dynamic" else None,
            seed=opts.seed,
            phase=opts.phase,
            schema=plugins.schema,
            progress=sys.stderr.isatty(),
            embed_limit=FILE_EMBED_LIMIT,  # big weights go to model.onnx.data, streamed (peak memory)
        )
        if plugins.plugins:
            step.source["plugins"] = plugins.describe()
    step = _pin_and_check(step, opts)
    path = save_step_graph(step, opts.output, opts.name)
    print(f"wrote {path.with_suffix('.onnx')} and {path}")
    if step.checks is not None:
        print(f"  {step.checks.summary()}")
    for s in step.states:
        print(f"  state {s.input} -> {s.output} {_dims(s.shape)}")
    if step.continuation is not None:
        print(f"  continuation input {step.continuation.input!r} (filled by the Session when omitted)")
    for note in step.notes:
        print(f"  note: {note}")
    return 0


def _pin_and_check(step, opts):
    """``--dim`` pins, then the equivalence check (unless ``--no-check``) records ``checks:``."""
    from rnnrt.importers.check import check_conversion
    from rnnrt.importers.dims import pin_dims

    step = pin_dims(step, opts.dims)
    if opts.no_check:
        return step
    onnx_model = opts.model if opts.model.endswith(".onnx") else None
    changed = ("--forward-only keeps the forward direction only: the outputs differ from the original by request"
               if opts.forward_only else None)
    return check_conversion(step, onnx_model, constants=dict(opts.set), context=list(opts.context),
                            steps=opts.check_steps, reference=opts.check_reference, no_reference=changed)


def _list_layers(plugin_paths: list[str]) -> int:
    from rnnrt.importers.caffe.plugins import layer_table, load_plugins

    load_plugins(plugin_paths)
    rows = layer_table("caffe")
    print(_table(["layer type", "origin", "source"], [list(r) for r in rows]))
    return 0


# --- build -----------------------------------------------------------------------------------------------


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config (DIR/model.yaml).")
    _add_output(p, "Plan file to write (default: the config's path with .plan).")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="Compute precision; fp16/bf16 rewrite the graph's compute and weights (default: fp32).")
    p.add_argument("--io-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="dtype of the user inputs/outputs (default: float32).")
    p.add_argument("--state-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="dtype of the recurrent state; float32 also keeps the state path in fp32 (default).")
    p.add_argument("--batch-profile", default=None, metavar="MIN:OPT:MAX",
                   help="Range of stream counts (batch) a dynamic-batch graph's plan accepts; N means N:N:N, "
                   "MIN:MAX means MIN:MIN:MAX (default 1:1:64).")
    _alias(p, "--batch", "batch_profile", "--batch-profile", metavar="MIN:OPT:MAX")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=MIN:OPT:MAX",
                   help="Range of another dynamic dim, by name (repeatable).")
    _add_trt_module(p, "tensorrt if importable, else tensorrt_rtx")
    p.add_argument("--target", default=None, metavar="SM,...",
                   help="TensorRT-RTX compute capabilities, e.g. sm80,sm86,sm89,sm120 (default: portable).")
    p.add_argument("--runtime-cache", metavar="NAME", nargs="?", const="", default=None,
                   help="TensorRT-RTX runtime cache recorded in the plan's manifest: a file beside the plan "
                   "(default name: PLAN.cache); the engine reads it at load and writes it at release.")
    p.add_argument("--version-compatible", action="store_true",
                   help="TensorRT: a version-compatible plan (runs on later TensorRT versions and on the lean and "
                   "dispatch runtimes). TensorRT-RTX refuses it.")
    p.add_argument("--exclude-lean-runtime", action="store_true",
                   help="With --version-compatible: leave the lean runtime out of the plan (the machine that runs it "
                   "needs tensorrt_lean or tensorrt of the same version).")
    p.add_argument("--tf32", action="store_true",
                   help="Let fp32 matrix products run in TF32 (faster; ~1e-3 relative error). Default: true fp32.")
    p.add_argument("--verify", action="store_true",
                   help="Run `rnnrt verify` (ONNX Runtime vs the new plan, generated stream at the profile's opt batch) "
                   "right after the build; needs a GPU the plan runs on. Exit status: verify's.")
    p.add_argument("--timing-cache", default=None, metavar="PATH", help="Timing cache file (read, then updated).")
    p.add_argument("--workspace", type=_int_at_least(1, 2**40), default=None, metavar="MIB",
                   help="Workspace memory-pool limit in MiB.")
    p.add_argument("--opt-level", type=int, default=None, choices=range(6), metavar="0-5",
                   help="Builder optimization level 0-5.")
    p.add_argument("--layers", dest="layers", action="store_true",
                   help="Print the parsed network's layers and the engine layers the builder reports.")
    _alias(p, "--verbose", "layers", "--layers (for more logging: rnnrt -v build)", nargs=0, const=True)


def _profile(text: str, what: str) -> tuple[int, int, int]:
    from rnnrt.build import parse_range

    rng = parse_range(text, what)
    if rng[2] > _MAX_DIM:
        raise ConfigError(fmt(f"{what} {text!r}", f"MAX {rng[2]} is too large",
                              f"A dim range goes up to {_MAX_DIM}; the profile is the number of streams one plan holds."))
    return rng


def _build(args: argparse.Namespace) -> int:
    from rnnrt.build import BuildOptions, plan_from_config

    _check_input_file(args.config, "Config")
    if args.output is not None:
        _check_output_file(args.output, "-o/--output", example="model.plan", create_folder=True)
    dims = {}
    for item in args.dim:
        name, sep, rng = item.partition("=")
        if not sep or not name:
            raise ConfigError(fmt(f"--dim {item!r}", "Is not NAME=MIN:OPT:MAX", "For example --dim T=1:16:256."))
        dims[name] = _profile(rng, f"--dim {name}")
    options = BuildOptions(
        precision=args.precision,
        io_dtype=args.io_dtype,
        state_dtype=args.state_dtype,
        batch=_profile(args.batch_profile, "--batch-profile") if args.batch_profile else None,
        dims=dims,
        trt_module=args.trt_module,
        targets=tuple(t for t in (args.target or "").split(",") if t.strip()),
        timing_cache=args.timing_cache,
        workspace_mib=args.workspace,
        optimization_level=args.opt_level,
        progress=True,
        version_compatible=args.version_compatible,
        exclude_lean_runtime=args.exclude_lean_runtime,
        runtime_cache=_runtime_cache_name(args),
        tf32=args.tf32,
    )
    r = plan_from_config(args.config, args.output, options)
    prof = f", batch {r.profile[0]}:{r.profile[1]}:{r.profile[2]}" if r.profile else ""
    print(f"wrote {r.plan_path} ({len(r.plan) / 2**20:.1f} MiB; {r.flavour} {r.version}, {r.precision}{prof}) "
          f"in {r.parse_seconds + r.build_seconds:.2f} s; manifest {r.manifest.path}")
    print(f"  runs on {', '.join(r.manifest.runtimes)}" + (", version-compatible" if r.version_compatible else ""))
    for b in r.bindings:
        print(f"  {b.describe()}")
    if args.layers:
        print(f"network layers ({len(r.layers)}):")
        for layer in r.layers:
            print(f"  {layer.describe()}")
        print(f"engine layers ({len(r.engine_layers)}):")
        for line in r.engine_layers:
            print(f"  {line}")
    if args.verify:
        from rnnrt.runtime.verify import verify

        report = verify(args.config, ["onnxruntime", "tensorrt"], plan=r.plan_path,
                        streams=r.profile[1] if r.profile else None)
        print(report.table())
        return 0 if report.passed else 1
    return 0


def _runtime_cache_name(args: argparse.Namespace) -> str | None:
    """``--runtime-cache`` alone: ``<plan>.cache`` beside the plan; a name: checked by the build (beside the plan)."""
    if args.runtime_cache is None:
        return None
    if args.runtime_cache == "":
        from pathlib import Path

        plan = Path(args.output) if args.output else Path(args.config).with_suffix(".plan")
        return f"{plan.name}.cache"
    return args.runtime_cache


# --- run -------------------------------------------------------------------------------------------------


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config.")
    p.add_argument("--feed", required=True, metavar="NPZ", help="Input .npz with keys call{k}/{input}.")
    _add_output(p, "Output .npz to write (keys call{k}/{output}); its folder must exist.", required=False)
    _alias(p, "--out", "output", "--output", metavar="PATH")
    p.add_argument("--max-feed-mib", type=_POSITIVE, default=DEFAULT_MAX_FEED_MIB, metavar="MIB",
                   help="Refuse a feed whose arrays hold more than this, before decompressing any "
                   "(default: %(default)s).")
    _add_session_group(p)
    _alias(p, "--batch-size", "streams", "--streams", type=_POSITIVE, metavar="N")


def _run(args: argparse.Namespace) -> int:
    import re

    import numpy as np

    from rnnrt.config import load_config
    from rnnrt.runtime.session import load

    if args.output is None:
        raise ConfigError(fmt("run", "No output given", "rnnrt run MODEL.yaml --feed FEED.npz -o OUT.npz"))
    _check_output_file(args.output, "-o/--output")
    _check_input_file(args.config, "Config")
    cfg = load_config(args.config)
    inputs = {t.name: t for t in cfg.inputs}
    outputs = {t.name for t in cfg.outputs}

    def wanted(key: str) -> bool:
        m = re.fullmatch(r"call(\d+)/(.+)", key)
        if m is None:
            raise BindingError(fmt(f"Feed key {key!r}", "Is not of the form call{k}/{input}"))
        if m.group(2) in inputs:
            return True
        if m.group(2) in outputs or m.group(2).startswith("_internal/"):
            return False  # recorded outputs and extra blobs (as in the golden io.npz files) are skipped
        raise BindingError(fmt(f"Feed key {key!r}", f"Names {m.group(2)!r}, which is not a model input",
                               f"Inputs: {sorted(inputs)}."))

    data = read_npz(args.feed, wanted, args.max_feed_mib << 20, what="Feed")
    calls: dict[int, dict[str, np.ndarray]] = {}
    for key, value in data.items():
        k, name = key[4:].split("/", 1)
        calls.setdefault(int(k), {})[name] = value
    if sorted(calls) != list(range(len(calls))):
        raise BindingError(fmt(f"Feed {args.feed!r}", f"Has calls {sorted(calls)}",
                               "Calls are numbered 0, 1, 2 ... without gaps."))
    streams = args.streams
    if streams is None and calls:
        for t in cfg.inputs:
            if t.batch_axis is not None and isinstance(t.shape[t.batch_axis], str) and t.name in calls[0]:
                if calls[0][t.name].ndim <= t.batch_axis:
                    raise BindingError(fmt(f"Feed key 'call0/{t.name}'", f"Has shape {calls[0][t.name].shape}",
                                           f"Expected {len(t.shape)} dims {_dims(t.shape)}."))
                # A folded batch axis (batch_fold, e.g. T*N frame rows) holds outer*N*inner entries.
                streams = int(calls[0][t.name].shape[t.batch_axis]) // t.batch_entries(1)
                break
    kw = {"batch_size": streams} if streams is not None else {}
    if args.threads is not None:
        kw["threads"] = args.threads
    out: dict[str, np.ndarray] = {}
    with load(cfg, backend=args.backend, **kw) as session:
        for k in range(len(calls)):
            for name, value in session.step(calls[k]).items():
                out[f"call{k}/{name}"] = value
    write_npz(args.output, out)
    print(f"{len(calls)} calls, outputs {sorted(outputs)} -> {args.output}")
    return 0


def read_npz(path: str, wanted: Callable[[str], bool], limit_bytes: int, what: str = "Feed") -> dict[str, np.ndarray]:
    """Reads the arrays of an ``.npz`` file, checking everything it can before decompressing any array.

    The file must be a regular file and a zip archive of ``.npy`` members. ``wanted(key)`` sees every key first
    (it may raise to refuse one) and says whether to load it. Each wanted member's ``.npy`` header must parse,
    hold no Python objects, and declare exactly as many bytes as the member holds; their total must stay
    within ``limit_bytes``. Only then are the arrays read.

    Args:
        path (str): The .npz file.
        wanted (Callable[[str], bool]): Called with each key (member name without ``.npy``).
        limit_bytes (int): Most bytes the wanted arrays may hold together.
        what (str): How error messages name the file. Default: ``"Feed"``.

    Returns:
        dict[str, np.ndarray]: The wanted arrays by key, in archive order.

    Raises:
        BindingError: The file cannot be read, is not an .npz, a key or header is bad, or it is too large.
    """
    import zipfile
    import zlib

    import numpy as np

    subject = f"{what} {str(path)!r}"
    try:
        st = os.stat(path)
    except OSError as err:
        raise BindingError(fmt(subject, f"Cannot be read: {err.strerror}")) from err
    if not stat.S_ISREG(st.st_mode):
        raise BindingError(fmt(subject, "Is not a regular file", "Expected an .npz file written by numpy.savez."))
    broken = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            keys: dict[str, zipfile.ZipInfo] = {}
            for info in members:
                if not info.filename.endswith(".npy"):
                    raise BindingError(fmt(f"{subject} member {info.filename!r}", "Is not an .npy array",
                                           "An .npz holds only NAME.npy members (numpy.savez)."))
                key = info.filename[: -len(".npy")]
                if key in keys:
                    raise BindingError(fmt(f"{subject} key {key!r}", "Appears twice"))
                keys[key] = info
            load = [key for key in keys if wanted(key)]
            total = 0
            for key in load:
                info = keys[key]
                with zf.open(info) as f:
                    try:
                        version = np.lib.format.read_magic(f)
                        if version == (1, 0):
                            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                        elif version == (2, 0):
                            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                        else:
                            raise ValueError(f"unsupported .npy format version {version}")
                    except broken as err:
                        raise BindingError(fmt(f"{subject} key {key!r}", f"Has no valid .npy header: {err}")) from err
                    header = f.tell()
                if dtype.hasobject:
                    raise BindingError(fmt(f"{subject} key {key!r}", f"Holds Python objects (dtype {dtype})",
                                           "Feeds hold numeric arrays; object arrays would need pickle and are refused."))
                if any(int(d) < 0 for d in shape):
                    raise BindingError(fmt(f"{subject} key {key!r}", f"Declares shape {tuple(shape)}",
                                           "The file is corrupt: dims are >= 0."))
                count = 1
                for d in shape:
                    count *= int(d)
                nbytes = count * dtype.itemsize
                if header + nbytes != info.file_size:
                    raise BindingError(fmt(f"{subject} key {key!r}",
                                           f"Declares shape {tuple(shape)} {dtype} ({nbytes} bytes) but holds "
                                           f"{info.file_size - header} bytes", "The file is corrupt or truncated."))
                total += nbytes
                if total > limit_bytes:
                    raise BindingError(fmt(f"{subject} key {key!r}",
                                           f"Brings the arrays to {total} bytes, more than the limit of "
                                           f"{limit_bytes} bytes", "Raise the limit (`rnnrt run --max-feed-mib`) "
                                           "if the feed is meant to be this large."))
            arrays = {}
            for key in load:
                with zf.open(keys[key]) as f:
                    try:
                        arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
                    except broken as err:
                        raise BindingError(fmt(f"{subject} key {key!r}", f"Cannot be read: {err}",
                                               "The file is corrupt or truncated.")) from err
            return arrays
    except BindingError:
        raise
    except broken as err:
        raise BindingError(fmt(subject, f"Cannot be read as .npz: {err}", "Expected a file written by numpy.savez.")) from err


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` to exactly ``path`` (no ``.npz`` appended), atomically: a temporary file beside it is
    renamed over it once complete, so a failure leaves no partial file."""
    import tempfile

    import numpy as np

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# --- bench -----------------------------------------------------------------------------------------------


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config.")
    p.add_argument("--steps", type=_POSITIVE, default=500, metavar="N", help="Timed steps per round (default: 500).")
    p.add_argument("--chunk", type=_POSITIVE, default=1, metavar="K",
                   help="Frames per call: K > 1 times Session.step_chunk with K frames (a server's multi-frame "
                        "request) and reports per frame (default: 1, Session.step).")
    p.add_argument("--warmup", type=_NON_NEGATIVE, default=50, metavar="N", help="Untimed steps first (default: 50).")
    p.add_argument("--rounds", type=_POSITIVE, default=3, metavar="N",
                   help="Rounds; the median of round medians is reported (default: 3).")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="Size of a dynamic non-batch dim, by name (e.g. --dim chunk=512); repeatable.")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="set_values",
                   help="Value of a non-float input, fed every step (e.g. --set sr=16000); repeatable.")
    _add_session_group(p)
    _alias(p, "--batch", "streams", "--streams", type=_POSITIVE, metavar="N")
    p.add_argument("--plot", default=None, metavar="PNG", help="Draw the step-latency histogram (needs matplotlib).")


def _bench_frame(cfg, batch_size: int, args: argparse.Namespace) -> dict:
    """One frame with the config's real shapes: the batch axis is the batch size, other dynamic dims come
    from ``--dim``; float inputs are random, other inputs take their ``--set`` value."""
    import numpy as np

    from rnnrt.importers.onnx.fold import parse_value

    sizes = _dim_sizes(args.dim, "chunk=512")
    values = {k: parse_value(v) for k, v in _set_values(args.set_values, "--set").items()}
    cont = cfg.continuation.input if cfg.continuation else None
    rng = np.random.default_rng(0)
    frame = {}
    for t in cfg.inputs:
        if t.name == cont:
            continue
        shape = []
        for axis, d in enumerate(t.shape):
            if axis == t.batch_axis:
                shape.append(t.batch_entries(batch_size) if isinstance(d, str) else d)
            elif isinstance(d, int):
                shape.append(d)
            elif d in sizes:
                shape.append(sizes[d])
            else:
                raise ConfigError(fmt(f"Input {t.name!r}", f"Dim {axis} ({d!r}) is dynamic and bench has no size for it",
                                      f"Give one with --dim {d}=N."))
        if t.name in values:
            frame[t.name] = np.broadcast_to(np.asarray(values[t.name], dtype=t.dtype), shape).copy()
        elif np.issubdtype(np.dtype(t.dtype), np.floating):
            frame[t.name] = rng.uniform(-1, 1, shape).astype(t.dtype)
        else:
            raise ConfigError(fmt(f"Input {t.name!r}", f"Is {t.dtype}; bench does not invent values for it",
                                  f"Give its value with --set {t.name}=VALUE (or bind it at convert time with --set)."))
    return frame


def _bench(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    import rnnrt
    from rnnrt.config import load_config

    _check_input_file(args.config, "Config")
    cfg = load_config(args.config)
    dynamic = sorted({str(t.shape[t.batch_axis]) for t in cfg.inputs
                      if t.batch_axis is not None and isinstance(t.shape[t.batch_axis], str)})
    if dynamic and args.streams is None:
        raise ConfigError(fmt("--streams", f"Is required: the model has a dynamic batch dim {dynamic[0]!r}",
                              f"For example: rnnrt bench {args.config} --streams 64"))
    kw = {"batch_size": args.streams} if args.streams else {}
    if args.threads:
        kw["threads"] = args.threads
    k = args.chunk
    with rnnrt.load(cfg, backend=args.backend, **kw) as session:
        frame = _bench_frame(cfg, session.batch_size, args)
        if k == 1:
            def call() -> None:
                session.step(frame)
        else:
            chunk = {name: np.ascontiguousarray(np.broadcast_to(v, (k,) + v.shape)) for name, v in frame.items()}

            def call() -> None:
                session.step_chunk(chunk)
        for _ in range(args.warmup):
            call()
        medians, all_times = [], []
        for _ in range(args.rounds):
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                call()
                times.append((time.perf_counter() - t0) / k)
            medians.append(float(np.median(times)))
            all_times += times
        us = np.array(all_times) * 1e6
        print(f"{session!r}")
        per = "step" if k == 1 else f"frame (calls of {k} frames: step_chunk)"
        print(f"{'steps' if k == 1 else 'calls'} {args.rounds} x {args.steps}, batch {session.batch_size}: "
              f"median {np.median(medians) * 1e6:.1f} us/{per} (rounds {', '.join(f'{m * 1e6:.1f}' for m in medians)}), "
              f"p10 {np.percentile(us, 10):.1f}, p90 {np.percentile(us, 90):.1f}, p99 {np.percentile(us, 99):.1f} us")
        if args.plot:
            from rnnrt.runtime.plots import latency_histogram

            latency_histogram(us, args.plot, f"rnnrt bench {os.path.basename(args.config)}: "
                              f"{type(session.engine).__name__}, batch {session.batch_size}, {args.rounds} x {args.steps} steps")
            print(f"plot -> {args.plot}")
    return 0


# --- inspect ---------------------------------------------------------------------------------------------


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="A model YAML config, or a TensorRT plan (.plan/.engine).")
    _add_trt_module(p, "the first installed runtime the plan's manifest lists", runtimes=True)


def _inspect(args: argparse.Namespace) -> int:
    from collections import Counter
    from pathlib import Path

    _check_input_file(args.path, "Path")
    suffix = Path(args.path).suffix.lower()
    if suffix in (".plan", ".engine"):
        return _inspect_plan(args)
    if suffix not in (".yaml", ".yml"):
        raise ConfigError(fmt(f"Path {args.path!r}", "Is not a .yaml config (nor a .plan)",
                              "`rnnrt inspect` reads model configs (.yaml) and TensorRT plans (.plan/.engine)."))
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
    from rnnrt.build.manifest import with_built_engine

    cfg = with_built_engine(cfg, args.path)
    if cfg.engine is not None:
        e = cfg.engine
        print(f"Engine: {e.plan} ({e.flavour} {e.version}, {e.precision}"
              + (f", batch {e.profile.min}/{e.profile.opt}/{e.profile.max})" if e.profile else ")"))
    print()
    print(_table(["op", "count"], sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
    return 0


def _inspect_plan(args: argparse.Namespace) -> int:
    from rnnrt.build import inspect_plan
    from rnnrt.errors import EngineError

    report = inspect_plan(args.path, None if args.trt_module in (None, "auto") else args.trt_module)
    print(report.text())
    if report.error is not None:
        raise EngineError(fmt(f"Plan {args.path!r}", f"Could not be deserialized: {report.error}",
                             "Executing or inspecting an engine needs an NVIDIA GPU that its TensorRT flavour "
                             "supports; what its manifest says is printed above."))
    return 0


# --- verify ----------------------------------------------------------------------------------------------


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config.")
    p.add_argument("--backends", default=None, metavar="B1,B2,...",
                   help="Backends, each BASE[:key=value]...: onnxruntime[:opt=disable|basic|extended|all][:graph=plan], "
                   "tensorrt[:plan=PATH][:runtime=MODULE][:runtime_cache=PATH], or module.path:callable (your engine "
                   "factory); every one also takes :feedback=copy|swap, :cuda_graph=0|1, :label=NAME, :precision=P. "
                   "Default: onnxruntime,tensorrt where a plan and a GPU exist, else onnxruntime.")
    p.add_argument("--feed", default=None, metavar="NPZ",
                   help="Frames (call{k}/{input}) and recorded outputs (call{k}/{output}, compared too), e.g. a Caffe "
                   "io.npz. Without it a stream is generated from the config's shapes.")
    p.add_argument("--steps", type=_POSITIVE, default=100, metavar="N", help="Steps of a generated stream (default: 100).")
    p.add_argument("--streams", type=_POSITIVE, default=None, metavar="N",
                   help="Streams (batch) of a generated stream (default: the static batch, or 1).")
    p.add_argument("--seed", type=_NON_NEGATIVE, default=0, metavar="S", help="Seed of a generated stream (default: 0).")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="Value of another dynamic dim of a generated stream (e.g. T=8); repeatable.")
    p.add_argument("--set", action="append", default=[], metavar="INPUT=VALUE", dest="values",
                   help="Hold an input of a generated stream at one value (e.g. sr=16000); repeatable.")
    p.add_argument("--reset-at", action="append", default=[], metavar="STEP[,STEP]|STEP:SLOT[,SLOT]",
                   help="Reset every stream (or the given slots) of every backend before that step; repeatable.")
    p.add_argument("--atol", type=float, default=None, help="Absolute tolerance (default by precision).")
    p.add_argument("--rtol", type=float, default=None, help="Relative tolerance (default by precision).")
    p.add_argument("--precision", choices=["fp32", "tf32", "fp16", "bf16"], default=None,
                   help="Precision whose default tolerances apply (default: the lowest of the backends; fp32 1e-4/1e-3, "
                   "tf32 1e-3/1e-2, fp16 2e-3/1e-2, bf16 2e-2/5e-2).")
    p.add_argument("--plan", default=None, metavar="PLAN", help="The plan, when not the config's default (CONFIG.plan).")
    p.add_argument("--no-state", dest="state", action="store_false", help="Compare outputs only, not the carried state.")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="Write the report as JSON (schema rnnrt.verify/1); '-' prints it instead of the table.")
    p.add_argument("--plot", default=None, metavar="PNG", help="Draw the error per step and tensor (needs matplotlib).")


def _verify(args: argparse.Namespace) -> int:
    import json

    from rnnrt.runtime.verify import parse_resets, verify

    _check_input_file(args.config, "Config")
    if args.feed is not None:
        _check_input_file(args.feed, "Feed")
    dims = _dim_sizes(args.dim, "T=8")
    values = {}
    for item in args.values:
        name, sep, value = item.partition("=")
        try:
            values[name] = float(value)
        except ValueError:
            values[name] = None
        if not sep or not name or values[name] is None:
            raise ConfigError(fmt(f"--set {item!r}", "Is not INPUT=NUMBER", "For example --set sr=16000."))
    report = verify(args.config, args.backends, feed=args.feed, steps=args.steps, streams=args.streams, seed=args.seed,
                    resets=parse_resets(args.reset_at), dims=dims, values=values, atol=args.atol, rtol=args.rtol,
                    precision=args.precision, plan=args.plan, state=args.state)
    if args.json == "-":
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(report.table())
        if args.json:
            try:
                with open(args.json, "w") as f:
                    json.dump(report.to_json(), f, indent=1)
            except OSError as err:
                raise ConfigError(fmt(f"--json {args.json!r}", f"Cannot be written: {err.strerror}")) from err
    if args.plot:
        report.plot(args.plot)
    return 0 if report.passed else 1


# --- export-triton ---------------------------------------------------------------------------------------


def _add_triton_model_group(p: argparse.ArgumentParser) -> None:
    """Options of the Triton model that export-triton and serve write."""
    g = p.add_argument_group("triton model")
    g.add_argument("--max-sequences", type=_POSITIVE, default=None, metavar="N",
                   help="python engine: max_candidate_sequences = the StreamPool's slots (default: the plan's "
                   "profile max, or 64).")
    g.add_argument("--idle-us", type=_POSITIVE, default=60_000_000, metavar="US",
                   help="max_sequence_idle_microseconds: a stream idle this long is released (default: 60 s).")
    g.add_argument("--queue-delay-us", type=_NON_NEGATIVE, default=0, metavar="US",
                   help="python engine: max_queue_delay_microseconds of the oldest strategy (default: 0).")
    g.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto",
                   help="python engine: the backend of the Session inside the server (default: auto = TensorRT when "
                   "a plan is built and a GPU is usable there, else ONNX Runtime).")
    g.add_argument("--instance-kind", choices=["auto", "KIND_GPU", "KIND_CPU"], default="auto",
                   help="Where Triton runs the model instances (default: auto = KIND_GPU when a GPU is usable "
                   "here, else KIND_CPU).")
    g.add_argument("--shared", action="append", default=[], type=_shared_value, metavar="NAME=VALUE",
                   help="python engine: the value of an input without a batch axis (e.g. --shared sr=16000), fed "
                   "with every step of every stream (repeatable; VALUE is a JSON number or list).")


def _shared_value(text: str) -> tuple[str, object]:
    import json

    name, eq, value = text.partition("=")
    try:
        if not eq or not name:
            raise ValueError
        return name, json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE with a JSON number or list, e.g. sr=16000")


def _export_triton_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config (DIR/model.yaml).")
    _add_output(p, "Triton model repository directory.", required=True, metavar="REPO")
    p.add_argument("--engine", choices=["plan", "onnx", "python"], default="plan",
                   help="plan: the built TensorRT plan (backend tensorrt); onnx: the step graph (backend onnxruntime); "
                   "python: rnnrt's StreamPool in Triton's python backend (what `rnnrt serve` runs).")
    p.add_argument("--name", default=None, help="Triton model name, a plain name (default: the config's directory name).")
    p.add_argument("--max-batch-size", type=_POSITIVE, default=None, metavar="N",
                   help="plan/onnx: default the plan's profile max, or 64 for a dynamic batch without a profile.")
    _add_triton_model_group(p)


def _export_triton(args: argparse.Namespace) -> int:
    from rnnrt.serve.triton import export_triton

    _check_input_file(args.config, "Config")
    if args.name is not None:
        _check_name(args.name, "--name")
    model_dir = export_triton(args.config, args.output, engine=args.engine, name=args.name,
                              max_batch_size=args.max_batch_size, idle_us=args.idle_us,
                              instance_kind=args.instance_kind, max_sequences=args.max_sequences,
                              backend=args.backend, queue_delay_us=args.queue_delay_us, shared=dict(args.shared))
    print(f"wrote {model_dir / 'config.pbtxt'} and {model_dir / '1'}")
    return 0


# --- serve -----------------------------------------------------------------------------------------------


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="*", metavar="CONFIG", help="Model YAML configs (DIR/model.yaml); each model is "
                   "named after DIR.")
    p.add_argument("--name", default=None, help="Model name (one config only).")
    p.add_argument("--repo", default=None, metavar="DIR",
                   help="Write the repository here (default: a temporary folder); without configs, serve this "
                   "existing repository as it is.")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="Address every endpoint binds (default: 127.0.0.1; 0.0.0.0 exposes the server).")
    g.add_argument("--grpc-port", type=_int_at_least(0, 65535), default=8001, metavar="P",
                   help="gRPC port (default: 8001; 0 = a free port).")
    g.add_argument("--http-port", type=_int_at_least(0, 65535), default=0, metavar="P",
                   help="HTTP port (default: a free port).")
    g.add_argument("--metrics-port", type=_int_at_least(0, 65535), default=0, metavar="P",
                   help="Metrics port (default: a free port).")
    g.add_argument("--tritonserver", default=None, metavar="PATH",
                   help="The tritonserver binary (default: the embedded one, else tritonserver on PATH).")
    g.add_argument("--log", default=None, metavar="FILE", help="Write the server's log here (default: a temporary file).")
    g.add_argument("--log-verbose", type=_NON_NEGATIVE, default=0, metavar="N", help="Triton's --log-verbose level.")
    g.add_argument("--ready-timeout", type=_POSITIVE, default=300, metavar="S",
                   help="Seconds to wait until every model is ready (default: 300).")
    g.add_argument("--exit-timeout", type=_NON_NEGATIVE, default=30, metavar="S",
                   help="Seconds a stopping server waits for in-flight work and open sequences (default: 30).")
    _add_triton_model_group(p)


def _serve(args: argparse.Namespace) -> int:
    from rnnrt.serve.server import serve

    for path in args.configs:
        _check_input_file(path, "Config")
    if args.name is not None:
        _check_name(args.name, "--name")
    return serve(args.configs, repo=args.repo, name=args.name, host=args.host, grpc_port=args.grpc_port or None,
                 http_port=args.http_port or None, metrics_port=args.metrics_port or None,
                 tritonserver=args.tritonserver, max_sequences=args.max_sequences, idle_us=args.idle_us,
                 backend=args.backend, instance_kind=args.instance_kind, queue_delay_us=args.queue_delay_us,
                 shared=dict(args.shared), log=args.log, verbose=args.log_verbose, timeout=args.ready_timeout, exit_timeout=args.exit_timeout)


# --- schema ----------------------------------------------------------------------------------------------


def _schema_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=["model", "import"], default="model",
                   help="model: the model config written by convert; import: the options of `convert --config`.")


def _schema(args: argparse.Namespace) -> int:
    import json

    from rnnrt.config import json_schema

    print(json.dumps(json_schema(args.kind), indent=2))
    return 0


# --- helpers ---------------------------------------------------------------------------------------------


def _check_name(name: str, what: str) -> None:
    """A name that becomes a file or folder name inside an output folder: no path, nothing that escapes."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name
           or (os.altsep is not None and os.altsep in name) or any(ord(c) < 32 for c in name))
    if bad:
        raise ConfigError(fmt(f"{what} {name!r}", "Is not a plain name",
                              "A name without path separators or control characters, e.g. 'model'; "
                              "choose the folder with -o/--output."))
    if len(name.encode()) > 200:
        raise ConfigError(fmt(f"{what} {name[:20]!r}...", f"Is {len(name.encode())} bytes long",
                              "A name of at most 200 bytes (file names add suffixes such as .onnx.data)."))


def _check_input_file(path: str | None, what: str) -> None:
    """Refuses a path that exists but is not a regular file (a folder, FIFO or device would hang or never end);
    a missing file is left to the reader, whose message names it."""
    if path is None:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(fmt(f"{what} {str(path)!r}", f"Is {kind}", "Name a model or config file."))


def _check_output_dir(path: str, what: str) -> None:
    """Fails before any work when ``path`` cannot become a directory we write into."""
    p = os.path.abspath(path)
    if os.path.exists(p) and not os.path.isdir(p):
        raise ConfigError(fmt(f"{what} {path!r}", "Exists and is not a directory", "Name a directory to write into."))
    existing = p
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(fmt(f"{what} {path!r}", f"Cannot be created: {existing!r} is not a directory"))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(fmt(f"{what} {path!r}", f"Cannot be written: {existing!r} is not writable"))


def _check_output_file(path: str, what: str, *, example: str = "out.npz", create_folder: bool = False) -> None:
    """Fails before any work when ``path`` cannot be written as a file (``create_folder``: missing folders
    above it will be created)."""
    p = os.path.abspath(path)
    if os.path.isdir(p):
        raise ConfigError(fmt(f"{what} {path!r}", "Is a directory",
                              f"Name the file to write, e.g. {os.path.join(path, example)!r}."))
    folder = os.path.dirname(p)
    if create_folder:
        _check_output_dir(folder, f"{what} {path!r}: folder")
        return
    if not os.path.isdir(folder):
        raise ConfigError(fmt(f"{what} {path!r}", f"Its folder {folder!r} does not exist", "Create it first."))
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(p) and not os.access(p, os.W_OK)):
        raise ConfigError(fmt(f"{what} {path!r}", "Cannot be written (permission denied)"))


def _dims(shape) -> str:
    """A shape as the YAML writes it: ``[8, batch, 5]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the subcommand table --------------------------------------------------------------------------------

SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "convert",
        help="Caffe prototxt + caffemodel (or ONNX) -> ONNX step graph + YAML config.",
        description="Converts a model into an ONNX step graph whose recurrent state is explicit inputs/outputs, "
        "and writes DIR/NAME.onnx and DIR/NAME.yaml (the model config every later command reads).",
        add_arguments=_convert_arguments,
        run=_convert,
        examples="rnnrt convert deploy.prototxt weights.caffemodel -o out/\n"
        "rnnrt convert deploy.prototxt -o out/ --batch dynamic     # random weights, symbolic stream axis\n"
        "rnnrt convert lstm.onnx -o out/ --add-reset\n"
        "rnnrt convert silero_vad.onnx -o vad/ --set sr=16000 --context input:64   # constants folded, context as state\n"
        "rnnrt convert --config import.yaml -o other/              # options from YAML, flags override\n"
        "rnnrt convert --plugins plugins/ --list-layers",
    ),
    Subcommand(
        "build",
        help="Build a TensorRT engine (plan) from a model YAML config.",
        description="Parses the config's ONNX step graph with TensorRT (tensorrt if importable, else "
        "tensorrt_rtx), builds a plan with one optimization profile and records it for the config.",
        add_arguments=_build_arguments,
        run=_build,
        examples="rnnrt build out/model.yaml\n"
        "rnnrt build out/model.yaml --batch-profile 1:8:64 --precision fp16 --verify\n"
        "rnnrt build out/model.yaml --version-compatible          # also runs on later TensorRT and the lean runtime\n"
        "rnnrt build out/model.yaml --dim T=1:16:256 --layers",
    ),
    Subcommand(
        "verify",
        help="Run one stream through two or more backends side by side and compare every step.",
        description="Runs the same frames through every backend (each its own Session, state carried, resets where "
        "asked) and reports per output and carried state the max abs/rel error and the first step beyond "
        "--atol/--rtol; every backend is also compared with the outputs recorded in --feed. Exit status 0: within "
        "tolerance; 1: beyond it; 2: an error. The first thing to run on a new GPU.",
        add_arguments=_verify_arguments,
        run=_verify,
        examples="rnnrt verify out/model.yaml                           # onnxruntime,tensorrt where a plan and a GPU exist\n"
        "rnnrt verify out/model.yaml --streams 64 --steps 500 --reset-at 100,300 --reset-at 200:0,5\n"
        "rnnrt verify out/model.yaml --feed io.npz             # against a recording (a Caffe io.npz)\n"
        "rnnrt verify out/model.yaml --backends onnxruntime,onnxruntime:opt=disable --json r.json --plot err.png",
    ),
    Subcommand(
        "run",
        help="Replay a recorded stream through a Session.",
        description="Replays FEED.npz (keys call{k}/{input}; call k is one step, state carried) and writes "
        "call{k}/{output} for every model output to the -o .npz. The feed's keys and array headers are checked "
        "before anything is decompressed, and the output path before any step runs.",
        add_arguments=_run_arguments,
        run=_run,
        examples="rnnrt run out/model.yaml --feed feed.npz -o out.npz\n"
        "rnnrt run out/model.yaml --feed feed.npz -o out.npz --backend onnxruntime --threads 1",
    ),
    Subcommand(
        "bench",
        help="Time Session.step on a model config with random frames (host time per step).",
        description="Streams random frames through a Session and reports per-step host latency (median and "
        "percentiles over several rounds). The continuation input is left to the Session.",
        add_arguments=_bench_arguments,
        run=_bench,
        examples="rnnrt bench out/model.yaml\n"
        "rnnrt bench out/model.yaml --streams 64 --steps 200 --rounds 5 --threads 1\n"
        "rnnrt bench out/model.yaml --streams 64 --chunk 8   # 8 frames a call (step_chunk), time per frame\n"
        "rnnrt bench vad/model.yaml --streams 64 --dim chunk=512   # a dynamic non-batch dim needs a size",
    ),
    Subcommand(
        "inspect",
        help="Show a config's bindings, state pairs and op counts, or a .plan's engine.",
        description="For a model YAML config: its bindings, state pairs, continuation, engine record and the "
        "ONNX op counts. For a TensorRT plan: its build record and, where the GPU allows, its deserialized "
        "bindings.",
        add_arguments=_inspect_arguments,
        run=_inspect,
        examples="rnnrt inspect out/model.yaml\nrnnrt inspect out/model.plan",
    ),
    Subcommand(
        "export-triton",
        help="Write a Triton model repository entry (sequence batching) for a model config.",
        description="Writes REPO/NAME/config.pbtxt and REPO/NAME/1/. --engine python: Triton's python backend runs "
        "an rnnrt StreamPool behind the sequence batcher (oldest strategy, START/END/READY/CORRID; docs/serving.md). "
        "plan/onnx: Triton's tensorrt/onnxruntime backends with implicit state (direct strategy, START -> "
        "continuation input).",
        add_arguments=_export_triton_arguments,
        run=_export_triton,
        examples="rnnrt export-triton out/model.yaml -o triton_repo/ --engine python --name lm --max-sequences 128\n"
        "rnnrt export-triton out/model.yaml -o triton_repo/ --engine onnx --name lm",
    ),
    Subcommand(
        "serve",
        help="Serve model configs on a real Triton Inference Server (blocks until Ctrl-C/SIGTERM).",
        description="Writes a Triton repository (--engine python, see export-triton) for each config, starts "
        "tritonserver (the embedded one from `python -m rnnrt.serve.install`, --tritonserver PATH, or one on "
        "PATH), waits until every model is ready, prints the endpoints and 'ready', and blocks until SIGINT/SIGTERM "
        "stop the server. Binds 127.0.0.1 unless --host says otherwise. Client: rnnrt.client.StreamClient.",
        add_arguments=_serve_arguments,
        run=_serve,
        examples="rnnrt serve lm/model.yaml --name lm --grpc-port 8001\n"
        "rnnrt serve a/model.yaml b/model.yaml --max-sequences 256 --idle-us 30000000\n"
        "rnnrt serve --repo triton_repo/ --grpc-port 9001 --http-port 9000 --metrics-port 9002",
    ),
    Subcommand(
        "schema",
        help="Print the JSON schema of the model YAML config (or of import options).",
        description="Prints the JSON schema of the model config that convert writes (--kind model) or of the "
        "import options `rnnrt convert --config` reads (--kind import).",
        add_arguments=_schema_arguments,
        run=_schema,
        examples="rnnrt schema > model.schema.json\nrnnrt schema --kind import",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``rnnrt`` argument parser, with one subparser per row of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="rnnrt", description="rnnrt: stateful recurrent inference for TensorRT (and ONNX Runtime on CPU).",
        epilog="Run `rnnrt COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="Debug logging (also `-v` after the command).")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only warnings and errors.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in SUBCOMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description,
                           epilog="examples:\n" + "\n".join("  " + line for line in cmd.examples.splitlines())
                           if cmd.examples else None,
                           formatter_class=_Formatter)
        cmd.add_arguments(p)
        _add_logging_group(p)
        p.set_defaults(handler=cmd.run)
    return parser


class _Formatter(argparse.HelpFormatter):
    """Wraps the description, keeps the examples' lines as written."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnrt")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rnnrt`` console script; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: argparse has printed what to say
        return exit_.code if isinstance(exit_.code, int) else 2
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="[%(levelname)s] %(name)s: %(message)s")
    for old, new in getattr(args, "_deprecated", None) or []:
        G_LOGGER.warning("rnnrt %s %s is deprecated; use %s.", args.command, old, new)
    try:
        return int(args.handler(args) or 0)
    except RnnrtError as err:
        G_LOGGER.debug("rnnrt %s failed", args.command, exc_info=True)
        print(f"rnnrt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `rnnrt schema | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keeps the interpreter's final flush quiet)
        return 1
    except OSError as err:  # a file the user named cannot be read or written
        G_LOGGER.debug("rnnrt %s failed", args.command, exc_info=True)
        subject = repr(err.filename) if err.filename else "I/O"
        print(f"rnnrt {args.command}: error: {fmt(subject, err.strerror or str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnrt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
