"""Serving benchmark: streams through a real Triton server (`rnnrt serve`'s python-backend model) vs the
in-process StreamPool, side by side in one run (``python benchmarks/serve.py``, ``make bench-serve``).

Model: tests/models ``lstm2_bench`` with a dynamic batch (2-layer LSTM, T=1; ``--input``/``--hidden``).
S streams (default 16) each take one frame per tick:

- ``in-process pool``: one ``pool.step`` of all S streams per tick (a pool of 64 slots, like the server's):
  the baseline ("vs pool" divides by its frames/s).
- ``in-process pool 8-frame chunks``: one ``pool.step_chunk`` of 8 frames of all S streams per tick (what
  the server's model runs per multi-stream request), for reference.
- ``unary 1-frame`` / ``unary 8-frame``: S/2 client threads, each stepping its 2 streams with
  ``client.step`` (one frame a request) or ``client.step_chunk`` (8 frames a request).
- ``stream 1-frame`` / ``stream 8-frame``: 2 client threads, each sending one request for each of its
  S/2 streams at once over the server's gRPC stream (``client.step_many(..., combine=False)``).
- ``multi 1-frame`` / ``multi 8-frame``: ONE request per tick carrying the frames of all S streams (a
  multi-stream request, ``client.step_many`` with its default ``combine=True``), from ``--multi-threads``
  client threads (default 1: every request carries all S streams, so the server steps S streams at once
  like the in-process pool; with 2 threads each request carries S/2 and Triton ran them one per execute).
- ``multi 8-frame 2-in-flight``: the same with ``client.submit_many``, the next tick submitted before the
  last one's reply is waited for (the client's lane keeps them in order), so the server never waits for
  the client.

Each variant runs ``--seconds`` (after a warm-up) and the variants rotate over ``--rounds`` rounds so that
noise on a shared machine hits all alike; the table reports the total over rounds. Latency is per request
(for the pool: per tick); ``server CPU/req`` is the CPU time of tritonserver and its python-backend stub
(from /proc) divided by the requests; ``req/execute`` is how many requests Triton batched into one
``execute`` of the model on average. Client and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnrt  # noqa: E402
import rnnrt.ir.config  # noqa: E402
from rnnrt import StreamPool  # noqa: E402
from rnnrt.serve.client import StreamClient  # noqa: E402
from rnnrt.serve.server import TritonServer  # noqa: E402
from rnnrt.serve.triton import export_triton  # noqa: E402
from tests.models import MODELS  # noqa: E402

SLOTS = 64


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


class Result:
    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.frames = 0
        self.seconds = 0.0
        self.latencies: list[float] = []
        self.server_cpu = 0.0
        self.executions = 0.0

    def row(self, base: "Result | None") -> str:
        lat = np.asarray(self.latencies) * 1e3
        fps = self.frames / self.seconds
        ratio = f"{fps / (base.frames / base.seconds):.2f}x" if base is not None else "1.00x"
        cpu = f"{self.server_cpu / self.requests * 1e3:.2f}" if self.server_cpu else "-"
        per_exec = f"{self.requests / self.executions:.1f}" if self.executions else "-"
        return (f"| {self.name} | {self.requests / self.seconds:,.0f} | {fps:,.0f} | {ratio} | "
                f"{np.percentile(lat, 50):.2f} | {np.percentile(lat, 99):.2f} | {cpu} | {per_exec} |")


def make_frames(cfg, rng, n: int) -> list[dict]:
    cont = cfg.continuation.input if cfg.continuation else None
    frames = []
    for _ in range(n):
        frame = {}
        for t in cfg.inputs:
            if t.name == cont:
                continue
            shape = [1 if i == t.batch_axis else d for i, d in enumerate(t.shape)]
            frame[t.name] = rng.uniform(-1, 1, shape).astype(t.dtype)
        frames.append(frame)
    return frames


def run_pool(path, frames, streams: int, seconds: float, res: Result, threads: int, chunk: int = 1) -> None:
    """The in-process pool: one ``pool.step`` of all streams per tick, or (chunk > 1) one ``pool.step_chunk``
    of ``chunk`` frames of all streams per tick."""
    with rnnrt.load(path, backend="onnxruntime", batch_size=SLOTS, threads=threads) as session:
        pool = StreamPool(session)
        ids = [f"s{i}" for i in range(streams)]
        for sid in ids:
            pool.open(sid)
        if chunk == 1:
            batch = {sid: frames[i % len(frames)] for i, sid in enumerate(ids)}

            def tick():
                pool.step(batch)
        else:
            cfg = session.config
            cont = cfg.continuation.input if cfg.continuation else None
            axes = {t.name: t.batch_axis for t in cfg.inputs if t.name != cont}
            packed = {name: np.stack([np.concatenate([frames[k % len(frames)][name]] * streams, axis=axis)
                                      for k in range(chunk)]) for name, axis in axes.items()}
            order = tuple(ids)

            def tick():
                pool.step_chunk(order, packed)
        for _ in range(20):
            tick()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            t = time.perf_counter()
            tick()
            res.latencies.append(time.perf_counter() - t)
            res.requests += 1
            res.frames += streams * chunk
        res.seconds += time.perf_counter() - t0


def exec_count(server) -> float:
    """Triton's count of model executions (batches) of the benchmark model."""
    for line in server.metrics().splitlines():
        if line.startswith("nv_inference_exec_count{") and 'model="bench"' in line:
            return float(line.split()[-1])
    return 0.0


