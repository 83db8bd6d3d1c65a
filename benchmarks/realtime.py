"""Real-time capacity: live Silero VAD streams at real-time pace on one CPU core (``python benchmarks/realtime.py``).

Each of N simulated streams sends a 512-sample chunk (32 ms at 16 kHz) every 32 ms, each chunk delayed
by a random network jitter in ``[0, --jitter-ms]``, stream starts spread over one period. Open loop: a
chunk's arrival time is fixed in advance and does not wait for earlier answers; a chunk's latency is
from its arrival to its answer, so any queueing in the application counts. Every stream is one asyncio
task that awaits its answers in order, as a voice-agent server's connection handlers do.

Sides (one after the other in one run, the same arrivals and chunks; the process pinned to one core
with ``os.sched_setaffinity`` unless ``--core -1``):

* ``wrapper``: one silero ``OnnxWrapper`` per stream, called in the stream's task (what voice agents
  run today: each call blocks the event loop for one batch-1 run).
* ``ortpool``: a shared pool of ``--ort-sessions`` ONNX Runtime sessions of the unmodified model in as
  many threads (``run_in_executor``), each stream's state and context kept by hand.
* ``batcher``: ``rnnrt.StreamBatcher`` over a ``StreamPool`` of one Session of batch N (threads chosen
  by rnnrt's rule: one on one core); each task awaits ``batcher.step(sid, chunk)``.
* ``--served`` adds ``served-each``: every stream's own ``StreamClient.step`` per chunk (one request per
  chunk, in a thread pool) against ``rnnrt serve`` pinned to ``--server-core``, and ``served-batcher``:
  the batcher over a ``StreamClient`` (one multi-stream request per tick) against the same server.

Capacity of a side: the most streams for which the p99 latency stays <= ``--p99-ms`` (20 ms). With
``--search`` each side doubles N from 1 until it fails, then bisects; else the ``--streams`` list is run.
``--plots DIR`` writes one latency CDF per stream count (PNG). Outputs of stream 0 are compared with the
wrapper's (the sides compute the same probabilities).

``--saturate N`` measures throughput instead (closed loop, every stream always has a frame): the batcher
over a pool of N streams (per-stream ``submit``; ``submit_many``, a future per frame; ``submit_batch``, one
block and one future for all N, the row the GPU goal is about) vs raw ``pool.step_batch`` of one ready packed
batch, frames/s side by side in alternating rounds; ``--device
gpu`` runs it on the torch stand-in engine (CUDA graphs, swap), the model of ``benchmarks/pool.py``.

Usage::

    python benchmarks/realtime.py --search --seconds 10 --plots docs/img
    python benchmarks/realtime.py --streams 4 16 64 --seconds 3 --sides wrapper batcher
    python benchmarks/realtime.py --served --streams 16 64 --seconds 5
    python benchmarks/realtime.py --saturate 1024 --device gpu --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import rnnrt  # noqa: E402
from rnnrt.runtime.batcher import StreamBatcher  # noqa: E402
from rnnrt.runtime.pool import StreamPool  # noqa: E402

RATE, CHUNK, CONTEXT = 16000, 512, 64
PERIOD = CHUNK / RATE  # 32 ms


# ---------------------------------------------------------------------------------------------------
# The load: N streams at real-time pace, open loop.
class Load:
    """Arrival times and chunks of every stream (the same for every side)."""

    def __init__(self, streams: int, seconds: float, jitter_ms: float, seed: int = 0) -> None:
        from tests.importers.onnx.silero_ref import signal as speech_like

        rng = np.random.default_rng(seed)
        self.count = max(1, int(seconds / PERIOD))
        audio = speech_like(16.0, RATE, seed=seed).astype(np.float32)
        pieces = len(audio) // CHUNK
        self.chunks = [np.ascontiguousarray(audio[(k % pieces) * CHUNK:(k % pieces + 1) * CHUNK])
                       for k in range(pieces)]
        self.offsets = [int(rng.integers(0, pieces)) for _ in range(streams)]  # each stream its own audio
        start = rng.uniform(0, PERIOD, streams)
        jitter = rng.uniform(0, jitter_ms / 1e3, (streams, self.count))
        self.arrivals = start[:, None] + np.arange(self.count)[None, :] * PERIOD + jitter
        self.streams = streams

    def chunk(self, stream: int, k: int) -> np.ndarray:
        return self.chunks[(self.offsets[stream] + k) % len(self.chunks)]


async def drive(load: Load, step) -> tuple[np.ndarray, list]:
    """Runs every stream's task; returns all latencies (s) and stream 0's outputs.

    First every stream steps one silent chunk, not timed (the same on every side): connections, lazy
    loading and first-call costs stay out of the measurement."""
    silence = np.zeros(CHUNK, np.float32)
    await asyncio.gather(*(step(i, silence) for i in range(load.streams)))
    clock = time.perf_counter
    t0 = clock() + 0.2
    latencies: list[float] = []
    first: list = []

    async def stream(i: int) -> None:
        arrivals = load.arrivals[i] + t0
        for k in range(load.count):
            due = arrivals[k]
            wait = due - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            out = await step(i, load.chunk(i, k))
            latencies.append(clock() - due)
            if i == 0:
                first.append(out)

    await asyncio.gather(*(stream(i) for i in range(load.streams)))
    return np.array(latencies), first


# ---------------------------------------------------------------------------------------------------
# Sides: each makes an async step(stream, chunk) -> speech probability, and a cleanup.
def silero_path() -> Path:
    import silero_vad

    return Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"


def converted(tmp: Path) -> Path:
    from rnnrt.ir.config import save_step_graph
    from rnnrt.importers.onnx.importer import convert_onnx

    out = tmp / "silero"
    if not (out / "model.yaml").is_file():
        save_step_graph(convert_onnx(silero_path(), constants={"sr": RATE}, context=f"input:{CONTEXT}"), out)
    return out / "model.yaml"


def side_wrapper(n: int, tmp: Path, args):
    import torch
    from silero_vad.utils_vad import OnnxWrapper

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrappers = [OnnxWrapper(str(silero_path()), force_onnx_cpu=True) for _ in range(n)]

    async def step(i, chunk):
        return float(wrappers[i](torch.from_numpy(chunk), RATE))

    return step, lambda: None


def side_ortpool(n: int, tmp: Path, args):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sessions: queue.Queue = queue.Queue()
    for _ in range(args.ort_sessions):
        sessions.put(ort.InferenceSession(str(silero_path()), opts, providers=["CPUExecutionProvider"]))
    state = [np.zeros((2, 1, 128), np.float32) for _ in range(n)]
    context = [np.zeros((1, CONTEXT), np.float32) for _ in range(n)]
    sr = np.array(RATE, np.int64)
    executor = ThreadPoolExecutor(args.ort_sessions)

    def run(i, chunk):
        x = np.concatenate([context[i], chunk[None]], axis=1)
        sess = sessions.get()
        try:
            prob, state[i] = sess.run(None, {"input": x, "state": state[i], "sr": sr})
        finally:
            sessions.put(sess)
        context[i] = x[:, -CONTEXT:]
        return float(prob.reshape(-1)[0])

    async def step(i, chunk):
        return await asyncio.get_running_loop().run_in_executor(executor, run, i, chunk)

    return step, lambda: executor.shutdown()


def side_batcher(n: int, tmp: Path, args):
    session = rnnrt.load(converted(tmp), backend="onnxruntime", batch_size=n)
    pool = StreamPool(session)
    batcher = StreamBatcher(pool, max_delay_ms=args.max_delay_ms)
    name = session.output_names[0]

    async def step(i, chunk):
        return float((await batcher.step(i, chunk[None]))[name].reshape(-1)[0])

    def done():
        m = batcher.metrics()
        batcher.close()
        session.close()
        return f"mean batch {m.mean_batch:.1f}, queue delay p50/p99 {m.queue_delay_ms[0]:.1f}/{m.queue_delay_ms[1]:.1f} ms"

    return step, done


class Served:
    """``rnnrt serve`` of the converted model, pinned to one core (its children too), stopped by PID."""

    def __init__(self, tmp: Path, streams: int, core: int) -> None:
        from rnnrt.serve.server import free_port
        from rnnrt.serve.triton import export_triton

        repo = tmp / f"repo{streams}"
        export_triton(converted(tmp), repo, engine="python", name="vad", max_sequences=streams)
        self.port = free_port()
        cmd = [sys.executable, "-m", "rnnrt.cli", "serve", "--repo", str(repo), "--grpc-port", str(self.port),
               "--http-port", str(free_port()), "--metrics-port", str(free_port())]
        if core >= 0:
            cmd = ["taskset", "-c", str(core)] + cmd
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        for line in self.proc.stdout:
            if line.strip() == "ready":
                break
            if time.monotonic() > deadline:
                break
        if self.proc.poll() is not None:
            raise SystemExit("rnnrt serve did not start")
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)


def side_served_each(n: int, tmp: Path, args):
    from rnnrt.client import StreamClient

    server = Served(tmp, n, args.server_core)
    client = StreamClient(server.address, model="vad")
    for i in range(n):
        client.open(i)
    executor = ThreadPoolExecutor(min(n, 64))

    async def step(i, chunk):
        out = await asyncio.get_running_loop().run_in_executor(executor, client.step, i, chunk[None])
        return float(next(iter(out.values())).reshape(-1)[0])

    def done():
        executor.shutdown()
        client.close_connections()
        server.stop()

    return step, done


def side_served_batcher(n: int, tmp: Path, args):
    from rnnrt.client import StreamClient

    server = Served(tmp, n, args.server_core)
    client = StreamClient(server.address, model="vad")
    batcher = StreamBatcher(client, max_delay_ms=args.max_delay_ms, max_batch=n)

    async def step(i, chunk):
        out = await batcher.step(i, chunk[None])
        return float(next(iter(out.values())).reshape(-1)[0])

    def done():
        m = batcher.metrics()
        batcher.close()
        client.close_connections()
        server.stop()
        return f"mean batch {m.mean_batch:.1f}"

    return step, done


SIDES = {"wrapper": side_wrapper, "ortpool": side_ortpool, "batcher": side_batcher,
         "served-each": side_served_each, "served-batcher": side_served_batcher}


def run_side(name: str, n: int, tmp: Path, args) -> dict:
    load = Load(n, args.seconds, args.jitter_ms, seed=n)
    step, done = SIDES[name](n, tmp, args)
    try:
        lat, first = asyncio.run(drive(load, step))
    finally:
        note = done()
    ms = lat * 1e3
    res = {"side": name, "streams": n, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
           "max": float(ms.max()), "chunks": len(ms), "latencies": ms, "first": first, "note": note or ""}
    res["ok"] = res["p99"] <= args.p99_ms
    print(f"  {name:15s} {n:5d} streams: p50 {res['p50']:7.2f} ms  p99 {res['p99']:8.2f} ms  max {res['max']:8.2f} ms"
          f"  {'ok' if res['ok'] else 'OVER'}  {res['note']}", flush=True)
    return res


def search(name: str, tmp: Path, args, results: list) -> int:
    """Doubling then bisection on the stream count; returns the capacity (0 if even 1 stream fails)."""
    good, bad = 0, None
    n = 1
    while n <= args.max_streams:
        r = run_side(name, n, tmp, args)
        results.append(r)
        if not r["ok"]:
            bad = n
            break
        good, n = n, n * 2
    if bad is None:
        return good
    while bad - good > max(1, good // 16):
        n = (good + bad) // 2
        r = run_side(name, n, tmp, args)
        results.append(r)
        good, bad = (n, bad) if r["ok"] else (good, n)
    return good


def plot(results: list, out: Path, p99_ms: float, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n in sorted({r["streams"] for r in results}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in (r for r in results if r["streams"] == n):
            ms = np.sort(r["latencies"])
            ax.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=f"{r['side']} (p99 {r['p99']:.1f} ms)")
        ax.axvline(p99_ms, color="grey", linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("latency arrival -> answer (ms)")
        ax.set_ylabel("fraction of chunks")
        ax.set_title(f"{title}: {n} live streams")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        path = out / f"realtime_cdf_{n}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------
def saturate(args) -> int:
    """Closed loop, every stream always has a frame: batcher vs raw pool.step_batch, frames/s."""
    from pool import _sessions, machine

    n = args.saturate
    rng = np.random.default_rng(0)
    frames = [rng.uniform(-1, 1, (1, 1, 256)).astype(np.float32) for _ in range(n)]
    x = np.concatenate(frames, axis=1)
    ids = tuple(range(n))
    print(f"machine: {machine(args.device)}")
    with tempfile.TemporaryDirectory() as tmp:
        make = _sessions(args.device, n, Path(tmp), args.threads)
        raw_session, batch_session = make(), make()
        raw = StreamPool(raw_session)
        for i in ids:
            raw.open(i)
        batcher = StreamBatcher(StreamPool(batch_session), max_delay_ms=args.max_delay_ms)
        for f in [batcher.submit(i, frames[i]) for i in ids]:
            f.result()
        by_id = dict(zip(ids, frames))

        def raw_side():
            raw.step_batch(ids, x)

        def batcher_side():
            futures = [batcher.submit(i, frames[i]) for i in ids]
            wait(futures)  # one wake-up for all (f.result() one by one hands the GIL back and forth)

        def many_side():
            wait(batcher.submit_many(by_id).values())  # many streams at once, still a future per frame

        def block_side():
            batcher.submit_batch(ids, x).result()  # the block entry point: one future for all streams

        # The same batcher (and pool) for both batcher rows: the streams advance in either.
        sides = {"raw step_batch": raw_side, "batcher": batcher_side, "batcher submit_many": many_side,
                 "batcher submit_batch": block_side}
        for fn in sides.values():
            for _ in range(5):
                fn()
        rates: dict = {k: [] for k in sides}
        for r in range(args.rounds):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                fn, done, t0 = sides[name], 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    fn()
                    done += n
                rates[name].append(done / (time.perf_counter() - t0))
        m = batcher.metrics()
        batcher.close()
        raw_session.close()
        batch_session.close()
    print(f"{n} streams, {args.device}, {args.rounds} rounds x {args.seconds} s per side (frames/s, median):")
    for name, v in rates.items():
        rate = statistics.median(v)
        print(f"  {name:20s} {rate:12.0f}  ({1e6 / rate:.2f} us per frame)")
    for name in ("batcher", "batcher submit_many", "batcher submit_batch"):
        ratios = sorted(b / a for a, b in zip(rates["raw step_batch"], rates[name]))
        print(f"  {name} / raw step_batch: {statistics.median(ratios):.3f}x (range {ratios[0]:.3f} .. "
              f"{ratios[-1]:.3f})" + ("  goal >= 0.9x" if name == "batcher submit_batch" else ""))
    print(f"  batcher mean batch {m.mean_batch:.0f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sides", nargs="*", default=["wrapper", "ortpool", "batcher"], choices=list(SIDES))
    p.add_argument("--served", action="store_true", help="Also the served sides (served-each, served-batcher).")
    p.add_argument("--streams", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--search", action="store_true", help="Find each side's capacity (doubling, then bisection).")
    p.add_argument("--max-streams", type=int, default=4096)
    p.add_argument("--seconds", type=float, default=10.0, help="Real time per run.")
    p.add_argument("--jitter-ms", type=float, default=8.0)
    p.add_argument("--p99-ms", type=float, default=20.0)
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="The batcher's max_delay_ms.")
    p.add_argument("--ort-sessions", type=int, default=4, help="Sessions (threads) of the ortpool side.")
    p.add_argument("--core", type=int, default=0, help="CPU core to pin this process to (-1: no pinning).")
    p.add_argument("--server-core", type=int, default=1, help="CPU core for rnnrt serve (-1: no pinning).")
    p.add_argument("--plots", type=Path, default=None, help="Directory for latency CDF PNGs.")
    p.add_argument("--saturate", type=int, default=0, metavar="N", help="Throughput mode at N streams (see above).")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="--saturate only.")
    p.add_argument("--threads", type=int, default=1, help="--saturate on cpu: ONNX Runtime threads.")
    p.add_argument("--rounds", type=int, default=5, help="--saturate only.")
    args = p.parse_args(argv)
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    if args.saturate:
        if args.seconds == 10.0:
            args.seconds = 0.5
        return saturate(args)
    sides = args.sides + (["served-each", "served-batcher"] if args.served else [])
    import onnxruntime

    cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
    load1 = os.getloadavg()[0]
    print(f"machine: {cpu} ({os.cpu_count()} vCPUs, load {load1:.1f}), pinned to core {args.core}, Python "
          f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}")
    print(f"{args.seconds:g} s per run, 512-sample chunks every 32 ms + jitter [0, {args.jitter_ms:g}] ms, "
          f"capacity: p99 <= {args.p99_ms:g} ms")
    results: list = []
    capacity = {}
    with tempfile.TemporaryDirectory(prefix="rnnrt_realtime_") as tmp_name:
        tmp = Path(tmp_name)
        for name in sides:
            if args.search:
                capacity[name] = search(name, tmp, args, results)
            else:
                runs = [run_side(name, n, tmp, args) for n in args.streams]
                results += runs
                capacity[name] = max((r["streams"] for r in runs if r["ok"]), default=0)
    # The sides compute the same probabilities (stream 0, the chunks every side answered).
    ref = next((r for r in results if r["side"] == "wrapper"), None)
    if ref is not None:
        for r in results:
            if r["side"] != "wrapper" and r["streams"] == ref["streams"]:
                k = min(len(r["first"]), len(ref["first"]))
                diff = float(np.max(np.abs(np.array(r["first"][:k]) - np.array(ref["first"][:k])))) if k else 0.0
                print(f"  stream 0, {r['side']} vs wrapper ({ref['streams']} streams): max |diff| {diff:.2e}")
    print("\ncapacity (most streams with p99 <= %g ms%s):" % (args.p99_ms, "" if args.search else ", of those run"))
    for name, c in capacity.items():
        print(f"  {name:15s} {c}")
    if capacity.get("wrapper") and "batcher" in capacity:
        print(f"  batcher / wrapper: {capacity['batcher'] / capacity['wrapper']:.1f}x (goal >= 8x)")
    if capacity.get("served-each") and "served-batcher" in capacity:
        print(f"  served-batcher / served-each: {capacity['served-batcher'] / capacity['served-each']:.1f}x")
    if args.plots is not None:
        for path in plot(results, args.plots, args.p99_ms, "Silero VAD, one core"):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
