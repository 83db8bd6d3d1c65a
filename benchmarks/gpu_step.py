"""GPU step benchmark: per-step host time of the GPU Session vs the engine's own CUDA graph (run on a GPU).

Model: a generated 2-layer Caffe LSTM (input 256, hidden 512, T=1), converted with rnnrt, computed by
the torch stand-in engine (tests/engines/standin.py; TensorRT cannot run on the lent H100). Every
number is the host wall time of one step *including* the wait for the GPU (each step synchronised),
median over steps within a round, then median [min..max] over rounds; variants are interleaved
within each round so that drift hits all alike.

Variants:

- ``engine graph``: the stand-in's forward captured in a torch CUDA graph; ``replay()`` + sync. The
  floor: no frame upload, no output download, no feedback.
- ``hand graph``: what the Session does, written by hand in one torch CUDA graph: pinned H2D frame,
  engine, one arena D2D feedback copy, D2H output; ``replay()`` + sync.
- ``engine graph + D2H``: the engine and one D2H copy of the output into pinned memory, in one torch
  CUDA graph: the floor for a step that returns numpy outputs.
- ``hand graph H2D+engine+D2H``: like ``hand graph`` without the arena copy (what ``swap`` runs).
- ``engine graph + per-tensor feedback``: engine graph, then one ``cudaMemcpyAsync`` D2D per state
  tensor (4), then sync: the naive feedback.
- ``Session eager/copy``, ``eager/swap``, ``graph/copy``, ``graph/swap``: ``session.step(numpy frame)``
  returning numpy outputs.
- ``Session graph/swap, view out``: numpy frame in, numpy *views* of the pinned staging out
  (``outputs="view"``: no second host copy).
- ``Session graph/swap, view out, frame in staging``: the same with the frame already written into
  ``Session.input_buffers()`` (no frame copy either).
- ``Session graph/swap, DeviceArray out``: numpy frame in, a DeviceArray out (no D2H, no feedback
  copy: the graph is one H2D copy plus the engine, the closest to the engine's own graph).
- ``hand graph H2D+engine``: the frame upload and the engine in one torch CUDA graph: the floor for a
  step that takes a numpy frame and returns device outputs.
- ``Session graph/swap, DeviceArray out, frame in staging``: the same with the frame already written into
  ``Session.input_buffers()`` (compare with ``hand graph H2D+engine``).
- ``Session graph/swap, device IO``: a torch CUDA frame in, a DeviceArray out.
- ``... [baseline]`` (with ``--baseline SESSION_PY``): the graph-mode variants again on the ``Session``
  class of another ``rnnrt/runtime/session.py`` (e.g. the version before a change), in the same rounds, over
  the same engine and ``rnnrt.cuda``; the variant order is reversed every other round.

Also: feedback alone (+ sync) for 1, 2 and 4 LSTM layers: per-tensor copies vs one arena copy vs swap.

``--sim`` runs on any machine instead: the Session's own Python work per graph-mode step (numpy frame
in, numpy outputs out), with ``rnnrt.cuda`` replaced by the tests' host simulation
(tests/cudasim.py) and the captured graph emptied, so no engine or copy work is timed; with
``--baseline`` side by side with another session.py.

Usage::

    python benchmarks/gpu_step.py [--batch 1 64] [--rounds 5] [--steps 2000] [--json out.json]
    python benchmarks/gpu_step.py --sim [--baseline out/session_before.py]
    git show REV:rnnrt/runtime/session.py > out/session_before.py && python benchmarks/gpu_step.py --baseline out/session_before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rnnrt import cuda  # noqa: E402
from rnnrt.importers.caffe.convert import convert_caffe  # noqa: E402
from rnnrt.importers.caffe.writer import save_caffemodel  # noqa: E402
from rnnrt.ir.config import load_config, save_step_graph  # noqa: E402
from rnnrt.runtime.session import Session  # noqa: E402
from tests.engines.standin import StandinEngine  # noqa: E402

I, H = 256, 512


def write_model(d: Path, B: int, layers: int = 2) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    proto = (
        'name: "bench"\nlayer { name: "input" type: "Input" top: "data" top: "cont"\n'
        f"  input_param {{ shape {{ dim: 1 dim: {B} dim: {I} }} shape {{ dim: 1 dim: {B} }} }} }}\n"
    )
    blobs, bottom, size = {}, "data", I
    for k in range(1, layers + 1):
        proto += (f'layer {{ name: "lstm{k}" type: "LSTM" bottom: "{bottom}" bottom: "cont" top: "lstm{k}"\n'
                  f"  recurrent_param {{ num_output: {H} }} }}\n")
        u = lambda *s: rng.uniform(-0.08, 0.08, s).astype(np.float32)  # noqa: E731
        blobs[f"lstm{k}"] = [u(4 * H, size), u(4 * H), u(4 * H, H)]
        bottom, size = f"lstm{k}", H
    (d / "deploy.prototxt").write_text(proto)
    save_caffemodel(d / "weights.caffemodel", blobs)
    yaml = save_step_graph(convert_caffe(d / "deploy.prototxt", d / "weights.caffemodel"), d / "model")
    return d / "deploy.prototxt", d / "weights.caffemodel", Path(yaml)


def timed(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    clock = time.perf_counter
    for _ in range(steps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times) * 1e6


def load_session_class(path: Path) -> type:
    """The ``Session`` class of another session.py, imported under a private module name."""
    spec = importlib.util.spec_from_file_location("rnnrt_session_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Session


def bench_batch(B: int, rounds: int, steps: int, warmup: int, baseline: type | None = None) -> dict:
    d = Path(tempfile.mkdtemp())
    proto, weights, yaml = write_model(d, B)
    cfg = load_config(yaml)
    engine = StandinEngine(proto, weights)
    engine.activate()
    rng = np.random.default_rng(1)
    frames = [rng.uniform(-1, 1, (1, B, I)).astype(np.float32) for _ in range(8)]
    dev = torch.device("cuda")

    # The engine's own graph, and the hand-written full step graph.
    names_in = [b.name for b in engine.input_bindings()]
    shapes_out = engine.output_shapes(None, {b.name: b.shape for b in engine.input_bindings()})
    state_in = [n for n in names_in if n.endswith("0")]
    arena_in = torch.zeros(len(state_in), B, H, device=dev)
    arena_out = torch.zeros(len(state_in), B, H, device=dev)
    ins = {"data": torch.zeros(1, B, I, device=dev), "cont": torch.ones(1, B, device=dev)}
    ins.update({n: arena_in[k] for k, n in enumerate(state_in)})
    outs = {n: torch.zeros(s, device=dev) for n, s in shapes_out.items() if not n.endswith("T")}
    outs.update({n[:-1] + "T": arena_out[k] for k, n in enumerate(state_in)})
    x_pin = torch.zeros(1, B, I).pin_memory()
    y_pin = torch.zeros(shapes_out["lstm2"]).pin_memory()

    work: dict = {}
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        for _ in range(3):
            engine.forward(ins, outs, work)
    torch.cuda.synchronize()
    g_engine, g_hand = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    g_engine_d2h, g_hand_swap = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    g_h2d_engine = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g_engine):
        engine.forward(ins, outs, work)
    with torch.cuda.graph(g_engine_d2h):
        engine.forward(ins, outs, work)
        y_pin.copy_(outs["lstm2"], non_blocking=True)
    with torch.cuda.graph(g_h2d_engine):
        ins["data"].copy_(x_pin, non_blocking=True)
        engine.forward(ins, outs, work)
    with torch.cuda.graph(g_hand_swap):
        ins["data"].copy_(x_pin, non_blocking=True)
        engine.forward(ins, outs, work)
        y_pin.copy_(outs["lstm2"], non_blocking=True)
    with torch.cuda.graph(g_hand):
        ins["data"].copy_(x_pin, non_blocking=True)
        engine.forward(ins, outs, work)
        arena_in.copy_(arena_out)
        y_pin.copy_(outs["lstm2"], non_blocking=True)
    cur = torch.cuda.current_stream()
    handle = cur.cuda_stream
    pairs = [(ins[n].data_ptr(), outs[n[:-1] + "T"].data_ptr()) for n in state_in]
    nbytes = B * H * 4

    def engine_graph():
        g_engine.replay()
        cur.synchronize()

    def hand_graph():
        g_hand.replay()
        cur.synchronize()

    def engine_d2h():
        g_engine_d2h.replay()
        cur.synchronize()

    def h2d_engine():
        g_h2d_engine.replay()
        cur.synchronize()

    def hand_swap():
        g_hand_swap.replay()
        cur.synchronize()

    def per_tensor():
        g_engine.replay()
        for dst, src in pairs:
            cuda.memcpy_async(dst, src, nbytes, "d2d", handle)
        cur.synchronize()

    sessions = {}
    for label, kw in (("Session eager/copy", dict(feedback="copy", cuda_graph=False)),
                      ("Session eager/swap", dict(feedback="swap", cuda_graph=False)),
                      ("Session graph/copy", dict(feedback="copy", cuda_graph=True)),
                      ("Session graph/swap", dict(feedback="swap", cuda_graph=True)),
                      ("Session graph/swap, view out", dict(feedback="swap", cuda_graph=True, outputs="view")),
                      ("Session graph/swap, view out, frame in staging",
                       dict(feedback="swap", cuda_graph=True, outputs="view")),
                      ("Session graph/swap, DeviceArray out", dict(feedback="swap", cuda_graph=True, outputs="device")),
                      ("Session graph/swap, DeviceArray out, frame in staging",
                       dict(feedback="swap", cuda_graph=True, outputs="device")),
                      ("Session graph/swap, device IO", dict(feedback="swap", cuda_graph=True, outputs="device"))):
        sessions[label] = Session(cfg, engine, **kw)
        if baseline is not None and kw["cuda_graph"] and kw.get("outputs") != "view":
            sessions[label + " [baseline]"] = baseline(cfg, engine, **kw)
    x_dev = torch.as_tensor(frames[0], device=dev)
    torch.cuda.synchronize()

    def session_step(s, device_io=False, staged=False):
        i = [0]
        if staged:
            feeds = {"data": s.input_buffers()["data"]}
            feeds["data"][...] = frames[0]

            def run_staged():
                s.step(feeds)
            return run_staged

        def run():
            i[0] += 1
            s.step({"data": x_dev} if device_io else {"data": frames[i[0] & 7]})
        return run

    variants = {
        "engine graph (floor)": engine_graph,
        "hand graph (H2D+engine+arena copy+D2H)": hand_graph,
        "engine graph + D2H": engine_d2h,
        "hand graph H2D+engine": h2d_engine,
        "hand graph H2D+engine+D2H": hand_swap,
        "engine graph + 4 per-tensor D2D copies": per_tensor,
    }
    for label, s in sessions.items():
        variants[label] = session_step(s, device_io="device IO" in label, staged="frame in staging" in label)

    results: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants.items())
        for label, fn in (reversed(order) if r % 2 else order):
            results[label].append(timed(fn, steps, warmup))
    for s in sessions.values():
        s.close()
    engine.deactivate()
    return {k: v for k, v in results.items()}


def bench_feedback(rounds: int, steps: int, warmup: int, B: int) -> dict:
    """Feedback alone (+ sync): 2L per-tensor copies vs one arena copy vs swap (nothing to copy)."""
    stream = cuda.Stream()
    out: dict = {}
    try:
        for layers in (1, 2, 4):
            n = 2 * layers
            src, dst = cuda.DeviceBuffer(n * B * H * 4), cuda.DeviceBuffer(n * B * H * 4)
            size = B * H * 4

            def per_tensor():
                for k in range(n):
                    cuda.memcpy_async(dst.ptr + k * size, src.ptr + k * size, size, "d2d", stream)
                stream.synchronize()

            def arena():
                cuda.memcpy_async(dst.ptr, src.ptr, n * size, "d2d", stream)
                stream.synchronize()

            def swap():
                stream.synchronize()

            for label, fn in ((f"L={layers}: {n} per-tensor copies", per_tensor), (f"L={layers}: 1 arena copy", arena),
                              (f"L={layers}: swap", swap)):
                out.setdefault(label, []).extend(timed(fn, steps, warmup) for _ in range(rounds))
            src.free()
            dst.free()
    finally:
        stream.destroy()
    return out


def bench_sim(batches: list[int], rounds: int, steps: int, baseline_path: Path | None) -> None:
    """Python work per graph-mode step on the host simulation of rnnrt.cuda (graph replay emptied)."""
    import rnnrt
    from tests import cudasim
    from tests.runtime.test_session_gpu import SimStandinEngine

    mod = cudasim.make_module()
    sys.modules["rnnrt.cuda"] = mod
    rnnrt.cuda = mod
    classes = [("Session", Session)]
    if baseline_path is not None:
        classes.append(("baseline", load_session_class(baseline_path)))
    print(f"host simulation, Python {platform.python_version()}; us per step, median [min..max] of {rounds} "
          f"rounds of {steps} steps")
    for B in batches:
        d = Path(tempfile.mkdtemp())
        proto, weights, yaml = write_model(d, B)
        cfg = load_config(yaml)
        engine = SimStandinEngine(proto, weights, sim_cuda=mod)
        engine.activate()
        frames = [np.random.default_rng(k).uniform(-1, 1, (1, B, I)).astype(np.float32) for k in range(8)]
        for feedback in ("copy", "swap"):
            sessions = {label: cls(cfg, engine, feedback=feedback, cuda_graph=True) for label, cls in classes}
            for s in sessions.values():
                for k in range(4):  # eager, then capture (both parities with swap)
                    s.step({"data": frames[k]})
                    for io in (s.executor._io_sets if hasattr(s, "executor") else s._io_sets).values():
                        for g in io.graphs.values():
                            g.ops = []
            times: dict[str, list[float]] = {label: [] for label in sessions}
            for r in range(rounds):
                for label, s in (reversed(sessions.items()) if r % 2 else sessions.items()):
                    t0 = time.perf_counter()
                    for k in range(steps):
                        s.step({"data": frames[k & 7]})
                    times[label].append((time.perf_counter() - t0) / steps * 1e6)
            for label, v in times.items():
                print(f"batch {B} graph/{feedback} {label}: {statistics.median(v):.2f} [{min(v):.2f}..{max(v):.2f}]")
            for s in sessions.values():
                s.close()
        engine.deactivate()


def fmt_row(label: str, values: list[float]) -> str:
    return f"| {label} | {statistics.median(values):.1f} [{min(values):.1f}..{max(values):.1f}] |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 1024])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="steps per round (default 2000; 20000 with --sim)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--baseline", type=Path, default=None, metavar="SESSION_PY",
                    help="also time the graph-mode variants on the Session class of this session.py")
    ap.add_argument("--sim", action="store_true", help="CPU only: the Session's Python work per graph step")
    args = ap.parse_args()
    if args.sim:
        bench_sim(args.batch, args.rounds, args.steps or 20000, args.baseline)
        return
    args.steps = args.steps or 2000
    baseline = load_session_class(args.baseline) if args.baseline else None
    if not cuda.available() or not torch.cuda.is_available():
        sys.exit("gpu_step.py needs a CUDA GPU")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    machine = {"gpu": torch.cuda.get_device_name(), "cpu": cpu, "python": platform.python_version(),
               "torch": torch.__version__, "driver": cuda._rt().cudaDriverGetVersion()[1],
               "cuda_bindings": getattr(sys.modules.get("cuda.bindings"), "__version__", "?"),
               "baseline": str(args.baseline) if args.baseline else None}
    report = {"machine": machine, "batches": {}, "feedback": {}}
    print(f"machine: {machine}")
    for B in args.batch:
        report["batches"][B] = bench_batch(B, args.rounds, args.steps, args.warmup, baseline)
    report["feedback"] = bench_feedback(args.rounds, args.steps, args.warmup, 64)
    lines = [f"GPU: {machine['gpu']}; CPU: {cpu}; torch {machine['torch']}; Python {machine['python']}.",
             f"Per-step host time in us incl. sync, median of {args.steps} steps, median [min..max] over "
             f"{args.rounds} rounds.", ""]
    for B, res in report["batches"].items():
        lines += [f"**2-layer LSTM 256->512, batch {B}**", "", "| variant | us/step |", "|---|---|"]
        lines += [fmt_row(k, v) for k, v in res.items()]
        floor = statistics.median(res["engine graph (floor)"])
        hand = statistics.median(res["hand graph (H2D+engine+arena copy+D2H)"])
        d2h = statistics.median(res["engine graph + D2H"])
        hand_swap = statistics.median(res["hand graph H2D+engine+D2H"])
        for k in ("Session graph/copy", "Session graph/swap", "Session graph/swap, DeviceArray out",
                  "Session graph/swap, device IO"):
            m = statistics.median(res[k])
            lines.append(f"| {k} minus engine graph / minus hand graph | {m - floor:+.1f} / {m - hand:+.1f} |")
        h2d = statistics.median(res["hand graph H2D+engine"])
        for k in ("Session graph/swap, DeviceArray out", "Session graph/swap, DeviceArray out, frame in staging"):
            m = statistics.median(res[k])
            ratios = [x - y for x, y in zip(res[k], res["hand graph H2D+engine"])]
            lines.append(f"| {k} minus hand graph H2D+engine (per-round) | {m - h2d:+.1f} "
                         f"({min(ratios):+.1f}..{max(ratios):+.1f}) |")
        for k in ("Session graph/swap", "Session graph/swap, view out", "Session graph/swap, view out, frame in staging"):
            m = statistics.median(res[k])
            lines.append(f"| {k}: / (engine graph + D2H) ; minus hand graph H2D+engine+D2H | {m / d2h:.3f}x ; "
                         f"{m - hand_swap:+.1f} |")
            if k + " [baseline]" in res:
                b = statistics.median(res[k + " [baseline]"])
                ratios = [x / y for x, y in zip(res[k], res[k + " [baseline]"])]
                lines.append(f"| {k} minus baseline (per-round ratio) | {m - b:+.1f} "
                             f"({min(ratios):.3f}..{max(ratios):.3f}) |")
        lines.append("")
    lines += ["**Feedback alone + sync, batch 64, hidden 512**", "", "| variant | us |", "|---|---|"]
    lines += [fmt_row(k, v) for k, v in report["feedback"].items()]
    text = "\n".join(lines)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
        args.json.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
