"""The record of the convert-time equivalence check: the model config's ``checks:`` section.

``rnnrt convert`` runs the original model and the step graph side by side
(:func:`rnnrt.importers.check.check_conversion`) and writes what it compared, the largest errors, the seed
and the number of steps. A model whose batch rows mix (dynamic quantization, batch statistics) runs one
stream per batch: :attr:`ChecksRecord.batch_one` holds the reason, and a ``StreamPool`` over more than one
slot refuses it::

    checks:
      seed: 0
      steps: 8
      results:
      - {check: streaming, compared: step graph streamed one frame per call vs the original fed its state by hand, ...}
      - {check: batch, compared: 3 streams in one batch vs each alone, max_abs: 0.0, max_rel: 0.0, ...}
      - {check: reset, compared: a stream reset at step 4 vs a fresh one, ...}
      batch_one: null
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from rnnrt.ir.bindings import PositiveInt, StrictInt

__all__ = ["CheckResult", "ChecksRecord"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class CheckResult(BaseModel):
    """One comparison of the check."""

    model_config = _STRICT

    check: Literal["streaming", "batch", "reset", "reference"] = Field(description="Which property was checked.")
    compared: str = Field(description="What was run against what.")
    passed: Optional[bool] = Field(description="True: equal within tolerance; false: differs; null: not run.")
    max_abs: Optional[float] = Field(default=None, description="Largest absolute error over every compared output.")
    max_rel: Optional[float] = Field(default=None, description="Largest error relative to the reference's magnitude.")
    output: Optional[str] = Field(default=None, description="The output with the largest error.")
    reason: Optional[str] = Field(default=None, description="Why it was not run, or what differs.")


class ChecksRecord(BaseModel):
    """The ``checks:`` section of a model config."""

    model_config = _STRICT

    seed: StrictInt = Field(description="Seed of the generated frames.")
    steps: PositiveInt = Field(description="Calls per stream (two sequences, a reset between them).")
    results: list[CheckResult] = Field(default_factory=list, description="One entry per check.")
    batch_one: Optional[str] = Field(
        default=None, description="Why the model must run one stream per batch (its rows mix); null: streams "
        "in one batch are independent or the batch is fixed at 1.")

    def summary(self) -> str:
        """One line: ``check: streaming ok (max abs 0), batch ok (max abs 0), reset ok (max abs 0)``."""
        parts = []
        for r in self.results:
            state = "not run" if r.passed is None else ("ok" if r.passed else "DIFFERS")
            err = f" (max abs {r.max_abs:.3g})" if r.max_abs is not None else ""
            parts.append(f"{r.check} {state}{err}")
        line = "check: " + ", ".join(parts) + f" [seed {self.seed}, {self.steps} steps]"
        if self.batch_one:
            line += f"; one stream per batch only: {self.batch_one}"
        return line
