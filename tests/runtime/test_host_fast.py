"""The host executor's fast path (full-batch steps of exactly-typed frames, no sequence start) equals the
checked path bit for bit, and declines every other frame (which then gets the full checks)."""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError
from tests.models import MODELS


@pytest.mark.parametrize("feedback", ["copy", "swap"])
def test_fast_path_equals_checked_path(tmp_path, feedback):
    path = MODELS["lstm_t1"](batch=3).save(tmp_path)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 3, 5)).astype(np.float32) for _ in range(8)]
    with rnnrt.load(path, backend="onnxruntime", threads=1, feedback=feedback) as fast, \
            rnnrt.load(path, backend="onnxruntime", threads=1, feedback=feedback, check_finite=True) as checked:
        assert fast.executor.fast is not None and checked.executor.fast is None
        taken = []
        real = fast.executor.fast

        def counted(*args):
            result = real(*args)
            taken.append(result is not None)
            return result

        fast.executor.fast = counted
        for k, x in enumerate(xs):
            if k == 4:
                fast.reset()
                checked.reset()
            frame = x if k % 2 else {"data": x}
            np.testing.assert_array_equal(fast.step(frame)["lstm1"], checked.step(frame)["lstm1"])
            for name, value in checked.state.items():
                np.testing.assert_array_equal(fast.state[name], value)
        # Steps 0 and 4 start sequences (full path); the others take the fast path.
        assert taken == [True] * 6
        # Declined: a safe cast, a fed continuation input, a non-contiguous array, a wrong shape.
        for frame in (xs[0].astype(np.float16), {"data": xs[0], "cont": np.ones((1, 3), np.float32)},
                      np.asfortranarray(np.repeat(xs[0], 2, axis=0))[:1]):
            fast.step(frame)
            checked.step(frame)
            np.testing.assert_array_equal(fast.state["lstm1.h0"], checked.state["lstm1.h0"])
        assert taken[6:] == [False, False, False]
        with pytest.raises(BindingError, match="shape"):
            fast.step(np.zeros((1, 2, 5), np.float32))
