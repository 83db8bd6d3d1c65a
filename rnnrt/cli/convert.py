"""``rnnrt convert``: runs :func:`rnnrt.convert` with options from flags and (``--config``) an import YAML."""

from __future__ import annotations

import argparse
import sys

from rnnrt.cli.args import NON_NEGATIVE, Subcommand, add_output, int_at_least, parse_assignments, parse_dims
from rnnrt.cli.output import dims_text, table
from rnnrt.errors import ConfigError, fmt


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="deploy.prototxt (Caffe) or model.onnx.")
    p.add_argument("weights", nargs="?", help="weights.caffemodel (Caffe). Without it, weights are random (seeded).")
    p.add_argument("--config", metavar="YAML", default=None,
                   help="Import options from YAML (see `rnnrt schema --kind import`); every flag overrides one field.")
    add_output(p, "Output directory (default: out).", metavar="DIR")
    p.add_argument("--name", default=None, help="File stem of the written files, a plain name (default: model).")
    p.add_argument("--batch", choices=["fixed", "dynamic"], default=None,
                   help="'dynamic' makes the batch (stream) axis symbolic; `rnnrt build --batch-profile` then sets "
                   "its range (default: fixed).")
    caffe = p.add_argument_group("Caffe")
    caffe.add_argument("--seed", type=NON_NEGATIVE, default=None,
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
                      help="Bind input NAME to a constant folded into the graph (e.g. --set sr=16000; Ifs on it are "
                      "inlined); repeatable. A value fed every step at run time is --shared of bench/verify/serve.")
    onnx.add_argument("--context", action="append", default=[], metavar="INPUT:K[:AXIS]",
                      help="Carry the last K samples of INPUT (last axis, or AXIS) to the next call as state (e.g. "
                      "input:64, feat_erb:2:2); repeatable. Causal windows on a known time axis get theirs unasked.")
    onnx.add_argument("--time-steps", default=None, metavar="N|dynamic",
                      help="Re-shape the time axis of a fixed-T export to N steps per call, or make it dynamic.")
    onnx.add_argument("--strict", action="store_true", default=None,
                      help="Fail (instead of warning) when an op after the recurrence mixes time steps.")
    onnx.add_argument("--dim", action="append", default=[], metavar="NAME=N", dest="dims",
                      help="Pin the dynamic dim NAME of the inputs to N (e.g. --dim chunk=512): recorded in the "
                      "config and checked at every step; repeatable.")
    check = p.add_argument_group("equivalence check (docs/onnx.md)")
    check.add_argument("--no-check", action="store_true", default=None,
                       help="Skip the check that the step graph streams like the original (streaming, batch, reset).")
    check.add_argument("--check-steps", type=int_at_least(2), default=None, metavar="N",
                       help="Calls per stream of the check: two sequences with a reset between them (default: 8, fewer "
                       "when one call of the model takes long).")
    check.add_argument("--check-reference", default=None, metavar="NPZ",
                       help="A recorded stream (call{k}/{input} and call{k}/{output}, e.g. from the package's own "
                       "wrapper) that the step graph must reproduce.")


def _import_options(args: argparse.Namespace):
    """The convert options: the --config YAML (if any) overridden flag by flag."""
    import pydantic

    from rnnrt.importers.options import ImportConfig, load_import_config
    from rnnrt.paths import check_input_file, check_name

    if args.name is not None:
        check_name(args.name, "--name")
    check_input_file(args.config, "--config")
    fields = ("model", "weights", "output", "name", "batch", "seed", "phase", "plugins", "add_reset",
              "forward_only", "override")
    flags = {f: getattr(args, f) for f in fields}
    flags["set"] = parse_assignments(args.set_values, "--set") or None
    flags["context"] = list(args.context) or None
    flags["time_steps"] = _time_steps(args.time_steps)
    flags["strict"] = args.strict
    flags["dims"] = parse_dims(args.dims, "convert", ranges=False) or None
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


def run(args: argparse.Namespace) -> int:
    from rnnrt.importers.api import convert

    opts = _import_options(args)
    if args.list_layers:
        return _list_layers(opts.plugins)
    if opts.model is None:
        raise ConfigError(fmt("convert", "No model given", "rnnrt convert DEPLOY.prototxt [WEIGHTS.caffemodel] -o DIR"))
    done = convert(opts.model, opts.weights, opts.output, name=opts.name, batch=opts.batch, seed=opts.seed,
                   phase=opts.phase, plugins=opts.plugins, add_reset=opts.add_reset, forward_only=opts.forward_only,
                   override=opts.override, constants=opts.set, context=opts.context, time_steps=opts.time_steps,
                   strict=opts.strict, dims=opts.dims, check=not opts.no_check, check_steps=opts.check_steps,
                   check_reference=opts.check_reference, progress=sys.stderr.isatty())
    step = done.step_graph
    print(f"wrote {done.model} and {done.config}")
    if step.checks is not None:
        print(f"  {step.checks.summary()}")
    for s in step.states:
        print(f"  state {s.input} -> {s.output} {dims_text(s.shape)}")
    if step.continuation is not None:
        print(f"  continuation input {step.continuation.input!r} (filled by the Session when omitted)")
    for note in step.notes:
        print(f"  note: {note}")
    return 0


def _list_layers(plugin_paths: list[str]) -> int:
    from rnnrt.importers.caffe.plugins import layer_table, load_plugins

    load_plugins(plugin_paths)
    rows = layer_table("caffe")
    print(table(["layer type", "origin", "source"], [list(r) for r in rows]))
    return 0


COMMAND = Subcommand(
    "convert",
    help="Caffe prototxt + caffemodel (or ONNX) -> ONNX step graph + YAML config.",
    description="Converts a model into an ONNX step graph whose recurrent state is explicit inputs/outputs, "
    "and writes DIR/NAME.onnx and DIR/NAME.yaml (the model config every later command reads). "
    "Python: rnnrt.convert(...).",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt convert deploy.prototxt weights.caffemodel -o out/\n"
    "rnnrt convert deploy.prototxt -o out/ --batch dynamic     # random weights, symbolic stream axis\n"
    "rnnrt convert lstm.onnx -o out/ --add-reset\n"
    "rnnrt convert silero_vad.onnx -o vad/ --set sr=16000 --context input:64   # constants folded, context as state\n"
    "rnnrt convert --config import.yaml -o other/              # options from YAML, flags override\n"
    "rnnrt convert --plugins plugins/ --list-layers",
)
