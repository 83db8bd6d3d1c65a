"""Where the batcher's time goes on one core: the engine's ceiling and the batcher's per-frame phases
(``python benchmarks/batcher_profile.py``).

On the Silero VAD step graph of ``benchmarks/realtime.py`` (ONNX Runtime, one thread, the process pinned
to ``--core``):

* **Ceiling**: µs per step of ``k`` streams back to back, frames packed in advance, for ``k`` in
  ``--batches``: raw ``StreamPool.step_batch`` of a pool of ``--capacity`` slots (what one tick of the
  batcher runs) and the step graph alone (``InferenceSession.run``, no Session), in alternating rounds.
  A batcher that cost nothing could carry at most ``frames/s / 31.25`` streams with its tick at most
  ``--tick-ms`` long (a frame waits for at most the running tick, then its own: p99 <= 20 ms leaves ~10 ms).
* **Profile**: the real-time load of ``realtime.py`` (``--streams`` asyncio tasks awaiting
  ``batcher.step``, chunks every 32 ms + jitter) with thread-CPU-time counters around the batcher's
  phases: submit (check, copy, queue), take, pack, the engine, split, flush (``call_soon_threadsafe``),
  delivery in the loop (``_deliver``), the worker's waits; a task wake-up measured alone; and the CPU time of the event loop's thread
  and of the worker's. Per phase: µs per frame, the counters' own clock reads taken off. Then the same
  load with a step that answers at once: the load's own cost per frame (tasks, timers, bookkeeping),
  which any side pays; with it, the zero-overhead batcher's streams.

CPU time, not wall time: on one core the two threads take turns, and a phase's wall time would count
the other thread's turns.

Usage::

    python benchmarks/batcher_profile.py --core 1 --streams 320
    python benchmarks/batcher_profile.py --core 1 --skip-ceiling --streams 512 --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import rnnrt  # noqa: E402
from rnnrt.runtime import batch_targets as targets_mod  # noqa: E402
from rnnrt.runtime import batcher as batcher_mod  # noqa: E402
from rnnrt.runtime.pool import StreamPool  # noqa: E402
from realtime import CHUNK, PERIOD, Load, converted, drive  # noqa: E402


def ceiling(model: Path, capacity: int, batches: list, seconds: float) -> list:
    """Per batch k: µs per frame of raw ``pool.step_batch`` of k streams of a pool of ``capacity`` slots and
    of the step graph alone in ONNX Runtime (one thread), frames packed in advance; medians of 5 rounds
    (the two alternate)."""
    import onnxruntime as ort

    session = rnnrt.load(model, backend="onnxruntime", batch_size=capacity)
    pool = StreamPool(session)
    ids = list(range(capacity))
    for i in ids:
        pool.open(i)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    raw = ort.InferenceSession(str(model.parent / session.config.model), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in raw.get_outputs()]
    rng = np.random.default_rng(0)
    rows = []
    for k in batches:
        sel = tuple(ids[:k])
        x = rng.uniform(-0.5, 0.5, (k, CHUNK)).astype(np.float32)
        feeds = {a.name: np.zeros([d if isinstance(d, int) else CHUNK if d == "chunk" else k for d in a.shape],
                                  np.float32) for a in raw.get_inputs()}
        sides = {"pool": lambda: pool.step_batch(sel, x), "raw": lambda: raw.run(names, feeds)}
        times: dict = {name: [] for name in sides}
        for fn in sides.values():
            fn()
        for _ in range(5):
            for name, fn in sides.items():
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds / 10:
                    fn()
                    n += 1
                times[name].append((time.perf_counter() - t0) / n)
        rows.append((k, statistics.median(times["pool"]) * 1e6, statistics.median(times["raw"]) * 1e6))
    session.close()
    return rows


def print_ceiling(rows: list, capacity: int) -> None:
    print(f"ceiling: µs per step of k streams, back to back, ONNX Runtime 1 thread (pool: raw StreamPool.step_batch "
          f"of a {capacity}-slot pool; graph: InferenceSession.run of the step graph, no Session)")
    print(f"  {'k':>5s} {'pool us':>9s} {'us/frame':>9s} {'graph us':>9s} {'us/frame':>9s} {'frames/s (pool)':>16s} "
          f"{'streams':>8s}")
    for k, pool_us, raw_us in rows:
        rate = k / pool_us * 1e6
        print(f"  {k:5d} {pool_us:9.0f} {pool_us / k:9.2f} {raw_us:9.0f} {raw_us / k:9.2f} {rate:16.0f} "
              f"{rate * PERIOD:8.0f}")


def zero_overhead(rows: list, tick_ms: float, load_us: float = 0.0) -> tuple:
    """The most streams a batcher that costs nothing could carry: the best frames/s of a tick at most
    ``tick_ms`` long, with ``load_us`` of the application's own CPU per frame; (streams, batch)."""
    best = (0.0, 0)
    for k, pool_us, _ in rows:
        if pool_us <= tick_ms * 1e3:
            streams = 1e6 / ((pool_us / k + load_us) * (1 / PERIOD))
            best = max(best, (streams, k))
    return best


