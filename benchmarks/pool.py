"""StreamPool benchmark: ``pool.step`` vs one raw whole-batch ``Session.step``, plus a churn soak.

Throughput (``--device cpu`` or ``gpu``, ``--streams 256 1024``): three sides per stream count, each with
its own Session of batch N:

- ``raw``: ``Session.step`` with one ready (1, N, 256) numpy array (the whole batch).
- ``pool 100 %``: ``pool.step`` with N per-stream (1, 1, 256) frames (every stream has a frame, in slot
  order): the pool packs them (straight into the Session's input buffer), runs one ``Session.step``
  and cuts N per-stream outputs.
- ``pool 90 %``: ``pool.step`` where a random 10 % of the streams have no frame (8 patterns, cycled):
  ``Session.step(feeds, slots=...)`` of the other 90 %, the absent streams' state untouched.
- ``batch 100 %`` / ``batch 90 %``: the same through ``pool.step_batch(ids, packed)``, the frames already
  packed as one batch per pattern (as the raw side's), the outputs one batch array per output.
- ``chunk 90 %`` (``--chunk K``): ``pool.step_chunk(ids, packed K frames)`` of the 90 % patterns; its time
  is per frame (one call / K), so its ratio compares a frame of a chunk with one raw step.

CPU: the ``lstm2_bench`` ONNX model (2-layer LSTM, input 256, hidden 512, T=1) on ONNX Runtime with a
dynamic batch (the 90 % step runs 90 % of the rows). GPU: the same net as a Caffe model on the torch
stand-in engine (tests/engines/standin.py), fixed batch N, CUDA graphs, swap feedback, numpy outputs
(the 90 % step runs the whole batch and feeds back only the stepped slots). Rounds alternate the sides
in a rotating order; the table gives the median over rounds of each round's median step time and
the pool/raw throughput ratio (raw time / pool time) with its per-round range.

Soak: ``--soak-steps`` pool steps of a small model with streams opening, closing, resetting, going
idle, being snapshotted and restored and expiring (fake clock), checking the process RSS at the start
and the end (after a warm-up) so that a leak per step shows.

Usage::

    python benchmarks/pool.py [--device cpu] [--streams 256 1024] [--threads 2] [--rounds 5] [--soak-steps 0]
    python benchmarks/pool.py --device gpu --streams 256 1024 --soak-steps 0 [--chunk 8]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnrt  # noqa: E402
from rnnrt.runtime.pool import StreamPool, StreamState  # noqa: E402
from tests.models import MODELS  # noqa: E402



def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_step(fn, steps: int) -> float:
    times = []
    clock = time.perf_counter
    for _ in range(steps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def _sessions(device: str, streams: int, tmp: Path, threads: int):
    """A factory of Sessions of batch ``streams`` on the chosen device (same model for every side)."""
    if device == "cpu":
        path = MODELS["lstm2_bench"](batch="batch", input_size=256, hidden=512).save(tmp / "m")
        return lambda: rnnrt.load(path, backend="onnxruntime", threads=threads, batch_size=streams)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_step import write_model  # noqa: E402 (GPU only: imports torch)

    from rnnrt.ir.config import load_config
    from rnnrt.runtime.session import Session
    from tests.engines.standin import StandinEngine

    proto, weights, yaml = write_model(tmp, streams)
    cfg = load_config(yaml)
    engine = StandinEngine(proto, weights)
    engine.activate()
    return lambda: Session(cfg, engine, feedback="swap", cuda_graph=True)


def throughput(device: str, streams: int, threads: int, rounds: int, seconds: float,
               copy_modes: tuple = (), chunk: int = 0) -> dict:
    """Median step time (µs) of each side, and per-round raw/pool ratios."""
    rng = np.random.default_rng(0)
    frames = {i: rng.uniform(-1, 1, (1, 1, 256)).astype(np.float32) for i in range(streams)}
    x = np.concatenate(list(frames.values()), axis=1)
    patterns = []
    for k in range(8):
        absent = set(rng.choice(streams, streams // 10, replace=False).tolist())
        patterns.append({i: f for i, f in frames.items() if i not in absent})
    # step_batch: the same frames already packed, one (ids, batch) per pattern.
    all_ids = tuple(frames)
    packed = [(tuple(p), np.concatenate(list(p.values()), axis=1)) for p in patterns]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        make = _sessions(device, streams, Path(tmp), threads)
        raw = stack.enter_context(make())
        full, partial = StreamPool(stack.enter_context(make())), StreamPool(stack.enter_context(make()))
        batch_full, batch_partial = StreamPool(stack.enter_context(make())), StreamPool(stack.enter_context(make()))
        for pool in (full, partial, batch_full, batch_partial):
            for i in frames:
                pool.open(i)
        k = [0]

        def stepper(pool):
            def pool90():
                k[0] += 1
                pool.step(patterns[k[0] & 7])
            return pool90

        def batch90():
            k[0] += 1
            batch_partial.step_batch(*packed[k[0] & 7])

        sides = {"raw": lambda: raw.step(x), "pool 100 %": functools.partial(full.step, frames),
                 "pool 90 %": stepper(partial), "batch 100 %": functools.partial(batch_full.step_batch, all_ids, x),
                 "batch 90 %": batch90}
        per_call = {name: 1 for name in sides}
        if chunk:
            chunk_pool = StreamPool(stack.enter_context(make()))
            for i in frames:
                chunk_pool.open(i)
            chunks = [(ids, np.ascontiguousarray(np.broadcast_to(b, (chunk,) + b.shape))) for ids, b in packed]

            def chunk90():
                k[0] += 1
                chunk_pool.step_chunk(*chunks[k[0] & 7])

            sides["chunk 90 %"], per_call["chunk 90 %"] = chunk90, chunk
        executor = getattr(partial.session, "executor", None)
        print(f"  {streams} streams: many-row copies via {getattr(executor, 'copy_path', 'host')!r}", flush=True)
        for mode in copy_modes:  # the same with the row copies forced to one path
            os.environ["RNNRT_BATCH_COPY"] = mode
            try:
                other = StreamPool(stack.enter_context(make()))
            finally:
                del os.environ["RNNRT_BATCH_COPY"]
            for i in frames:
                other.open(i)
            sides[f"pool 90 % [{mode}]"] = stepper(other)
        for fn in sides.values():
            _median_step(fn, 10)
        per = _median_step(sides["raw"], 10)
        steps = max(10, int(seconds / per))
        medians: dict[str, list] = {name: [] for name in sides}
        order = list(sides)
        for r in range(rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                medians[name].append(_median_step(sides[name], max(3, steps // per_call.get(name, 1)))
                                     / per_call.get(name, 1))
    result = {name: statistics.median(m) * 1e6 for name, m in medians.items()}
    for name in sides:
        result[name + " ratios"] = [a / b for a, b in zip(medians["raw"], medians[name])]
    result["steps"] = steps
    return result


def soak(steps: int, batch: int, threads: int, report_every: int) -> tuple[float, float, float, float]:
    """Returns (RSS after warm-up, RSS at the end, seconds, pool steps per second)."""
    now = [0.0]
    with tempfile.TemporaryDirectory() as tmp:
        path = MODELS["lstm2_bench"](batch="batch", input_size=16, hidden=32).save(Path(tmp) / "m")
        rng = np.random.default_rng(1)
        bank = rng.uniform(-1, 1, (64, 1, 1, 16)).astype(np.float32)
        with rnnrt.load(path, backend="onnxruntime", threads=threads, batch_size=batch) as s, \
                rnnrt.load(path, backend="onnxruntime", threads=threads, batch_size=batch) as s2:
            pool = StreamPool(s, idle_timeout=50.0, clock=lambda: now[0])
            other = StreamPool(s2)
            next_id = 0
            warm = min(2000, steps // 10)
            start_rss = t0 = None
            for k in range(steps):
                if k == warm:
                    gc.collect()
                    start_rss, t0 = rss_mib(), time.perf_counter()
                now[0] += 1.0
                open_ids = list(pool)
                # Churn: open new streams, close some, reset some, move one through bytes now and then.
                for _ in range(int(rng.integers(0, 3))):
                    if pool.free_slots:
                        pool.open(next_id)
                        next_id += 1
                if open_ids and rng.random() < 0.3:
                    pool.close(open_ids[int(rng.integers(len(open_ids)))], missing_ok=True)
                if open_ids and rng.random() < 0.1:
                    sid = open_ids[int(rng.integers(len(open_ids)))]
                    if sid in pool:
                        pool.reset(sid)
                if open_ids and k % 97 == 0:
                    sid = open_ids[0]
                    if sid in pool:
                        blob = pool.snapshot(sid).to_bytes()
                        pool.close(sid)
                        other.restore(sid, StreamState.from_bytes(blob))
                        pool.restore(sid, other.snapshot(sid))
                        other.close(sid)
                # About 80 % of the open streams have a frame this tick; the rest stay idle (some expire).
                live = [sid for sid in pool if rng.random() < 0.8 and sid % 5 != 0]
                pool.step({sid: bank[(k + i) % 64] for i, sid in enumerate(live)})
                if report_every and k and k % report_every == 0:
                    print(f"  soak step {k}: {len(pool)} streams open, RSS {rss_mib():.1f} MiB", flush=True)
            elapsed = time.perf_counter() - t0
            gc.collect()
            end_rss = rss_mib()
    return start_rss, end_rss, elapsed, (steps - warm) / elapsed


def machine(device: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    text = f"CPU {cpu} ({os.cpu_count()} vCPUs), Python {platform.python_version()}, numpy {np.__version__}"
    if device == "gpu":
        import torch

        text = f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}; " + text
    else:
        import onnxruntime

        text += f", onnxruntime {onnxruntime.__version__}"
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--streams", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (CPU).")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.5, help="Target time per side per round.")
    p.add_argument("--soak-steps", type=int, default=0, help="0 skips the soak.")
    p.add_argument("--copy-modes", nargs="*", default=[], choices=["kernel", "batch", "loop"],
                   help="GPU: also time the 90 %% step with the row copies forced to these paths.")
    p.add_argument("--soak-batch", type=int, default=64)
    p.add_argument("--chunk", type=int, default=0, metavar="K",
                   help="Also time pool.step_chunk of K frames (90 %% present), per frame (default: off).")
    args = p.parse_args(argv)

    print(f"machine: {machine(args.device)}", flush=True)
    rows = []
    for streams in args.streams:
        res = throughput(args.device, streams, args.threads, args.rounds, args.seconds, tuple(args.copy_modes),
                         args.chunk)
        rows.append((streams, res))
        print(f"{streams} streams: " + ", ".join(f"{k} {v:.0f} us" for k, v in res.items()
                                                  if isinstance(v, float)), flush=True)
    print()
    print("| streams | raw `Session.step` µs | `pool.step` 100 % µs | vs raw | `pool.step` 90 % µs | vs raw "
          "| `pool.step_batch` 100 % µs | vs raw | `pool.step_batch` 90 % µs | vs raw | steps × rounds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for streams, res in rows:
        cells = [str(streams), f"{res['raw']:.0f}"]
        for name in ("pool 100 %", "pool 90 %", "batch 100 %", "batch 90 %"):
            r = res[name + " ratios"]
            cells += [f"{res[name]:.0f}", f"**{res['raw'] / res[name]:.2f}×** ({min(r):.2f}–{max(r):.2f})"]
        cells.append(f"{res['steps']} × {args.rounds}")
        print("| " + " | ".join(cells) + " |")
    for streams, res in rows:
        if args.chunk:
            r = res["chunk 90 %" + " ratios"]
            print(f"{streams} streams, pool.step_chunk of {args.chunk} frames, 90 %: {res['chunk 90 %']:.0f} us per "
                  f"frame, {res['raw'] / res['chunk 90 %']:.2f}x raw ({min(r):.2f}-{max(r):.2f})")
        for mode in args.copy_modes:
            name = f"pool 90 % [{mode}]"
            r = res[name + " ratios"]
            print(f"{streams} streams, {name}: {res[name]:.0f} us, {res['raw'] / res[name]:.2f}x raw "
                  f"({min(r):.2f}-{max(r):.2f})")

    if args.soak_steps:
        print()
        print(f"soak: {args.soak_steps} pool steps, pool of batch {args.soak_batch}, streams churning ...", flush=True)
        start, end, secs, rate = soak(args.soak_steps, args.soak_batch, 1, max(1, args.soak_steps // 10))
        print(f"soak: RSS after warm-up {start:.1f} MiB, at the end {end:.1f} MiB ({end - start:+.1f} MiB); "
              f"{secs:.0f} s, {rate:.0f} pool steps/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
