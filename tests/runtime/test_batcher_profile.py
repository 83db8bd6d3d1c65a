"""benchmarks/batcher_profile.py: the ceiling and the phase profile of the batcher on the real-time load.

Small runs (a few streams, a fraction of a second): the numbers are the benchmark's; here, that every
phase is counted, the counters leave the batcher as it was, and the ceiling arithmetic.
"""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("silero_vad")
pytest.importorskip("onnxruntime")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import batcher_profile  # noqa: E402  (benchmarks/batcher_profile.py)

from rnnrt.runtime import batch_targets as targets_mod  # noqa: E402
from rnnrt.runtime import batcher as batcher_mod  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return batcher_profile.converted(tmp_path_factory.mktemp("silero"))


def test_profile_counts_every_phase_and_restores_the_batcher(model):
    before = {name: getattr(batcher_mod.StreamBatcher, name) for name in ("_submit", "_take", "_tick", "_flush")}
    before_module = (targets_mod._put_rows, batcher_mod._deliver, targets_mod.PoolTarget.prepare)
    r = batcher_profile.profile(model, streams=6, seconds=0.3, jitter_ms=8.0, max_delay_ms=2.0)
    count = batcher_profile.Load(6, 0.3, 8.0).count
    assert r["frames"] == 6 * (count + 1)  # every timed chunk plus each stream's silent first one
    assert r["calls"]["submit"] == r["calls"]["prepare"] == r["frames"]
    assert r["calls"]["engine"] == r["calls"]["session_step"] >= 1
    for phase, _, _ in batcher_profile.PHASES:
        if phase != "wait":  # the worker may never find the queue empty
            assert r["phases"][phase] > 0, phase
    assert r["phases"]["prepare"] <= r["phases"]["submit"]
    assert r["phases"]["session_step"] <= r["phases"]["engine"] <= r["phases"]["tick"]
    assert r["loop"] > 0 and r["worker"] > r["phases"]["session_step"] and r["load_alone"] > 0 and r["wakeup"] > 0
    # The counters are gone: the batcher's functions are its own again.
    assert {name: getattr(batcher_mod.StreamBatcher, name) for name in before} == before
    assert (targets_mod._put_rows, batcher_mod._deliver, targets_mod.PoolTarget.prepare) == before_module


def test_ceiling_rows_and_zero_overhead_streams(model):
    rows = batcher_profile.ceiling(model, capacity=8, batches=[1, 4], seconds=0.1)
    assert [k for k, _, _ in rows] == [1, 4]
    assert all(pool_us > 0 and raw_us > 0 for _, pool_us, raw_us in rows)
    # 40 µs a frame at batch 100 (a 4 ms tick): 25,000 frames/s, 800 streams at 31.25 frames/s each;
    # with 10 µs a frame of the application's own, 640. Batch 500 (30 µs a frame) takes a 15 ms tick:
    # over a 10 ms budget, within a 20 ms one.
    synthetic = [(100, 4000.0, 0.0), (500, 15000.0, 0.0), (1, 100.0, 0.0)]
    assert batcher_profile.zero_overhead(synthetic, 10.0) == pytest.approx((800.0, 100))
    assert batcher_profile.zero_overhead(synthetic, 10.0, load_us=10.0) == pytest.approx((640.0, 100))
    assert batcher_profile.zero_overhead(synthetic, 20.0) == pytest.approx((1066.67, 500), rel=1e-4)
