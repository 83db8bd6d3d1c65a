"""Peak memory and time of converting (and running) a Caffe model with big weights.

::

    python benchmarks/large_model.py --gb 2.5               # random weights: InnerProduct 16 -> N
    python benchmarks/large_model.py --gb 0.5 --caffemodel  # the same net with a real caffemodel

Each stage runs in its own process (`python -m rnnrt.cli convert`, then a Session step) and reports
its peak resident memory (ru_maxrss of the child) next to the size of the weights. `make test-large`
runs the 2.5 GB case as a test (tests/hostile/test_large.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IN = 16  # inputs of the InnerProduct


def prototxt(n_out: int) -> str:
    return (
        'name: "big"\n'
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 16 } } }\n'
        f'layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {{ num_output: {n_out} }} }}\n'
    )


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num: int, payload_len: int) -> bytes:
    return _varint(num << 3 | 2) + _varint(payload_len)


def write_caffemodel(path: Path, n_out: int, seed: int = 0) -> None:
    """Streams a caffemodel for :func:`prototxt` (W: (n_out, 16) and b: (n_out,)), without protobuf's 2 GiB limit."""
    rng = np.random.default_rng(seed)

    def blob_header(shape: tuple[int, ...], count: int) -> tuple[bytes, int]:
        dims = b"".join(_varint(d) for d in shape)
        shape_msg = _field(1, len(dims)) + dims
        head = _field(7, len(shape_msg)) + shape_msg + _field(5, 4 * count)
        return head, len(head) + 4 * count

    w_head, w_len = blob_header((n_out, IN), n_out * IN)
    b_head, b_len = blob_header((n_out,), n_out)
    name = b"\x0a\x02fc" + b"\x12\x0cInnerProduct"
    layer_len = len(name) + len(_field(7, w_len)) + w_len + len(_field(7, b_len)) + b_len
    with open(path, "wb") as f:
        f.write(_field(100, layer_len) + name)
        f.write(_field(7, w_len) + w_head)
        rows = 1 << 20
        for i in range(0, n_out, rows):
            k = min(rows, n_out - i)
            f.write(rng.uniform(-0.1, 0.1, (k, IN)).astype("<f4").tobytes())
        f.write(_field(7, b_len) + b_head)
        for i in range(0, n_out, rows):
            f.write(rng.uniform(-0.1, 0.1, min(rows, n_out - i)).astype("<f4").tobytes())


# The child reports its own peak (VmHWM of its address space) at exit. ru_maxrss of a child would not
# do: Linux carries the parent's high-water mark over fork/vfork + exec into it.
_CHILD = """
import atexit, os, runpy, sys
def _hwm():
    with open("/proc/self/status") as f:
        kb = f.read().split("VmHWM:")[1].split()[0]
    with open(os.environ["RNNRT_HWM_FILE"], "w") as f:
        f.write(kb)
atexit.register(_hwm)
mode, target = sys.argv[1], sys.argv[2]
if mode == "-m":
    sys.argv = [target] + sys.argv[3:]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c"] + sys.argv[3:]
    exec(compile(target, "<child>", "exec"), {"__name__": "__main__"})
"""


def run_child(args: list[str], cwd: Path = ROOT) -> tuple[float, float, str]:
    """Runs ``python ARGS`` (``-m mod ...`` or ``-c code ...``); returns (seconds, peak RSS in GB, stdout)."""
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        env = {**os.environ, "RNNRT_HWM_FILE": str(hwm), "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=cwd, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{args[:2]} failed with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return dt, int(hwm.read_text()) * 1024 / 1e9, proc.stdout


_STEP = """
import sys, numpy as np, rnnrt
with rnnrt.load(sys.argv[1]) as s:
    y = s.step({"data": np.ones((1, 16), np.float32)})["fc"]
np.save(sys.argv[2], y)
"""


def measure(folder: Path, gb: float, caffemodel: bool) -> dict:
    """Converts and steps a model of ``gb`` GB of weights in ``folder``; returns the numbers."""
    n_out = int(gb * 1e9 / 4 / (IN + 1))
    weights_gb = n_out * (IN + 1) * 4 / 1e9
    proto = folder / "big.prototxt"
    proto.write_text(prototxt(n_out))
    cmd = ["-m", "rnnrt.cli", "convert", str(proto)]
    if caffemodel:
        model = folder / "big.caffemodel"
        write_caffemodel(model, n_out)
        cmd.append(str(model))
    cmd += ["-o", str(folder / "out")]
    # The baseline: the interpreter with rnnrt and its dependencies imported.
    _, base_gb, _ = run_child(["-c", "import rnnrt.cli, rnnrt.importers.caffe.convert, onnxruntime"])
    t_conv, peak_conv, _ = run_child(cmd)
    t_step, peak_step, _ = run_child(["-c", _STEP, str(folder / "out" / "model.yaml"), str(folder / "y.npy")])
    return {
        "n_out": n_out, "weights_gb": weights_gb, "base_gb": base_gb,
        "convert_s": t_conv, "convert_peak_gb": peak_conv, "step_s": t_step, "step_peak_gb": peak_step,
        "data_file_gb": (folder / "out" / "model.onnx.data").stat().st_size / 1e9
        if (folder / "out" / "model.onnx.data").exists() else 0.0,
        "onnx_file_mb": (folder / "out" / "model.onnx").stat().st_size / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.5, help="weights in GB (1e9 bytes)")
    ap.add_argument("--caffemodel", action="store_true", help="write and read a caffemodel (else random weights)")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        r = measure(Path(tmp), args.gb, args.caffemodel)
    for k, v in r.items():
        print(f"{k:>16}: {v:.3f}" if isinstance(v, float) else f"{k:>16}: {v}")
    print(f"convert peak / weights: {r['convert_peak_gb'] / r['weights_gb']:.2f}x "
          f"({(r['convert_peak_gb'] - r['base_gb']) / r['weights_gb']:.2f}x above the {r['base_gb']:.2f} GB interpreter)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