def run_client(client, server, frames, streams: int, seconds: float, res: Result, mode: str, chunk: int,
               tag: str, multi_threads: int = 1, in_flight: int = 1) -> None:
    n_threads = streams // 2 if mode == "unary" else multi_threads if mode == "multi" else 2
    combine = mode == "multi"
    per = streams // n_threads
    ids = [[f"{tag}-{t}-{j}" for j in range(per)] for t in range(n_threads)]
    for group in ids:
        for sid in group:
            client.open(sid)
    lock = threading.Lock()
    stop = threading.Event()
    go = threading.Barrier(n_threads + 1)

    def worker(group):
        k = 0
        lat, reqs, nframes = [], 0, 0
        pending: list = []
        go.wait()
        while not stop.is_set():
            if mode == "unary":
                for sid in group:
                    t = time.perf_counter()
                    if chunk == 1:
                        client.step(sid, frames[k % len(frames)])
                    else:
                        client.step_chunk(sid, frames[:chunk])
                    lat.append(time.perf_counter() - t)
                    reqs += 1
                    nframes += chunk
            elif in_flight > 1:  # submit_many: the next ticks go out before this one's reply is back
                batch = {sid: (frames[k % len(frames)] if chunk == 1 else frames[:chunk]) for sid in group}
                pending.append((time.perf_counter(), client.submit_many(batch)))
                if len(pending) == in_flight:
                    t, future = pending.pop(0)
                    out = future.result()
                    bad = [v for v in out.values() if isinstance(v, Exception)]
                    if bad:
                        raise bad[0]
                    lat.append(time.perf_counter() - t)
                    reqs += 1
                    nframes += chunk * len(group)
            else:
                batch = {sid: (frames[k % len(frames)] if chunk == 1 else frames[:chunk]) for sid in group}
                t = time.perf_counter()
                out = client.step_many(batch, combine=combine)
                dt = time.perf_counter() - t
                bad = [v for v in out.values() if isinstance(v, Exception)]
                if bad:
                    raise bad[0]
                lat.extend([dt] * (1 if combine else len(group)))
                reqs += 1 if combine else len(group)
                nframes += chunk * len(group)
            k += 1
        for _, future in pending:  # ticks still in flight: waited for, not counted
            future.result()
        with lock:
            res.latencies.extend(lat)
            res.requests += reqs
            res.frames += nframes

    threads = [threading.Thread(target=worker, args=(g,)) for g in ids]
    for th in threads:
        th.start()
    cpu0, exec0 = tree_cpu(server.pid), exec_count(server)
    go.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join()
    res.seconds += time.perf_counter() - t0
    res.server_cpu += tree_cpu(server.pid) - cpu0
    res.executions += exec_count(server) - exec0
    for group in ids:
        for sid in group:
            client.close(sid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queue-delay-us", type=int, default=0, help="The model's max_queue_delay_microseconds.")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (pool and server).")
    parser.add_argument("--multi-threads", type=int, default=1,
                        help="Client threads of the multi variants (each sends one request for its share of streams).")
    parser.add_argument("--only", default="", help="Comma-separated variant names to run (default: all).")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = MODELS["lstm2_bench"](batch="batch", input_size=args.input, hidden=(args.hidden)).save(Path(tmp) / "m")
        cfg = rnnrt.ir.config.load_config(path)
        frames = make_frames(cfg, rng, 8)
        repo = Path(tmp) / "repo"
        model_dir = export_triton(path, repo, engine="python", name="bench", max_sequences=SLOTS,
                                  queue_delay_us=args.queue_delay_us)
        pbtxt = model_dir / "config.pbtxt"
        pbtxt.write_text(pbtxt.read_text() + f'parameters {{\n  key: "rnnrt_threads"\n  value {{\n    string_value: '
                         f'"{args.threads}"\n  }}\n}}\n')
        variants = [("in-process pool", None, 1), ("in-process pool 8-frame chunks", None, 8),
                    ("unary 1-frame", "unary", 1), ("unary 8-frame", "unary", 8),
                    ("stream 1-frame", "stream", 1), ("stream 8-frame", "stream", 8),
                    ("multi 1-frame", "multi", 1), ("multi 8-frame", "multi", 8),
                    ("multi 8-frame 2-in-flight", "multi", 8)]
        if args.only:
            keep = {v.strip() for v in args.only.split(",")} | {"in-process pool"}
            variants = [v for v in variants if v[0] in keep]
        results = {name: Result(name) for name, _, _ in variants}
        with TritonServer(repo, extra_args=["--exit-timeout-secs=5"]) as server:
            server.wait_ready(["bench"])
            with StreamClient(server.endpoints()["grpc"], model="bench") as client:
                client.open("warm")
                for _ in range(50):
                    client.step("warm", frames[0])
                client.close("warm")
                for r in range(args.rounds):
                    order = variants[r % len(variants):] + variants[:r % len(variants)]
                    for name, mode, chunk in order:
                        if mode is None:
                            run_pool(path, frames, args.streams, args.seconds, results[name], args.threads, chunk)
                        else:
                            run_client(client, server, frames, args.streams, args.seconds, results[name],
                                       mode, chunk, f"r{r}{mode}{chunk}{len(name)}", args.multi_threads,
                                       in_flight=2 if "in-flight" in name else 1)
    print(f"# {args.streams} streams, lstm2_bench input {args.input} hidden {args.hidden}, "
          f"{args.rounds} rounds x {args.seconds:.0f} s per variant, ORT threads {args.threads}, "
          f"queue delay {args.queue_delay_us} us, multi threads {args.multi_threads}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs")
    print("| variant | requests/s | frames/s | vs pool | p50 ms | p99 ms | server CPU/req ms | req/execute |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = results["in-process pool"]
    for name, _, _ in variants:
        print(results[name].row(None if name == "in-process pool" else base))


if __name__ == "__main__":
    main()