class Counters:
    """Thread CPU time and calls per phase (each phase runs in one thread), less the counters' own cost."""

    def __init__(self) -> None:
        self.time: dict = defaultdict(float)
        self.calls: dict = defaultdict(int)
        self.parent: dict = {}
        self.originals: list = []
        clock = time.thread_time
        t0 = clock()
        for _ in range(10000):
            clock()
        self.clock_cost = (clock() - t0) / 10000

    def wrap(self, owner, attr: str, phase: str, parent: str = "") -> None:
        fn = getattr(owner, attr)
        # A class or module keeps its function; an instance gets an attribute over its class's method.
        self.originals.append((owner, attr, vars(owner)[attr] if isinstance(owner, (type, types.ModuleType)) else None))
        self.parent[phase] = parent
        clock = time.thread_time  # CPU time of the calling thread: on one core wall time would count the other thread
        t, c = self.time, self.calls

        def timed(*args, **kwargs):
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                t[phase] += clock() - t0
                c[phase] += 1

        setattr(owner, attr, timed)

    def restore(self) -> None:
        for owner, attr, original in reversed(self.originals):
            if original is None:
                delattr(owner, attr)  # an instance attribute over the class's method
            else:
                setattr(owner, attr, original)
        self.originals.clear()

    def reset(self) -> None:
        self.time.clear()
        self.calls.clear()

    def corrected(self) -> dict:
        """Per phase, its time less its own clock read (one inside each call) and its children's two."""
        out = {}
        for phase, t in self.time.items():
            children = sum(self.calls[p] for p, parent in self.parent.items() if parent == phase)
            out[phase] = max(0.0, t - (self.calls[phase] + 2 * children) * self.clock_cost)
        return out


PHASES = [  # (phase, parent phase, thread)
    ("submit", "", "loop"), ("prepare", "submit", "loop"), ("deliver", "", "loop"),
    ("wait", "", "worker"), ("take", "", "worker"), ("tick", "", "worker"), ("pack", "tick", "worker"),
    ("engine", "tick", "worker"), ("session_step", "engine", "worker"), ("split", "tick", "worker"),
    ("flush", "tick", "worker"),
]
LABELS = {
    "submit": "submit: step() -> _submit (check, copy, queue)", "prepare": "  of which prepare (check + copy)",
    "deliver": "deliver: _deliver (set_result per future)", "wait": "wait: cond.wait for frames",
    "take": "take: _take (under the lock)", "tick": "tick: _tick", "pack": "  pack: _put_rows",
    "engine": "  engine: pool.step_batch", "session_step": "    of which Session.step",
    "split": "  split: pool.split", "flush": "  flush: call_soon_threadsafe",
}


