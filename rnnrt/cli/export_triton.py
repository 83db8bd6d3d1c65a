"""``rnnrt export-triton``: writes a Triton model repository entry for a model config."""

from __future__ import annotations

import argparse

from rnnrt.cli.args import POSITIVE, Subcommand, add_dim, add_output, parse_dims
from rnnrt.cli.triton_model import add_triton_model_group, request_limits


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config (DIR/model.yaml).")
    add_output(p, "Triton model repository directory.", required=True, metavar="REPO")
    p.add_argument("--engine", choices=["plan", "onnx", "python"], default="plan",
                   help="plan: the built TensorRT plan (backend tensorrt); onnx: the step graph (backend onnxruntime); "
                   "python: rnnrt's StreamPool in Triton's python backend (what `rnnrt serve` runs).")
    p.add_argument("--name", default=None, help="Triton model name, a plain name (default: the config's directory name).")
    p.add_argument("--max-batch-size", type=POSITIVE, default=None, metavar="N",
                   help="plan/onnx: default the plan's profile max, or 64 for a dynamic batch without a profile.")
    add_dim(p, ranges=True, help="plan engine: range of a dynamic non-batch dim for the plan rebuilt around the "
            "Triton layout: NAME=MIN:OPT:MAX, or NAME=N for one size (e.g. --dim chunk=512); repeatable.")
    add_triton_model_group(p)


def run(args: argparse.Namespace) -> int:
    from rnnrt.paths import check_input_file, check_name
    from rnnrt.serve.triton import export_triton

    check_input_file(args.config, "Config")
    if args.name is not None:
        check_name(args.name, "--name")
    model_dir = export_triton(args.config, args.output, engine=args.engine, name=args.name,
                              max_batch_size=args.max_batch_size, idle_us=args.idle_us,
                              instance_kind=args.instance_kind, max_sequences=args.max_sequences,
                              backend=args.backend, queue_delay_us=args.queue_delay_us, shared=dict(args.shared),
                              dims=parse_dims(args.dim, "export-triton", ranges=True), **request_limits(args))
    print(f"wrote {model_dir / 'config.pbtxt'} and {model_dir / '1'}")
    return 0


COMMAND = Subcommand(
    "export-triton",
    help="Write a Triton model repository entry (sequence batching) for a model config.",
    description="Writes REPO/NAME/config.pbtxt and REPO/NAME/1/ (into a temporary folder, moved into place when "
    "complete: a failure leaves nothing behind). --engine python: Triton's python backend runs "
    "an rnnrt StreamPool behind the sequence batcher (oldest strategy, START/END/READY/CORRID; docs/serving.md). "
    "plan/onnx: Triton's tensorrt/onnxruntime backends with implicit state (direct strategy, START -> "
    "continuation input).",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt export-triton out/model.yaml -o triton_repo/ --engine python --name lm --max-sequences 128\n"
    "rnnrt export-triton out/model.yaml -o triton_repo/ --engine onnx --name lm\n"
    "rnnrt export-triton vad/model.yaml -o triton_repo/ --dim chunk=512   # the plan engine needs every dim's range",
)
