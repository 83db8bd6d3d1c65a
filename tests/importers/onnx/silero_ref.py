"""Silero VAD (pip ``silero-vad``): its shipped ONNX files, its own wrappers as the reference, test signals.

Not a test module: the Silero tests and the benchmark import it.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[3]

# file -> (flags of the contract, sample rates the file supports, batchable (dynamic batch), reference)
VARIANTS: dict[str, dict[str, Any]] = {
    "silero_vad.onnx": {"sr": True, "rates": [16000, 8000], "pool": True, "ref": "wrapper"},
    "silero_vad_16k_op15.onnx": {"sr": True, "rates": [16000], "pool": True, "ref": "wrapper"},
    "silero_vad_half.onnx": {"sr": False, "rates": [16000], "pool": True, "ref": "wrapper"},
    "silero_vad_op18_ifless.onnx": {"sr": True, "rates": [16000, 8000], "pool": True, "ref": "wrapper"},
    "silero_vad_openvino_16k.onnx": {"sr": False, "rates": [16000], "pool": False, "ref": "wrapper"},
    "silero_vad_16k_sequence.onnx": {"sr": False, "rates": [16000], "pool": False, "ref": "sequence"},
}
CHUNK = {16000: 512, 8000: 256}
CONTEXT = {16000: 64, 8000: 32}


def data_dir() -> Path:
    import silero_vad

    return Path(silero_vad.__file__).parent / "data"


def contract_flags(variant: str, rate: int = 16000) -> list[str]:
    """At most ``--set sr=RATE --context input:K``: what other tools call."""
    flags = ["--set", f"sr={rate}"] if VARIANTS[variant]["sr"] else []
    return flags + ["--context", f"input:{CONTEXT[rate]}"]


def convert(variant: str, out: Path, rate: int = 16000) -> Path:
    """``python -m rnnrt.cli convert MODEL -o OUT <contract flags>``; returns the YAML path."""
    cmd = [sys.executable, "-m", "rnnrt.cli", "convert", str(data_dir() / variant), "-o", str(out)]
    proc = subprocess.run(cmd + contract_flags(variant, rate), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"convert failed:\n{proc.stdout}\n{proc.stderr}")
    return out / "model.yaml"


def signal(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Silence, tone bursts, noise and speech-like bursts (voiced harmonics with a syllable envelope)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros(n, np.float64)
    seg = n // 8
    # tone bursts
    for k in range(2):
        a = seg * (1 + k) + rng.integers(0, seg // 4)
        x[a:a + seg // 3] += 0.4 * np.sin(2 * np.pi * (300 + 200 * k) * t[a:a + seg // 3])
    # noise
    x[3 * seg:4 * seg] += 0.2 * rng.standard_normal(seg)
    # speech-like: f0 ~ 120-220 Hz with harmonics, formant-ish weights, 4 Hz syllable envelope
    a = 4 * seg
    m = 3 * seg
    f0 = 120 + 100 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t[a:a + m]))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(h * phase) / h * (1.5 if 3 <= h <= 6 else 1.0) for h in range(1, 15))
    env = np.clip(np.sin(2 * np.pi * 4 * t[a:a + m]), 0, None) ** 0.7
    x[a:a + m] += 0.25 * voiced * env + 0.01 * rng.standard_normal(m)
    return x.astype(np.float32)


class _FeedFilter:
    """An ORT session that drops feeds the model has no input for (the wrapper always feeds ``sr``)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.names = {i.name for i in session.get_inputs()}

    def run(self, outputs: Any, feeds: dict) -> Any:
        return self.session.run(outputs, {k: v for k, v in feeds.items() if k in self.names})


def wrapper(variant: str) -> Any:
    """silero's own ``OnnxWrapper`` on the file (1 thread); files without ``sr`` get their other inputs only."""
    from silero_vad.utils_vad import OnnxWrapper

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = OnnxWrapper(str(data_dir() / variant), force_onnx_cpu=True)
    w.session = _FeedFilter(w.session)
    return w


def wrapper_probs(w: Any, chunks: list[np.ndarray], rate: int) -> np.ndarray:
    import torch

    return np.array([float(w(torch.from_numpy(c), rate).reshape(-1)[0]) for c in chunks], np.float32)


def reference(variant: str, sig: np.ndarray, rate: int) -> np.ndarray:
    """Per-chunk speech probabilities from silero's own code for the file."""
    chunk = CHUNK[rate]
    chunks = [sig[i:i + chunk] for i in range(0, len(sig) - chunk + 1, chunk)]
    if VARIANTS[variant]["ref"] == "sequence":
        from silero_vad.sequence_vad import SileroVADSequence

        seq = SileroVADSequence(str(data_dir() / variant), sampling_rate=rate, max_frames=7)
        return seq.audio_forward(np.concatenate(chunks), sampling_rate=rate)
    return wrapper_probs(wrapper(variant), chunks, rate)


def snapshot_wrapper(w: Any) -> dict:
    return {k: copy.deepcopy(getattr(w, k)) for k in ("_state", "_context", "_last_sr", "_last_batch_size")}


def restore_wrapper(w: Any, snap: Optional[dict]) -> None:
    for k, v in (snap or {}).items():
        setattr(w, k, copy.deepcopy(v))
