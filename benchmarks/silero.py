"""Silero VAD throughput, side by side in one process, 1 thread (``python benchmarks/silero.py``).

Sides (all on the same 16 kHz 512-sample chunks of a synthetic signal, all ONNX Runtime on 1 thread):

* ``OnnxWrapper``: silero's own wrapper, one per stream, one call per chunk (what voice-agent
  frameworks do today); measured with ``--streams`` wrappers called round-robin.
* ``Session b1``: rnnrt Session of the step graph converted with ``--set sr=16000 --context input:64``,
  batch 1 (state and context carried by the Session).
* ``raw ORT bN``: the unmodified ONNX file in an ``InferenceSession`` at batch N, the caller keeping
  state and context in numpy arrays (the hand-written batched loop; the best a user can do).
* ``Session bN``: the rnnrt Session at batch N fed one ready (N, 512) array (the step graph and the
  Session's state handling without the pool's per-stream packing).
* ``StreamPool N``: rnnrt StreamPool of N streams, one ``pool.step`` with one chunk per stream.

Rounds alternate the sides in short slices (order rotated per round) so noise on a shared VM hits all
alike; the table gives the median over rounds of chunks/s, and each ratio is the median of the per-round
ratios (the two sides measured next to each other).

Usage::

    python benchmarks/silero.py [--variant silero_vad.onnx] [--rounds 25] [--seconds 0.25]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnrt  # noqa: E402
from rnnrt.ir.config import save_step_graph  # noqa: E402
from rnnrt.importers.onnx.importer import convert_onnx  # noqa: E402
from rnnrt.runtime.pool import StreamPool  # noqa: E402

CHUNK, CONTEXT, RATE = 512, 64, 16000


def _timed(fn, seconds: float) -> float:
    """Chunks per second: calls ``fn`` (returns chunks done) until ``seconds`` have passed."""
    done, t0 = 0, time.perf_counter()
    while True:
        done += fn()
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return done / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="silero_vad.onnx")
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=0.25, help="Time per side per round.")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    args = ap.parse_args()

    import onnxruntime as ort
    import silero_vad
    import torch
    from silero_vad.utils_vad import OnnxWrapper

    torch.set_num_threads(1)
    path = Path(silero_vad.__file__).parent / "data" / args.variant
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(RATE * 4) * 0.1).astype(np.float32)
    chunks = [audio[i:i + CHUNK] for i in range(0, len(audio) - CHUNK + 1, CHUNK)]
    has_sr = any(i.name == "sr" for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs())

    tmp = Path(tempfile.mkdtemp(prefix="silero_bench_"))
    step = convert_onnx(path, constants={"sr": RATE} if has_sr else None, context=f"input:{CONTEXT}")
    yaml_path = save_step_graph(step, tmp)

    sides: dict = {}

    # silero's OnnxWrapper, one per stream.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrappers = [OnnxWrapper(str(path), force_onnx_cpu=True) for _ in range(16)]
    tchunks = [torch.from_numpy(c) for c in chunks]
    state = {"k": 0}

    def wrapper_side() -> int:
        k = state["k"]
        for w in wrappers:
            w(tchunks[k % len(tchunks)], RATE)
        state["k"] = k + 1
        return len(wrappers)

    sides["OnnxWrapper (1 per stream)"] = wrapper_side

    session1 = rnnrt.load(yaml_path, backend="onnxruntime", batch_size=1, threads=1)
    s1 = {"k": 0}

    def session_b1() -> int:
        session1.step({"input": chunks[s1["k"] % len(chunks)][None]})
        s1["k"] += 1
        return 1

    sides["Session b1"] = session_b1

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    raw = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    pools = {}
    for n in args.batches:
        frames = np.stack([chunks[(i * 7) % len(chunks)] for i in range(n)])
        ctx = np.zeros((n, CONTEXT), np.float32)
        st = np.zeros((2, n, 128), np.float32)
        sr = np.array(RATE, np.int64)
        raw_state = {"ctx": ctx, "st": st}

        def raw_side(frames=frames, raw_state=raw_state, n=n) -> int:
            x = np.concatenate([raw_state["ctx"], frames], axis=1)
            feeds = {"input": x, "state": raw_state["st"]}
            if has_sr:
                feeds["sr"] = sr
            _, raw_state["st"] = raw.run(None, feeds)
            raw_state["ctx"] = x[:, -CONTEXT:]
            return n

        sides[f"raw ORT b{n}"] = raw_side
        batch_session = rnnrt.load(yaml_path, backend="onnxruntime", batch_size=n, threads=1)
        pools[f"s{n}"] = (None, batch_session)

        def session_side(batch_session=batch_session, frames=frames, n=n) -> int:
            batch_session.step({"input": frames})
            return n

        sides[f"Session b{n}"] = session_side
        session = rnnrt.load(yaml_path, backend="onnxruntime", batch_size=n, threads=1)
        pool = StreamPool(session)
        for i in range(n):
            pool.open(i)
        pools[n] = (pool, session)
        pool_frames = {i: frames[i:i + 1] for i in range(n)}  # one chunk per stream (the single input)

        def pool_side(pool=pool, pool_frames=pool_frames, n=n) -> int:
            pool.step(pool_frames)
            return n

        sides[f"StreamPool {n}"] = pool_side

    results: dict = {name: [] for name in sides}
    names = list(sides)
    for fn in sides.values():  # warm-up
        _timed(fn, 0.2)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            results[name].append(_timed(sides[name], args.seconds))
    med = {name: statistics.median(v) for name, v in results.items()}

    def ratio(a: str, b: str) -> tuple[float, float, float]:
        """Median and quartiles of the per-round ratios a/b (both measured in the same round)."""
        rs = sorted(x / y for x, y in zip(results[a], results[b]))
        q = statistics.quantiles(rs, n=4) if len(rs) > 1 else [rs[0]] * 3
        return statistics.median(rs), q[0], q[2]

    print(f"Silero VAD {args.variant}, 16 kHz 512-sample chunks, 1 thread, {args.rounds} rounds x {args.seconds} s per side")
    print(f"{'side':32s} {'chunks/s':>10s}  (median over rounds; quartiles)")
    for name in names:
        q = statistics.quantiles(results[name], n=4) if args.rounds > 1 else [med[name]] * 3
        print(f"{name:32s} {med[name]:10.0f}  ({q[0]:.0f} .. {q[2]:.0f})")
    w = "OnnxWrapper (1 per stream)"
    lines = [("Session b1", w, "goal >= 1.2x")]
    for n in args.batches:
        lines.append((f"Session b{n}", f"raw ORT b{n}", "(the step graph + Session, no pool)"))
        lines.append((f"StreamPool {n}", f"raw ORT b{n}", "goal >= 0.95x"))
        lines.append((f"StreamPool {n}", w, "goal >= 3x" if n == 256 else ""))
    print("per-round ratios (median, quartiles):")
    for a, b, goal in lines:
        m, lo, hi = ratio(a, b)
        print(f"  {a} / {b}: {m:.3f}x ({lo:.3f} .. {hi:.3f}) {goal}")
    session1.close()
    for pool, session in pools.values():
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
