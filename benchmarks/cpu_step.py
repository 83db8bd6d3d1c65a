"""CPU step benchmark: ``Session.step`` vs a bare ``onnxruntime.InferenceSession.run`` (``make bench``).

Model: a generated 2-layer Caffe-style LSTM step graph (input 256, hidden 512, T=1, cont multiplies
h and c; tests/models/lstm.py). Both sides run the same ONNX file with the same ORT session options;
the bare side feeds the state back by hand (rebinding the output arrays) and feeds cont=1 itself,
the Session fills cont and copies the state arena. A third side is the Session with its engine's
IO binding turned off (state outputs copied from ONNX Runtime's arrays). Rounds alternate between the sides
so that noise on a shared VM hits them alike; the table reports the median over rounds of each round's median.

Usage::

    python benchmarks/cpu_step.py [--threads 1] [--batch 1 64] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort  # noqa: E402

import rnnrt  # noqa: E402
import rnnrt.runtime.session  # noqa: E402
from tests.models import MODELS  # noqa: E402


def _bare(model_path: Path, threads: int) -> ort.InferenceSession:
    # Same options as rnnrt.engines.OnnxRuntimeEngine.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])


def _time_bare(sess: ort.InferenceSession, x: np.ndarray, steps: int) -> float:
    B = x.shape[1]
    feeds = {"data": x, "cont": np.ones((1, B), np.float32)}
    for name in ("lstm1.h0", "lstm1.c0", "lstm2.h0", "lstm2.c0"):
        feeds[name] = np.zeros((B, 512), np.float32)
    names = [o.name for o in sess.get_outputs()]
    pairs = [(names.index(n.replace("h0", "hT").replace("c0", "cT")), n) for n in ("lstm1.h0", "lstm1.c0", "lstm2.h0", "lstm2.c0")]
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        outs = sess.run(names, feeds)
        for i, n in pairs:
            feeds[n] = outs[i]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_session(session: "rnnrt.Session", x: np.ndarray, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        session.step(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bookkeeping(path: Path, x: np.ndarray, steps: int, feedback: str) -> float:
    """Session.step with an engine that returns cached outputs: the Session's own cost per step."""
    from rnnrt.engines import OnnxRuntimeEngine

    class _Cached(OnnxRuntimeEngine):
        cached: dict = {}

        def execute_impl(self, feeds, outputs):
            if not self.cached:
                self.cached.update(super().execute_impl(feeds, {}))
            result = dict(self.cached)
            for name, dst in outputs.items():
                np.copyto(dst, result[name])  # the real engine copies into the state arena too
                result[name] = dst
            return result

    with rnnrt.runtime.session.Session(path, lambda: _Cached(path.parent / "model.onnx", threads=1), feedback=feedback) as s:
        return _time_session(s, x, steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0.4, help="Target time per side per round.")
    p.add_argument("--feedback", default="copy", choices=["copy", "swap"])
    args = p.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            path = MODELS["lstm2_bench"](batch=batch).save(Path(tmp) / f"b{batch}")
            model_path = path.parent / "model.onnx"
            x = np.random.default_rng(0).uniform(-1, 1, (1, batch, 256)).astype(np.float32)
            for threads in args.threads:
                bare = _bare(model_path, threads)
                with rnnrt.load(path, backend="onnxruntime", threads=threads, feedback=args.feedback) as session, \
                        rnnrt.load(path, backend="onnxruntime", threads=threads, feedback=args.feedback) as plain:
                    _plain_engine(plain)
                    # Warm up and size the rounds.
                    per_step = _time_bare(bare, x, 20)
                    _time_session(session, x, 20)
                    _time_session(plain, x, 20)
                    steps = max(20, int(args.seconds / per_step))
                    b_med, s_med, p_med = [], [], []
                    for _ in range(args.rounds):
                        b_med.append(_time_bare(bare, x, steps))
                        s_med.append(_time_session(session, x, steps))
                        p_med.append(_time_session(plain, x, steps))
                b_us, s_us, p_us = (statistics.median(m) * 1e6 for m in (b_med, s_med, p_med))
                k_us = _bookkeeping(path, x, 2000, args.feedback) * 1e6
                rows.append((batch, threads, b_us, s_us, p_us, k_us, steps))
                print(f"batch {batch:3d} threads {threads}: bare {b_us:8.1f} us  session {s_us:8.1f} us  "
                      f"overhead {s_us - b_us:+7.1f} us ({(s_us / b_us - 1) * 100:+.1f} %)  "
                      f"plain-run session {p_us:8.1f} us ({(p_us / b_us - 1) * 100:+.1f} %)  "
                      f"bookkeeping {k_us:.1f} us", flush=True)

    print()
    print("| batch | threads | bare ORT `run` µs/step | `Session.step` µs/step | overhead | `Session.step`, engine "
          "without IO binding | Session bookkeeping (engine excluded) | steps × rounds |")
    print("|---|---|---|---|---|---|---|---|")
    for batch, threads, b_us, s_us, p_us, k_us, steps in rows:
        print(f"| {batch} | {threads} | {b_us:.0f} | {s_us:.0f} | {s_us - b_us:+.0f} µs ({(s_us / b_us - 1) * 100:+.1f} %) "
              f"| {p_us:.0f} ({(p_us / b_us - 1) * 100:+.1f} %) | {k_us:.1f} µs ({k_us / b_us * 100:.1f} %) "
              f"| {steps} × {args.rounds} |")
    return 0


def _plain_engine(session: "rnnrt.Session") -> None:
    """The Session's ONNX Runtime engine without its IO binding: every step through ``run`` and a copy of
    each state output (the engine before issue 21's cut), for the side-by-side column."""
    from rnnrt.engines import OnnxRuntimeEngine

    if not isinstance(session._engine, OnnxRuntimeEngine):
        raise SystemExit(f"cpu_step.py: the Session's engine is a {type(session._engine).__name__}")
    session._engine._run_bound = None


if __name__ == "__main__":
    sys.exit(main())
