"""Comparing two runs of the check: the error of one output against its reference, the largest errors and
first difference of one check, and the :class:`~rnnrt.ir.checks.CheckResult` it makes."""

from __future__ import annotations

from typing import Optional

import numpy as np

from rnnrt.ir.checks import CheckResult


TOLERANCE = 1e-5
"""An output differs where ``|got - ref| > TOLERANCE * max(1, max |ref|)``."""


def _error(ref: np.ndarray, got: np.ndarray, tol: float = TOLERANCE) -> tuple[float, float, bool]:
    """``(max abs error, max rel error, beyond tolerance)``; a shape mismatch is infinitely far."""
    if ref.shape != got.shape:
        return float("inf"), float("inf"), True
    if ref.size == 0:
        return 0.0, 0.0, False
    r, g = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    diff = np.where((r == g) | (np.isnan(r) & np.isnan(g)), 0.0, np.abs(g - r))
    diff = np.where(np.isnan(diff), np.inf, diff)
    finite = np.abs(r[np.isfinite(r)])
    limit = tol * max(1.0, float(finite.max()) if finite.size else 1.0)
    rel = diff / np.maximum(np.abs(np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)), limit)
    return float(diff.max()), float(rel.max()), bool(diff.max() > limit)


class _Tally:
    """The largest errors of one check and its first difference (step, output, error)."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.output: Optional[str] = None
        self.first: Optional[tuple[int, str, float]] = None

    def add(self, t: int, name: str, ref: np.ndarray, got: np.ndarray) -> None:
        a, r, bad = _error(ref, got)
        if self.output is None or a > self.max_abs:
            self.max_abs, self.output = a, name
        self.max_rel = max(self.max_rel, r)
        if bad and self.first is None:
            self.first = (t, name, a)

    def result(self, check: str, compared: str, reason: Optional[str] = None) -> CheckResult:
        if self.output is None:  # nothing matched: not a pass
            return CheckResult(check=check, compared=compared, passed=None,
                               reason=reason or "no output of the two runs could be matched")
        return CheckResult(check=check, compared=compared, passed=self.first is None, max_abs=self.max_abs,
                           max_rel=self.max_rel, output=self.output, reason=reason)


def _is_float(value: np.ndarray) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _not_run(check: str, reason: str) -> CheckResult:
    return CheckResult(check=check, compared="-", passed=None, reason=reason)
