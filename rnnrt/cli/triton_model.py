"""The options of the Triton model that ``rnnrt export-triton`` and ``rnnrt serve`` write."""

from __future__ import annotations

import argparse

from rnnrt.cli.args import BACKEND_HELP, NON_NEGATIVE, POSITIVE, add_shared, backend_name


def add_triton_model_group(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("triton model")
    g.add_argument("--max-sequences", type=POSITIVE, default=None, metavar="N",
                   help="python engine: max_candidate_sequences = the StreamPool's slots (default: the plan's "
                   "profile max, or 64).")
    g.add_argument("--idle-us", type=POSITIVE, default=60_000_000, metavar="US",
                   help="max_sequence_idle_microseconds: a stream idle this long is released (default: 60 s).")
    g.add_argument("--queue-delay-us", type=NON_NEGATIVE, default=0, metavar="US",
                   help="python engine: max_queue_delay_microseconds of the oldest strategy (default: 0).")
    g.add_argument("--backend", type=backend_name, default="auto", metavar="NAME",
                   help=f"python engine: the backend of the Session inside the server: {BACKEND_HELP} (default: "
                   "auto = TensorRT when "
                   "a plan is built and a GPU is usable there, else ONNX Runtime).")
    g.add_argument("--instance-kind", choices=["auto", "KIND_GPU", "KIND_CPU"], default="auto",
                   help="Where Triton runs the model instances (default: auto = KIND_GPU when a GPU is usable "
                   "here, else KIND_CPU).")
    add_shared(g, "python engine: the value of an input without a batch axis (e.g. --shared sr=16000), fed "
               "with every step of every stream (repeatable; VALUE is a JSON number or list).")
    g.add_argument("--max-frames", type=POSITIVE, default=None, metavar="N",
                   help="python engine: the most frames one request may carry; more is refused (default: 16384).")
    g.add_argument("--max-request-bytes", type=POSITIVE, default=None, metavar="B",
                   help="python engine: the most input bytes one request may carry; more is refused "
                   "(default: 67108864 = 64 MiB).")


def request_limits(args: argparse.Namespace) -> dict:
    """--max-frames and --max-request-bytes, given only when set (export-triton --engine onnx/plan refuses them)."""
    return {k: v for k, v in (("max_frames", args.max_frames), ("max_request_bytes", args.max_request_bytes))
            if v is not None}
