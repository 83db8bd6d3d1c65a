"""``make run``: a self-contained demo of the whole CPU path.

It writes a small Caffe model with rnnrt's own writer (seeded weights, nothing downloaded), converts it
into an ONNX step graph + YAML config, and streams frames through a Session with a reset in the middle,
printing outputs and per-step latency. Run with ``python -m rnnrt.demo [--out DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

# Two stacked LSTMs (input 16, hidden 32 and 24) and a softmax head, streaming one frame per call:
# T = 1 time step, N = 2 independent streams.
DEMO_PROTOTXT = """name: "demo_lstm"
layer { name: "input" type: "Input" top: "data" top: "cont"
  input_param { shape { dim: 1 dim: 2 dim: 16 } shape { dim: 1 dim: 2 } } }
layer { name: "lstm1" type: "LSTM" bottom: "data" bottom: "cont" top: "lstm1"
  recurrent_param { num_output: 32 } }
layer { name: "lstm2" type: "LSTM" bottom: "lstm1" bottom: "cont" top: "lstm2"
  recurrent_param { num_output: 24 } }
layer { name: "score" type: "InnerProduct" bottom: "lstm2" top: "score"
  inner_product_param { num_output: 5 axis: 2 } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" softmax_param { axis: 2 } }
"""


def write_demo_model(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Writes the demo's deploy.prototxt and weights.caffemodel into ``directory``."""
    from rnnrt.importers.caffe.writer import save_caffemodel

    rng = np.random.default_rng(seed)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-0.8, 0.8, shape).astype(np.float32)

    directory.mkdir(parents=True, exist_ok=True)
    prototxt = directory / "deploy.prototxt"
    prototxt.write_text(DEMO_PROTOTXT)
    weights = directory / "weights.caffemodel"
    # Caffe's blob order: LSTM [W_xc (4H x D), b_c (4H), W_hc (4H x H)], InnerProduct [W (N x K), b (N)].
    save_caffemodel(
        weights,
        {
            "lstm1": [u(128, 16), u(128), u(128, 32)],
            "lstm2": [u(96, 32), u(96), u(96, 24)],
            "score": [u(5, 24), u(5)],
        },
        name="demo_lstm",
    )
    return prototxt, weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Where to write the model (default: a temp dir).")
    parser.add_argument("--steps", type=int, default=12, help="Frames to stream (default: 12).")
    args = parser.parse_args(argv)

    import rnnrt
    from rnnrt.importers.caffe.convert import convert_caffe
    from rnnrt.ir.config import save_step_graph

    out = args.out or Path(tempfile.mkdtemp(prefix="rnnrt-demo-"))
    prototxt, weights = write_demo_model(out / "caffe")
    print(f"1. wrote a Caffe model: {prototxt} + {weights.name}")
    step_graph = convert_caffe(prototxt, weights)
    config = save_step_graph(step_graph, out / "model")
    print(f"2. converted it to a step graph: {config.with_suffix('.onnx')} and {config}")
    for s in step_graph.states:
        print(f"     state {s.input:>10} -> {s.output:<10} shape {list(s.shape)}")

    rng = np.random.default_rng(1)
    frames = rng.uniform(-1, 1, (args.steps, 1, 2, 16)).astype(np.float32)
    reset_at = args.steps // 2
    print(f"3. streaming {args.steps} frames for 2 streams through a Session (ONNX Runtime, CPU); "
          f"stream 1 restarts at step {reset_at}")
    latencies = []
    with rnnrt.load(config, backend="auto", threads=1) as session:
        print(f"     {session!r}")
        for k, frame in enumerate(frames):
            if k == reset_at:
                session.reset(slots=[1])  # the continuation input is filled with 0 for stream 1
            t0 = time.perf_counter()
            prob = session.step({"data": frame})["prob"]
            latencies.append(time.perf_counter() - t0)
            marks = "  <- stream 1 reset" if k == reset_at else ""
            top = ", ".join(f"class {c} p={p:.3f}" for c, p in zip(prob[0].argmax(-1), prob[0].max(-1)))
            print(f"     step {k:2d}  [{top}]  {latencies[-1] * 1e6:7.1f} us{marks}")
        # The reset stream now matches a fresh Session fed the same frames from the reset on.
        with rnnrt.load(config, backend="onnxruntime", threads=1) as fresh:
            for frame in frames[reset_at:]:
                ref = fresh.step({"data": frame})["prob"]
        assert np.allclose(ref[0, 1], prob[0, 1], atol=1e-6), "slot reset must equal a fresh stream"
    lat = np.array(latencies[1:]) * 1e6
    print(f"4. per-step latency: median {np.median(lat):.1f} us, min {lat.min():.1f} us "
          f"(T=1, batch 2; first step excluded)")
    print("   stream 1 after its reset equals a fresh session fed the same frames: OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
