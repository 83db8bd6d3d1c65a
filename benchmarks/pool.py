"""StreamPool benchmark: 256 streams through a pool of batch 256 vs one raw batch-256 ``Session.step``,
plus a churn soak (``python benchmarks/pool.py``).

Throughput: every stream has a frame every tick, so the pool packs 256 per-stream frames, runs one
``Session.step`` and cuts 256 per-stream outputs; the raw side feeds one ready (1, 256, I) array.
Both sides run the same model (tests/models ``lstm2_bench``: 2-layer LSTM, T=1) in two Sessions with
the same ONNX Runtime options. Rounds alternate between the sides so that noise on a shared VM hits
both alike; the table reports the median over rounds of each round's median step time.

Soak: ``--soak-steps`` pool steps of a small model with streams opening, closing, resetting, going
idle, being snapshotted and restored and expiring (fake clock), checking the process RSS at the start
and the end (after a warm-up) so that a leak per step shows.

Usage::

    python benchmarks/pool.py [--threads 2] [--hidden 512 128] [--rounds 7] [--soak-steps 100000]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnrt  # noqa: E402
from rnnrt.pool import StreamPool, StreamState  # noqa: E402
from tests.models import MODELS  # noqa: E402

STREAMS = 256


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
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(hidden: int, input_size: int, threads: int, rounds: int, seconds: float) -> tuple:
    with tempfile.TemporaryDirectory() as tmp:
        path = MODELS["lstm2_bench"](batch=STREAMS, input_size=input_size, hidden=hidden).save(Path(tmp) / "m")
        rng = np.random.default_rng(0)
        frames = {f"s{i}": rng.uniform(-1, 1, (1, 1, input_size)).astype(np.float32) for i in range(STREAMS)}
        x = np.concatenate(list(frames.values()), axis=1)
        with rnnrt.load(path, backend="onnxruntime", threads=threads) as raw, \
                rnnrt.load(path, backend="onnxruntime", threads=threads) as pooled:
            pool = StreamPool(pooled)
            for sid in frames:
                pool.open(sid)
            raw_step = lambda: raw.step(x)  # noqa: E731
            pool_step = lambda: pool.step(frames)  # noqa: E731
            per = _median_step(raw_step, 10)
            _median_step(pool_step, 10)
            steps = max(10, int(seconds / per))
            r_med, p_med = [], []
            for _ in range(rounds):
                r_med.append(_median_step(raw_step, steps))
                p_med.append(_median_step(pool_step, steps))
    r_us, p_us = statistics.median(r_med) * 1e6, statistics.median(p_med) * 1e6
    return r_us, p_us, steps


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 128], help="LSTM hidden sizes to measure.")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0.5, help="Target time per side per round.")
    p.add_argument("--soak-steps", type=int, default=100_000, help="0 skips the soak.")
    p.add_argument("--soak-batch", type=int, default=64)
    args = p.parse_args(argv)

    rows = []
    for hidden in args.hidden:
        r_us, p_us, steps = throughput(hidden, args.input_size, args.threads, args.rounds, args.seconds)
        rows.append((hidden, r_us, p_us, steps))
        print(f"hidden {hidden}: raw Session.step {r_us:9.1f} us  pool.step {p_us:9.1f} us  "
              f"pool throughput {r_us / p_us:.3f} x raw", flush=True)
    print()
    print(f"| model (2-layer LSTM, input {args.input_size}, T=1) | threads | raw batch-{STREAMS} `Session.step` µs "
          f"| `pool.step` of {STREAMS} streams µs | pool throughput vs raw | steps × rounds |")
    print("|---|---|---|---|---|---|")
    for hidden, r_us, p_us, steps in rows:
        print(f"| hidden {hidden} | {args.threads} | {r_us:.0f} | {p_us:.0f} | {r_us / p_us:.3f}× "
              f"({p_us - r_us:+.0f} µs/step) | {steps} × {args.rounds} |")

    if args.soak_steps:
        print()
        print(f"soak: {args.soak_steps} pool steps, pool of batch {args.soak_batch}, streams churning ...", flush=True)
        start, end, secs, rate = soak(args.soak_steps, args.soak_batch, 1, max(1, args.soak_steps // 10))
        print(f"soak: RSS after warm-up {start:.1f} MiB, at the end {end:.1f} MiB ({end - start:+.1f} MiB); "
              f"{secs:.0f} s, {rate:.0f} pool steps/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
