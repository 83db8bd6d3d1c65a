"""StreamPool benchmark: 256 streams through a pool of batch 256 vs one raw batch-256 ``Session.step``,
plus a churn soak (``python benchmarks/pool.py``).

Throughput: every stream has a frame every tick, so the pool packs 256 per-stream frames, runs one
``Session.step`` and cuts 256 per-stream outputs; the raw side feeds one ready (1, 256, I) array.
Both sides run the same model (tests/models ``lstm2_bench``: 2-layer LSTM, T=1) in two Sessions with
the same ONNX Runtime options. Rounds alternate between the sides so that noise on a shared VM hits
both alike (the order of the sides rotates from round to round); the table reports the median over
rounds of each round's median step time, and the range of the per-round pool/raw ratios.

Pool work alone: ``pool.step`` of the 256 streams on a stand-in Session whose ``step`` returns a
cached result, i.e. the pool's own packing, bookkeeping and unpacking without the engine.

Soak: ``--soak-steps`` pool steps of a small model with streams opening, closing, resetting, going
idle, being snapshotted and restored and expiring (fake clock), checking the process RSS at the start
and the end (after a warm-up) so that a leak per step shows.

``--compare OLD_POOL_PY`` adds a third side, another ``StreamPool`` implementation on its own Session,
in the same rounds (before/after comparisons on a noisy machine).

Usage::

    python benchmarks/pool.py [--threads 2] [--hidden 512 128] [--rounds 7] [--soak-steps 100000]
    git show REV:rnnrt/runtime/pool.py > /tmp/old_pool.py && python benchmarks/pool.py --compare /tmp/old_pool.py
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import os
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

STREAMS = 256


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CachedSession:
    """A Session stand-in whose step returns one cached result: ``pool.step`` on it times the pool's own work."""

    def __init__(self, session: rnnrt.Session, frame: np.ndarray) -> None:
        self.config, self.batch_size = session.config, session.batch_size
        self._session = session
        self._outs = {k: np.array(v) for k, v in session.step(frame).items()}

    def step(self, feeds: dict) -> dict:
        return self._outs

    def reset(self, slots=None) -> None:
        self._session.reset(slots)

    def read_state(self, slots) -> dict:
        return self._session.read_state(slots)

    def write_state(self, slots, values) -> None:
        self._session.write_state(slots, values)


def pool_work(hidden: int, input_size: int, rounds: int, other: type | None = None, steps: int = 500) -> dict:
    """Median µs of ``pool.step`` for 256 streams on a :class:`CachedSession` (no engine work), per pool class."""
    with tempfile.TemporaryDirectory() as tmp:
        path = MODELS["lstm2_bench"](batch=STREAMS, input_size=input_size, hidden=hidden).save(Path(tmp) / "m")
        rng = np.random.default_rng(0)
        frames = {f"s{i}": rng.uniform(-1, 1, (1, 1, input_size)).astype(np.float32) for i in range(STREAMS)}
        x = np.concatenate(list(frames.values()), axis=1)
        classes = {"pool": StreamPool, **({"other": other} if other is not None else {})}
        with rnnrt.load(path, backend="onnxruntime", threads=1) as session:
            sides = {}
            for name, cls in classes.items():
                pool = cls(CachedSession(session, x))
                for sid in frames:
                    pool.open(sid)
                sides[name] = functools.partial(pool.step, frames)
                _median_step(sides[name], 50)
            medians: dict[str, list] = {name: [] for name in sides}
            for _ in range(rounds):
                for name, fn in sides.items():
                    medians[name].append(_median_step(fn, steps))
    return {name: statistics.median(m) * 1e6 for name, m in medians.items()}


