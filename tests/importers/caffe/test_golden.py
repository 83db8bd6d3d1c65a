"""Every call of every ground-truth case (real BVLC Caffe) through convert + Session on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
from tests.conftest import converted_golden, golden_cases

ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(case):
        if case.name not in cache:
            cache[case.name] = converted_golden(case, tmp_path_factory)
        return cache[case.name]

    return get


@pytest.mark.parametrize("name", golden_cases())
def test_golden_case_every_call(golden, converted, name):
    case = golden(name)
    with rnnrt.load(converted(case), backend="onnxruntime") as session:
        for k in range(case.num_calls):
            feeds, expected = case.call(k)
            got = session.step(feeds)
            assert set(got) == set(expected), f"call {k}: outputs {sorted(got)} vs Caffe's {sorted(expected)}"
            for out, ref in expected.items():
                np.testing.assert_allclose(got[out], ref, atol=ATOL, rtol=RTOL, err_msg=f"{name} call {k} {out}")


@pytest.mark.parametrize("name", ["a_lstm_stream_t1n1", "i_embed_lstm_lm_stream"])
def test_auto_continuation_matches_fed_cont(golden, converted, name):
    """Omitting cont and calling reset() at Caffe's cont=0 calls gives Caffe's outputs."""
    case = golden(name)
    cont_name = "cont" if "cont" in case.meta["inputs"] else "cont_sentence"
    with rnnrt.load(converted(case), backend="onnxruntime") as session:
        for k in range(case.num_calls):
            feeds, expected = case.call(k)
            cont = feeds.pop(cont_name)
            if np.all(cont == 0):
                session.reset()
            elif np.any(cont == 0):
                session.reset(slots=np.nonzero(cont[0] == 0)[0].tolist())
            got = session.step(feeds)
            for out, ref in expected.items():
                np.testing.assert_allclose(got[out], ref, atol=ATOL, rtol=RTOL, err_msg=f"call {k}")


def test_fractional_cont_scales_state(golden, converted):
    """h7: cont is non-binary; Caffe multiplies the previous h and c by it."""
    case = golden("h7_lstm_cont_fractional")
    feeds, _ = case.call(0)
    assert np.any((feeds["cont"] > 0) & (feeds["cont"] < 1)), "the case must exercise fractional cont"
    test_golden_case_every_call(golden, converted, "h7_lstm_cont_fractional")
