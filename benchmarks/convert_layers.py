"""Conversion time vs layer count: a chain of N ReLU layers (plus an InnerProduct) through convert + save.

::

    python benchmarks/convert_layers.py 1000 5000 20000

Prints one line per N: seconds for `convert_caffe` (read + convert + export) and for `save_step_graph`,
and the time per layer. Linear conversion keeps the per-layer time flat as N grows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def chain_prototxt(n: int) -> str:
    """A net of ``n`` layers: Input (1, 16), InnerProduct 16 -> 16, then ``n - 2`` ReLUs in a chain."""
    parts = [
        'name: "chain"\n',
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 16 } } }\n',
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "b0" inner_product_param { num_output: 16 } }\n',
    ]
    for i in range(1, n - 1):
        parts.append(f'layer {{ name: "r{i}" type: "ReLU" bottom: "b{i - 1}" top: "b{i}" }}\n')
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("layers", nargs="*", type=int, default=[1000, 5000, 20000])
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rnnrt.ir.config import save_step_graph
    from rnnrt.importers.caffe.convert import convert_caffe

    print(f"{'layers':>8} {'convert s':>10} {'save s':>8} {'total s':>8} {'us/layer':>9}")
    for n in args.layers:
        with tempfile.TemporaryDirectory() as tmp:
            proto = Path(tmp) / "chain.prototxt"
            proto.write_text(chain_prototxt(n))
            t0 = time.perf_counter()
            step = convert_caffe(proto)
            t1 = time.perf_counter()
            save_step_graph(step, Path(tmp) / "out")
            t2 = time.perf_counter()
        print(f"{n:>8} {t1 - t0:>10.2f} {t2 - t1:>8.2f} {t2 - t0:>8.2f} {1e6 * (t2 - t0) / n:>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
