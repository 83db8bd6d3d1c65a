"""``rnnrt build``: runs :func:`rnnrt.build` (and, with ``--verify``, :func:`rnnrt.verify` on the new plan)."""

from __future__ import annotations

import argparse

from rnnrt.cli.args import Subcommand, add_dim, add_json, add_output, add_trt_module, alias, int_at_least, parse_dims
from rnnrt.cli.output import binding_json, check_json_target, report

SCHEMA = "rnnrt.build/1"
"""``schema`` of ``rnnrt build --json``."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config (DIR/model.yaml).")
    add_output(p, "Plan file to write (default: the config's path with .plan).")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="Compute precision; fp16/bf16 rewrite the graph's compute and weights (default: fp32).")
    p.add_argument("--io-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="dtype of the user inputs/outputs (default: float32).")
    p.add_argument("--state-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="dtype of the recurrent state; float32 also keeps the state path in fp32 (default).")
    p.add_argument("--batch-profile", default=None, metavar="MIN:OPT:MAX",
                   help="Range of stream counts (batch) a dynamic-batch graph's plan accepts; N means N:N:N, "
                   "MIN:MAX means MIN:MIN:MAX (default 1:1:64).")
    alias(p, "--batch", "batch_profile", "--batch-profile", metavar="MIN:OPT:MAX")
    add_dim(p, ranges=True, help="Range of another dynamic dim, by name: NAME=MIN:OPT:MAX, or NAME=N for one size "
            "(e.g. --dim T=1:16:256); repeatable.")
    add_trt_module(p, "tensorrt if importable, else tensorrt_rtx")
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
    p.add_argument("--workspace", type=int_at_least(1, 2**40), default=None, metavar="MIB",
                   help="Workspace memory-pool limit in MiB.")
    p.add_argument("--opt-level", type=int, default=None, choices=range(6), metavar="0-5",
                   help="Builder optimization level 0-5.")
    p.add_argument("--layers", dest="layers", action="store_true",
                   help="Print the parsed network's layers and the engine layers the builder reports.")
    alias(p, "--verbose", "layers", "--layers (for more logging: rnnrt -v build)", nargs=0, const=True)
    add_json(p, SCHEMA)


def run(args: argparse.Namespace) -> int:
    from rnnrt.build.api import build

    check_json_target(args.json)
    r = build(args.config, args.output, precision=args.precision, io_dtype=args.io_dtype,
              state_dtype=args.state_dtype, batch_profile=args.batch_profile,
              dims=parse_dims(args.dim, "build", ranges=True), trt_module=args.trt_module,
              targets=(args.target or "").split(","), runtime_cache=True if args.runtime_cache == "" else args.runtime_cache,
              version_compatible=args.version_compatible, exclude_lean_runtime=args.exclude_lean_runtime,
              tf32=args.tf32, timing_cache=args.timing_cache, workspace_mib=args.workspace,
              optimization_level=args.opt_level, progress=True)
    prof = f", batch {r.profile[0]}:{r.profile[1]}:{r.profile[2]}" if r.profile else ""
    lines = [f"wrote {r.plan_path} ({len(r.plan) / 2**20:.1f} MiB; {r.flavour} {r.version}, {r.precision}{prof}) "
             f"in {r.parse_seconds + r.build_seconds:.2f} s; manifest {r.manifest.path}",
             f"  runs on {', '.join(r.manifest.runtimes)}" + (", version-compatible" if r.version_compatible else "")]
    lines += [f"  {b.describe()}" for b in r.bindings]
    if args.layers:
        lines.append(f"network layers ({len(r.layers)}):")
        lines += [f"  {layer.describe()}" for layer in r.layers]
        lines.append(f"engine layers ({len(r.engine_layers)}):")
        lines += [f"  {line}" for line in r.engine_layers]
    data = _to_json(r, args.layers)
    status = 0
    if args.verify:
        from rnnrt.runtime.verify_api import verify

        checked = verify(args.config, ["onnxruntime", "tensorrt"], plan=r.plan_path,
                         streams=r.profile[1] if r.profile else None)
        lines.append(checked.table())
        data["verify"] = checked.to_json()
        status = 0 if checked.passed else 1
    report("\n".join(lines), data, args.json)
    return status


def _to_json(r, layers: bool) -> dict:
    """The build result as ``rnnrt build --json`` reports it."""
    data = {
        "schema": SCHEMA,
        "plan": str(r.plan_path),
        "plan_bytes": len(r.plan),
        "manifest": str(r.manifest.path),
        "flavour": r.flavour,
        "version": r.version,
        "precision": r.precision,
        "io_dtype": r.io_dtype,
        "state_dtype": r.state_dtype,
        "profile": list(r.profile) if r.profile else None,
        "runtimes": list(r.manifest.runtimes),
        "version_compatible": r.version_compatible,
        "parse_seconds": r.parse_seconds,
        "build_seconds": r.build_seconds,
        "bindings": [binding_json(b) for b in r.bindings],
    }
    if layers:
        data["layers"] = [layer.describe() for layer in r.layers]
        data["engine_layers"] = list(r.engine_layers)
    return data


COMMAND = Subcommand(
    "build",
    help="Build a TensorRT engine (plan) from a model YAML config.",
    description="Parses the config's ONNX step graph with TensorRT (tensorrt if importable, else "
    "tensorrt_rtx), builds a plan with one optimization profile and records it for the config. "
    "Python: rnnrt.build(...).",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt build out/model.yaml\n"
    "rnnrt build out/model.yaml --batch-profile 1:8:64 --precision fp16 --verify\n"
    "rnnrt build out/model.yaml --version-compatible          # also runs on later TensorRT and the lean runtime\n"
    "rnnrt build out/model.yaml --dim T=1:16:256 --layers --json build.json",
)