def profile(model: Path, streams: int, seconds: float, jitter_ms: float, max_delay_ms: float) -> dict:
    """The real-time load on a batcher with counters around its phases; per phase µs per frame."""
    counters = Counters()
    B, T = batcher_mod, targets_mod
    try:
        counters.wrap(B.StreamBatcher, "_submit", "submit")
        counters.wrap(T.PoolTarget, "prepare", "prepare", "submit")
        counters.wrap(B.StreamBatcher, "_take", "take")
        counters.wrap(B.StreamBatcher, "_tick", "tick")
        counters.wrap(T, "_put_rows", "pack", "tick")
        counters.wrap(B.StreamBatcher, "_flush", "flush", "tick")
        counters.wrap(B, "_deliver", "deliver")
        session = rnnrt.load(model, backend="onnxruntime", batch_size=streams)
        pool = StreamPool(session)
        counters.wrap(pool, "step_batch", "engine", "tick")
        counters.wrap(session, "step", "session_step", "engine")
        counters.wrap(pool, "split", "split", "tick")
        batcher = B.StreamBatcher(pool, max_delay_ms=max_delay_ms)
        counters.wrap(batcher._cond, "wait", "wait")
        name = session.output_names[0]

        async def step(i, chunk):
            return float((await batcher.step(i, chunk[None]))[name].reshape(-1)[0])

        load = Load(streams, seconds, jitter_ms, seed=streams)
        asyncio.run(drive(Load(streams, 0.1, jitter_ms, seed=1), step))  # warm-up, not counted
        counters.reset()
        worker_clock = time.pthread_getcpuclockid(batcher._worker.ident)
        m0 = batcher.metrics()
        t0, c0, w0 = time.perf_counter(), time.thread_time(), time.clock_gettime(worker_clock)
        lat, _ = asyncio.run(drive(load, step))
        wall, loop_cpu = time.perf_counter() - t0, time.thread_time() - c0
        worker_cpu = time.clock_gettime(worker_clock) - w0
        m = batcher.metrics()
        batcher.close()
        session.close()
    finally:
        counters.restore()
    frames = load.streams * (load.count + 1)  # (the metrics may count the warm-up's last tick late)
    per = {phase: t / frames * 1e6 for phase, t in counters.corrected().items()}
    # The counters' own reads, taken off each thread's total.
    reads = {"loop": 0.0, "worker": 0.0}
    for phase, _, thread in PHASES:
        reads[thread] += 2 * counters.calls.get(phase, 0) * counters.clock_cost
    # The load alone: the same tasks, sleeps and bookkeeping, with a step that answers at once.
    answer = np.zeros((1, 1), np.float32)

    async def instant(i, chunk):
        return float(answer.reshape(-1)[0])

    c1 = time.thread_time()
    asyncio.run(drive(load, instant))
    ms = lat * 1e3
    return {
        "streams": streams, "seconds": seconds, "frames": frames, "ticks": m.ticks - m0.ticks,
        "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "phases": per,
        "calls": dict(counters.calls), "clock_us": counters.clock_cost * 1e6,
        "loop": (loop_cpu - reads["loop"]) / frames * 1e6, "worker": (worker_cpu - reads["worker"]) / frames * 1e6,
        "load_alone": (time.thread_time() - c1) / (load.streams * (load.count + 1)) * 1e6,
        "wall": wall / frames * 1e6, "wakeup": wakeup_cost(max(1, round(frames / max(m.ticks - m0.ticks, 1)))),
    }


