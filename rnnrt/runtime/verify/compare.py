"""How two runs of one tensor are compared: the default tolerances and the per-step error record."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Union

import numpy as np

__all__ = ["Comparison", "PRECISION_ORDER", "TOLERANCES", "compare"]


TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-3),
    "tf32": (1e-3, 1e-2),
    "fp16": (2e-3, 1e-2),
    "bf16": (2e-2, 5e-2),
}
"""Default ``(atol, rtol)`` by the lowest precision among the compared backends."""

PRECISION_ORDER = ["fp32", "tf32", "fp16", "bf16"]


@dataclasses.dataclass
class Comparison:
    """One tensor of one candidate against one reference, over the whole stream."""

    reference: str
    candidate: str
    tensor: str
    kind: str  # "output" or "state"
    max_abs: list[float] = dataclasses.field(default_factory=list)
    max_rel: list[float] = dataclasses.field(default_factory=list)
    failed: list[bool] = dataclasses.field(default_factory=list)
    error: Optional[str] = None

    @property
    def worst_step(self) -> Optional[int]:
        return int(np.argmax(self.max_abs)) if self.max_abs else None

    @property
    def first_failure(self) -> Optional[int]:
        return next((k for k, f in enumerate(self.failed) if f), None)

    @property
    def passed(self) -> bool:
        return self.error is None and not any(self.failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "tensor": self.tensor,
            "kind": self.kind,
            "max_abs": _num(max(self.max_abs, default=0.0)),
            "max_rel": _num(max(self.max_rel, default=0.0)),
            "worst_step": self.worst_step,
            "first_failure": self.first_failure,
            "steps": len(self.max_abs),
            "passed": self.passed,
            "error": self.error,
            "per_step": {"max_abs": [_num(v) for v in self.max_abs], "max_rel": [_num(v) for v in self.max_rel]},
        }


def _num(v: float) -> Union[float, str]:
    v = float(v)
    return v if math.isfinite(v) else ("inf" if v > 0 else "nan" if math.isnan(v) else "-inf")


def compare(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    """``(max abs error, max rel error, beyond tolerance)`` of ``got`` against ``ref``.

    The rel error of an element is ``|got - ref| / max(|ref|, atol)``; an element is beyond tolerance
    when ``|got - ref| > atol + rtol * |ref|``. A NaN or inf where the reference has none is infinitely
    far (and beyond); matching non-finite values agree.
    """
    r = np.asarray(ref, dtype=np.float64)
    g = np.asarray(got, dtype=np.float64)
    if r.size == 0:
        return 0.0, 0.0, False
    same = (r == g) | (np.isnan(r) & np.isnan(g))
    diff = np.where(same, 0.0, np.abs(g - r))
    diff = np.where(np.isnan(diff), np.inf, diff)
    rel = diff / np.maximum(np.abs(np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)), max(atol, 1e-30))
    beyond = bool(np.any(diff > atol + rtol * np.abs(np.nan_to_num(r, nan=0.0))))
    return float(diff.max()), float(rel.max()), beyond
