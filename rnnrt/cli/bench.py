"""``rnnrt bench``: times ``Session.step`` (or ``step_chunk``) on random frames with the config's shapes."""

from __future__ import annotations

import argparse
import os

from rnnrt.cli.args import (NON_NEGATIVE, POSITIVE, Subcommand, add_dim, add_json, add_session_group, add_shared,
                            alias, parse_dims)
from rnnrt.cli.output import check_json_target, report
from rnnrt.errors import ConfigError, fmt

SCHEMA = "rnnrt.bench/1"
"""``schema`` of ``rnnrt bench --json``."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config.")
    p.add_argument("--steps", type=POSITIVE, default=500, metavar="N", help="Timed steps per round (default: 500).")
    p.add_argument("--chunk", type=POSITIVE, default=1, metavar="K",
                   help="Frames per call: K > 1 times Session.step_chunk with K frames (a server's multi-frame "
                        "request) and reports per frame (default: 1, Session.step).")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=50, metavar="N", help="Untimed steps first (default: 50).")
    p.add_argument("--rounds", type=POSITIVE, default=3, metavar="N",
                   help="Rounds; the median of round medians is reported (default: 3).")
    add_dim(p, ranges=False, help="Size of a dynamic non-batch dim, by name (e.g. --dim chunk=512); repeatable.")
    add_shared(p, "Value of an input fed every step instead of random frames (e.g. --shared sr=16000; VALUE is a "
               "JSON number or list); repeatable.", deprecated_set=True)
    add_session_group(p)
    alias(p, "--batch", "streams", "--streams", type=POSITIVE, metavar="N")
    p.add_argument("--plot", default=None, metavar="PNG", help="Draw the step-latency histogram (needs matplotlib).")
    add_json(p, SCHEMA)


def _frame(cfg, batch_size: int, sizes: dict[str, int], values: dict) -> dict:
    """One frame with the config's real shapes: the batch axis is the batch size, other dynamic dims come
    from ``--dim``; float inputs are random, other inputs take their ``--shared`` value."""
    import numpy as np

    unknown = sorted(set(values) - {t.name for t in cfg.inputs})
    if unknown:
        raise ConfigError(fmt(f"--shared {unknown[0]}", "Names no input of the model",
                              f"Inputs: {[t.name for t in cfg.inputs]}."))
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
                                  f"Give its value with --shared {t.name}=VALUE (or fold it at convert time with "
                                  "`rnnrt convert --set`)."))
    return frame


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from rnnrt.ir.config import load_config
    from rnnrt.paths import check_input_file
    from rnnrt.runtime.session import load

    check_input_file(args.config, "Config")
    check_json_target(args.json)
    sizes = parse_dims(args.dim, "bench", ranges=False)
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
    with load(cfg, backend=args.backend, **kw) as session:
        frame = _frame(cfg, session.batch_size, sizes, dict(args.shared))
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
        median, p10, p90, p99 = (float(np.median(medians) * 1e6), *(float(np.percentile(us, q)) for q in (10, 90, 99)))
        per = "step" if k == 1 else f"frame (calls of {k} frames: step_chunk)"
        text = (f"{session!r}\n"
                f"{'steps' if k == 1 else 'calls'} {args.rounds} x {args.steps}, batch {session.batch_size}: "
                f"median {median:.1f} us/{per} (rounds {', '.join(f'{m * 1e6:.1f}' for m in medians)}), "
                f"p10 {p10:.1f}, p90 {p90:.1f}, p99 {p99:.1f} us")
        engine = type(session.engine).__name__
        data = {"schema": SCHEMA, "config": str(args.config), "engine": engine, "session": repr(session),
                "batch": session.batch_size, "chunk": k, "steps": args.steps, "rounds": args.rounds,
                "warmup": args.warmup, "median_us": median, "round_medians_us": [m * 1e6 for m in medians],
                "p10_us": p10, "p90_us": p90, "p99_us": p99}
        report(text, data, args.json)
        if args.plot:
            from rnnrt.runtime.plots import latency_histogram

            latency_histogram(us, args.plot, f"rnnrt bench {os.path.basename(args.config)}: "
                              f"{engine}, batch {session.batch_size}, {args.rounds} x {args.steps} steps")
            if args.json != "-":
                print(f"plot -> {args.plot}")
    return 0


COMMAND = Subcommand(
    "bench",
    help="Time Session.step on a model config with random frames (host time per step).",
    description="Streams random frames through a Session and reports per-step host latency (median and "
    "percentiles over several rounds). The continuation input is left to the Session.",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt bench out/model.yaml\n"
    "rnnrt bench out/model.yaml --streams 64 --steps 200 --rounds 5 --threads 1 --json bench.json\n"
    "rnnrt bench out/model.yaml --streams 64 --chunk 8   # 8 frames a call (step_chunk), time per frame\n"
    "rnnrt bench vad/model.yaml --streams 64 --dim chunk=512 --shared sr=16000   # a dynamic dim needs a size",
)