def wakeup_cost(tasks: int, rounds: int = 20) -> float:
    """µs of CPU per task to wake ``tasks`` tasks awaiting futures resolved in one callback (as ``_deliver``
    resolves a tick's answers) and run each on to its end: the asyncio side of an answer, measured alone
    (best of ``rounds``)."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        best = float("inf")
        for _ in range(rounds):
            futures = [loop.create_future() for _ in range(tasks)]
            done = loop.create_future()
            left = [tasks]

            async def waiter(f):
                await f
                left[0] -= 1
                if not left[0]:
                    done.set_result(None)

            runners = [loop.create_task(waiter(f)) for f in futures]
            await asyncio.sleep(0)  # every task now awaits its future
            t0 = time.thread_time()
            loop.call_soon(lambda: [f.set_result(None) for f in futures])
            await done
            best = min(best, time.thread_time() - t0)
            await asyncio.gather(*runners)
        return best / tasks * 1e6

    return asyncio.run(main())


def print_profile(r: dict, max_delay_ms: float) -> None:
    ph = r["phases"]
    print(f"\nprofile: {r['streams']} streams, {r['seconds']:g} s, max_delay_ms={max_delay_ms:g}: {r['frames']} frames "
          f"in {r['ticks']} ticks (mean batch {r['frames'] / max(r['ticks'], 1):.1f}), latency p50 {r['p50']:.2f} / "
          f"p99 {r['p99']:.2f} ms; thread CPU µs per frame (counter reads of {r['clock_us']:.2f} µs taken off)")
    print(f"  {'phase':48s} {'us/frame':>9s} {'calls':>8s}")
    for thread in ("loop", "worker"):
        print(f"  {'event loop thread' if thread == 'loop' else 'worker thread'}: {r[thread]:.2f}")
        for phase, _, where in PHASES:
            if where == thread and phase in ph:
                print(f"    {LABELS[phase]:46s} {ph[phase]:9.2f} {r['calls'].get(phase, 0):8d}")
        if thread == "loop":
            rest = r["loop"] - ph.get("submit", 0) - ph.get("deliver", 0)
            print(f"    {'the rest (load, awaits, wake-ups)':46s} {rest:9.2f}")
            print(f"    {'  the load alone (an instant step)':46s} {r['load_alone']:9.2f}")
            print(f"    {'  a task wake-up alone (set_result -> resumed)':46s} {r['wakeup']:9.2f}")
        else:
            own = r["worker"] - ph.get("session_step", 0)
            print(f"    {'the worker less Session.step':46s} {own:9.2f}")
    both = r["loop"] + r["worker"]
    print(f"  both threads: {both:.2f} µs a frame; wall {r['wall']:.2f} µs a frame ({both / r['wall'] * 100:.0f}% of the "
          f"core); the batcher's own (both less Session.step and the load alone): "
          f"{both - ph.get('session_step', 0) - r['load_alone']:.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--core", type=int, default=1, help="CPU core to pin this process to (-1: no pinning).")
    p.add_argument("--capacity", type=int, default=512, help="Pool slots for the ceiling.")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 64, 128, 256, 512])
    p.add_argument("--tick-ms", type=float, default=10.0, help="Longest tick of the ceiling (p99 <= 20 ms: ~10).")
    p.add_argument("--ceiling-seconds", type=float, default=2.0, help="Time per batch size of the ceiling.")
    p.add_argument("--streams", type=int, default=512, help="Streams of the profiled load.")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--jitter-ms", type=float, default=8.0)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--skip-ceiling", action="store_true")
    p.add_argument("--skip-profile", action="store_true")
    args = p.parse_args(argv)
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    print(f"load average {os.getloadavg()[0]:.2f}, pinned to core {args.core}")
    with tempfile.TemporaryDirectory(prefix="rnnrt_bprof_") as tmp:
        model = converted(Path(tmp))
        rows = ceiling(model, args.capacity, args.batches, args.ceiling_seconds) if not args.skip_ceiling else []
        if rows:
            print_ceiling(rows, args.capacity)
            streams, k = zero_overhead(rows, args.tick_ms)
            print(f"  engine alone, a tick <= {args.tick_ms:g} ms: at most ~{streams:.0f} streams (batch {k})")
        if not args.skip_profile:
            r = profile(model, args.streams, args.seconds, args.jitter_ms, args.max_delay_ms)
            print_profile(r, args.max_delay_ms)
            if rows:
                streams, k = zero_overhead(rows, args.tick_ms, r["load_alone"])
                print(f"\nzero-overhead batcher: the engine back to back plus the load's own {r['load_alone']:.1f} µs a "
                      f"frame: at most ~{streams:.0f} streams (batch {k})")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