def _median_step(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_pool_class(path: str) -> type:
    """The ``StreamPool`` class of another pool.py (e.g. ``git show REV:rnnrt/runtime/pool.py > old_pool.py``)."""
    spec = importlib.util.spec_from_file_location("rnnrt_pool_compare", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.StreamPool


def throughput(hidden: int, input_size: int, threads: int, rounds: int, seconds: float,
               other: type | None = None) -> dict:
    """Median step time (µs) of each side, and the pool/raw ratio of every round.

    Sides: ``raw`` (one ready batch array), ``pool`` (this checkout's StreamPool) and, with ``other``,
    ``other`` (another StreamPool class). Each side has its own Session; every round runs each side once,
    in an order that rotates from round to round.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = MODELS["lstm2_bench"](batch=STREAMS, input_size=input_size, hidden=hidden).save(Path(tmp) / "m")
        rng = np.random.default_rng(0)
        frames = {f"s{i}": rng.uniform(-1, 1, (1, 1, input_size)).astype(np.float32) for i in range(STREAMS)}
        x = np.concatenate(list(frames.values()), axis=1)
        classes = {"pool": StreamPool, **({"other": other} if other is not None else {})}
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(rnnrt.load(path, backend="onnxruntime", threads=threads))
            sides = {"raw": lambda: raw.step(x)}
            for name, cls in classes.items():
                pool = cls(stack.enter_context(rnnrt.load(path, backend="onnxruntime", threads=threads)))
                for sid in frames:
                    pool.open(sid)
                sides[name] = functools.partial(pool.step, frames)
            per = _median_step(sides["raw"], 10)
            for fn in sides.values():
                _median_step(fn, 10)
            steps = max(10, int(seconds / per))
            medians: dict[str, list] = {name: [] for name in sides}
            order = list(sides)
            for k in range(rounds):
                for name in order[k % len(order):] + order[:k % len(order)]:
                    medians[name].append(_median_step(sides[name], steps))
    result = {name: statistics.median(m) * 1e6 for name, m in medians.items()}
    result["ratios"] = [r / p for r, p in zip(medians["raw"], medians["pool"])]
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 128], help="LSTM hidden sizes to measure.")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0.5, help="Target time per side per round.")
    p.add_argument("--soak-steps", type=int, default=100_000, help="0 skips the soak.")
    p.add_argument("--soak-batch", type=int, default=64)
    p.add_argument("--compare", metavar="POOL_PY", help="Also measure the StreamPool of this file in the same rounds "
                   "(e.g. an older rnnrt/runtime/pool.py from git show).")
    args = p.parse_args(argv)

    other = load_pool_class(args.compare) if args.compare else None
    rows = []
    for hidden in args.hidden:
        res = throughput(hidden, args.input_size, args.threads, args.rounds, args.seconds, other)
        rows.append((hidden, res))
        line = (f"hidden {hidden}: raw Session.step {res['raw']:9.1f} us  pool.step {res['pool']:9.1f} us  "
                f"pool throughput {res['raw'] / res['pool']:.3f} x raw (rounds {min(res['ratios']):.3f}"
                f"..{max(res['ratios']):.3f})")
        if other is not None:
            line += f"  compared pool.step {res['other']:9.1f} us ({res['raw'] / res['other']:.3f} x raw)"
        print(line, flush=True)
    work = pool_work(args.hidden[0], args.input_size, args.rounds, other)
    print(f"pool work alone (Session returning cached outputs): pool.step {work['pool']:.1f} us"
          + (f", compared pool.step {work['other']:.1f} us" if other is not None else ""), flush=True)
    print()
    extra = " | compared pool µs | compared vs raw" if other is not None else ""
    print(f"| model (2-layer LSTM, input {args.input_size}, T=1) | threads | raw batch-{STREAMS} `Session.step` µs "
          f"| `pool.step` of {STREAMS} streams µs | pool throughput vs raw | per-round range{extra} | steps × rounds |")
    print("|---|---|---|---|---|---|" + ("---|---|" if other is not None else "") + "---|")
    for hidden, res in rows:
        r_us, p_us = res["raw"], res["pool"]
        cells = [f"hidden {hidden}", str(args.threads), f"{r_us:.0f}", f"{p_us:.0f}",
                 f"{r_us / p_us:.3f}× ({p_us - r_us:+.0f} µs/step)", f"{min(res['ratios']):.3f}–{max(res['ratios']):.3f}"]
        if other is not None:
            cells += [f"{res['other']:.0f}", f"{r_us / res['other']:.3f}× ({res['other'] - r_us:+.0f} µs/step)"]
        cells.append(f"{res['steps']} × {args.rounds}")
        print("| " + " | ".join(cells) + " |")

    if args.soak_steps:
        print()
        print(f"soak: {args.soak_steps} pool steps, pool of batch {args.soak_batch}, streams churning ...", flush=True)
        start, end, secs, rate = soak(args.soak_steps, args.soak_batch, 1, max(1, args.soak_steps // 10))
        print(f"soak: RSS after warm-up {start:.1f} MiB, at the end {end:.1f} MiB ({end - start:+.1f} MiB); "
              f"{secs:.0f} s, {rate:.0f} pool steps/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
