"""The convert-time check on Silero VAD (pip ``silero-vad``): the contract conversion records passing checks;
a stream recorded from silero's own ``OnnxWrapper`` (``--check-reference``) tells a conversion without the
context the wrapper prepends from one with it; ``--dim chunk=512`` pins the chunk length."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import rnnrt
from rnnrt.cli import main
from rnnrt.ir.config import load_config
from rnnrt.errors import BindingError

pytest.importorskip("silero_vad", reason="silero-vad (dev extra) ships the models")
pytest.importorskip("torch", reason="silero's OnnxWrapper takes torch tensors")

from tests.importers.onnx import silero_ref as ref  # noqa: E402


def _convert(variant: str, out, *flags: str) -> int:
    return main(["convert", str(ref.data_dir() / variant), "-o", str(out), *flags])


@pytest.mark.parametrize("variant", ["silero_vad.onnx", "silero_vad_16k_sequence.onnx"])
def test_contract_conversion_records_passing_checks(tmp_path, capsys, variant):
    assert _convert(variant, tmp_path, *ref.contract_flags(variant)) == 0
    assert "check: streaming ok" in capsys.readouterr().out
    checks = load_config(tmp_path / "model.yaml").checks
    got = {r.check: r for r in checks.results}
    assert got["streaming"].passed and "state and context by hand" in got["streaming"].compared
    assert got["streaming"].max_abs <= 1e-6
    assert got["reset"].passed
    assert checks.batch_one is None


@pytest.fixture(scope="module")
def wrapper_feed(tmp_path_factory):
    """One stream of 512-sample chunks and silero's OnnxWrapper probabilities for them, as a feed .npz."""
    sig = ref.signal(1.0, 16000, seed=2)
    chunks = [sig[i:i + 512] for i in range(0, len(sig) - 511, 512)][:12]
    probs = ref.wrapper_probs(ref.wrapper("silero_vad.onnx"), chunks, 16000)
    path = tmp_path_factory.mktemp("feed") / "wrapper.npz"
    feed = {f"call{k}/input": c[None].astype(np.float32) for k, c in enumerate(chunks)}
    feed |= {f"call{k}/output": np.array([[p]], np.float32) for k, p in enumerate(probs)}
    np.savez(path, **feed)
    return path


def test_reference_tells_a_missing_context_apart(tmp_path, capsys, wrapper_feed):
    flags = ["--set", "sr=16000", "--check-reference", str(wrapper_feed)]
    assert _convert("silero_vad.onnx", tmp_path / "plain", *flags) == 2
    err = capsys.readouterr().err
    assert "Output 'output' at call" in err and "--context INPUT:K" in err
    assert not (tmp_path / "plain" / "model.yaml").exists()
    assert _convert("silero_vad.onnx", tmp_path / "ctx", *flags, "--context", "input:64") == 0
    data = yaml.safe_load((tmp_path / "ctx" / "model.yaml").read_text())
    reference = next(r for r in data["checks"]["results"] if r["check"] == "reference")
    assert reference["passed"] is True and reference["max_abs"] <= 1e-6


def test_dim_pins_the_chunk_length(tmp_path):
    assert _convert("silero_vad.onnx", tmp_path, "--set", "sr=16000", "--context", "input:64", "--dim", "chunk=512") == 0
    cfg = load_config(tmp_path / "model.yaml")
    assert cfg.inputs[0].shape[-1] == 512 and cfg.source["dims"] == {"chunk": 512}
    with rnnrt.load(tmp_path / "model.yaml", backend="onnxruntime", batch_size=1) as s:
        s.step({"input": np.zeros((1, 512), np.float32)})
        with pytest.raises(BindingError, match=r"Input 'input' \| Received shape \(1, 500\): dim 1 is 500, not 512"):
            s.step({"input": np.zeros((1, 500), np.float32)})
