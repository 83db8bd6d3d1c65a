"""``rnnrt verify``: runs :func:`rnnrt.verify` and prints (or writes) its report."""

from __future__ import annotations

import argparse

from rnnrt.cli.args import NON_NEGATIVE, POSITIVE, Subcommand, add_dim, add_json, add_shared, parse_dims
from rnnrt.cli.output import check_json_target, report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config.")
    p.add_argument("--backends", default=None, metavar="B1,B2,...",
                   help="Backends, each BASE[:key=value]...: onnxruntime[:opt=disable|basic|extended|all][:graph=plan], "
                   "tensorrt[:plan=PATH][:runtime=MODULE][:runtime_cache=PATH], or module.path:callable (your engine "
                   "factory); every one also takes :feedback=copy|swap, :cuda_graph=0|1, :label=NAME, :precision=P. "
                   "Default: onnxruntime,tensorrt where a plan and a GPU exist, else onnxruntime.")
    p.add_argument("--feed", default=None, metavar="NPZ",
                   help="Frames (call{k}/{input}) and recorded outputs (call{k}/{output}, compared too), e.g. a Caffe "
                   "io.npz. Without it a stream is generated from the config's shapes.")
    p.add_argument("--steps", type=POSITIVE, default=100, metavar="N", help="Steps of a generated stream (default: 100).")
    p.add_argument("--streams", type=POSITIVE, default=None, metavar="N",
                   help="Streams (batch) of a generated stream (default: the static batch, or 1).")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, metavar="S", help="Seed of a generated stream (default: 0).")
    add_dim(p, ranges=False, help="Size of another dynamic dim of a generated stream (e.g. --dim T=8); repeatable.")
    add_shared(p, "Hold an input of a generated stream at one value every step (e.g. --shared sr=16000; VALUE is a "
               "JSON number or list); repeatable.", deprecated_set=True)
    p.add_argument("--reset-at", action="append", default=[], metavar="STEP[,STEP]|STEP:SLOT[,SLOT]",
                   help="Reset every stream (or the given slots) of every backend before that step; repeatable.")
    p.add_argument("--atol", type=float, default=None, help="Absolute tolerance (default by precision).")
    p.add_argument("--rtol", type=float, default=None, help="Relative tolerance (default by precision).")
    p.add_argument("--precision", choices=["fp32", "tf32", "fp16", "bf16"], default=None,
                   help="Precision whose default tolerances apply (default: the lowest of the backends; fp32 1e-4/1e-3, "
                   "tf32 1e-3/1e-2, fp16 2e-3/1e-2, bf16 2e-2/5e-2).")
    p.add_argument("--plan", default=None, metavar="PLAN", help="The plan, when not the config's default (CONFIG.plan).")
    p.add_argument("--no-state", dest="state", action="store_false", help="Compare outputs only, not the carried state.")
    add_json(p, "rnnrt.verify/1")
    p.add_argument("--plot", default=None, metavar="PNG", help="Draw the error per step and tensor (needs matplotlib).")


def run(args: argparse.Namespace) -> int:
    from rnnrt.runtime.verify import parse_resets
    from rnnrt.runtime.verify_api import verify

    check_json_target(args.json)
    checked = verify(args.config, args.backends, feed=args.feed, steps=args.steps, streams=args.streams,
                     seed=args.seed, resets=parse_resets(args.reset_at), dims=parse_dims(args.dim, "verify", ranges=False),
                     shared=dict(args.shared), atol=args.atol, rtol=args.rtol, precision=args.precision, plan=args.plan,
                     state=args.state)
    report(checked.table(), checked.to_json(), args.json)
    if args.plot:
        checked.plot(args.plot)
    return 0 if checked.passed else 1


COMMAND = Subcommand(
    "verify",
    help="Run one stream through two or more backends side by side and compare every step.",
    description="Runs the same frames through every backend (each its own Session, state carried, resets where "
    "asked) and reports per output and carried state the max abs/rel error and the first step beyond "
    "--atol/--rtol; every backend is also compared with the outputs recorded in --feed. Exit status 0: within "
    "tolerance; 1: beyond it; 2: an error. The first thing to run on a new GPU. Python: rnnrt.verify(...).",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt verify out/model.yaml                           # onnxruntime,tensorrt where a plan and a GPU exist\n"
    "rnnrt verify out/model.yaml --streams 64 --steps 500 --reset-at 100,300 --reset-at 200:0,5\n"
    "rnnrt verify out/model.yaml --feed io.npz             # against a recording (a Caffe io.npz)\n"
    "rnnrt verify vad/model.yaml --dim chunk=512 --shared sr=16000\n"
    "rnnrt verify out/model.yaml --backends onnxruntime,onnxruntime:opt=disable --json r.json --plot err.png",
)
