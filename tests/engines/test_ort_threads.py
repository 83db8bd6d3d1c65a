"""The ONNX Runtime engine's default thread count: chosen from the step's cost (MACs), overridable."""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
from rnnrt.engines.onnxruntime import THREAD_GRAIN_MACS, OnnxRuntimeEngine, choose_threads, step_macs
from tests.models import MODELS

LSTM2_MACS = 256 * 2048 + 3 * 512 * 2048  # input 256, two layers of hidden 512: [x|h] x W per layer


@pytest.fixture(scope="module")
def lstm2(tmp_path_factory):
    fixed = MODELS["lstm2_bench"](batch=1).save(tmp_path_factory.mktemp("b1"))
    dynamic = MODELS["lstm2_bench"](batch="N").save(tmp_path_factory.mktemp("bN"))
    return fixed, dynamic


def test_step_macs_counts_weights_times_positions(lstm2):
    fixed, dynamic = lstm2
    assert step_macs(fixed.with_name("model.onnx")) == LSTM2_MACS
    # A dynamic batch is not in the graph: the rows the step carries multiply it.
    assert step_macs(dynamic.with_name("model.onnx"), rows=64) == 64 * LSTM2_MACS
    assert step_macs(fixed.with_name("model.onnx").read_bytes()) == LSTM2_MACS
    assert step_macs(b"not onnx") == 0


def test_choose_threads_one_for_small_steps_more_for_large():
    assert choose_threads(0, cores=16) == 1
    assert choose_threads(300_000, cores=16) == 1            # Silero VAD, one stream
    assert choose_threads(64 * 300_000, cores=16) == 1       # Silero VAD, 64 streams
    assert choose_threads(LSTM2_MACS, cores=16) == 1         # 2-layer LSTM 512, batch 1
    assert choose_threads(64 * LSTM2_MACS, cores=16) == 64 * LSTM2_MACS // THREAD_GRAIN_MACS == 7
    assert choose_threads(10**12, cores=16) == 16
    assert choose_threads(10**12, cores=1) == 1              # e.g. a process pinned to one core


def test_sessions_use_the_rule_unless_threads_is_given(lstm2):
    fixed, dynamic = lstm2
    with rnnrt.load(fixed, backend="onnxruntime") as s:
        assert s.engine.threads_used == 1
    with rnnrt.load(dynamic, backend="onnxruntime", batch_size=256) as s:
        assert s.engine.threads_used == choose_threads(256 * LSTM2_MACS)
        y = s.step({"data": np.ones((1, 256, 256), np.float32)})
    with rnnrt.load(dynamic, backend="onnxruntime", batch_size=256, threads=1) as s:
        assert s.engine.threads_used == 1
        np.testing.assert_allclose(s.step({"data": np.ones((1, 256, 256), np.float32)})["lstm2"], y["lstm2"],
                                   rtol=1e-5, atol=1e-6)
    engine = OnnxRuntimeEngine(fixed.with_name("model.onnx"), threads=3)
    with engine:
        assert engine.threads_used == 3
