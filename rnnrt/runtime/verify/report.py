"""What :func:`rnnrt.runtime.verify.verify` found: the table ``rnnrt verify`` prints, its JSON (:data:`SCHEMA`) and its plot."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from rnnrt.runtime.verify.backends import Backend
from rnnrt.runtime.verify.compare import Comparison
from rnnrt.runtime.verify.feeds import Feed

PathLike = Union[str, os.PathLike]

__all__ = ["SCHEMA", "VerifyReport"]


SCHEMA = "rnnrt.verify/1"
"""``schema`` of :meth:`VerifyReport.to_json`; changes only with a new number."""


@dataclasses.dataclass
class VerifyReport:
    """What :func:`verify` found. ``passed`` is the exit status; :meth:`table`, :meth:`to_json`, :meth:`plot`."""

    config: str
    backends: list[Backend]
    feed: Feed
    resets: list[tuple[int, Optional[list[int]]]]
    precision: str
    atol: float
    rtol: float
    comparisons: list[Comparison]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    @property
    def steps(self) -> int:
        return len(self.feed.calls)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON; its layout is :data:`SCHEMA` (documented in docs/build.md)."""
        return {
            "schema": SCHEMA,
            "config": self.config,
            "passed": self.passed,
            "backends": [{"label": b.label, "spec": b.spec, "kind": b.kind, "precision": b.precision, "note": b.note}
                         for b in self.backends],
            "reference": self.backends[0].label if self.backends else None,
            "recorded": self.feed.has_recording,
            "feed": {"source": self.feed.source, "steps": self.steps, "streams": self.feed.batch, "seed": self.feed.seed},
            "resets": [{"step": s, "slots": slots} for s, slots in self.resets],
            "tolerance": {"precision": self.precision, "atol": self.atol, "rtol": self.rtol},
            "comparisons": [c.to_json() for c in self.comparisons],
            "notes": list(self.notes),
        }

    def table(self) -> str:
        """The human-readable report (what ``rnnrt verify`` prints)."""
        streams = f" x {self.feed.batch} streams" if self.feed.batch is not None else ""
        src = "generated, seed %s" % self.feed.seed if self.feed.source == "generated" else self.feed.source
        lines = [f"rnnrt verify {self.config}: {self.steps} steps{streams} ({src})"]
        if self.resets:
            lines.append("resets: " + ", ".join(f"step {s}" + (f" slots {slots}" if slots is not None else "")
                                                for s, slots in self.resets))
        for b in self.backends:
            lines.append(f"backend {b.label}: {b.kind}, {b.precision}" + (f" ({b.note})" if b.note else ""))
        lines.append(f"tolerance ({self.precision}): atol {self.atol:g}, rtol {self.rtol:g}")
        lines.extend(f"note: {n}" for n in self.notes)
        headers = ["reference", "candidate", "tensor", "max abs", "max rel", "worst step", "first beyond", "result"]
        rows = []
        for c in self.comparisons:
            if c.error is not None:
                rows.append([c.reference, c.candidate, c.tensor, "-", "-", "-", "-", "ERROR"])
                continue
            first = c.first_failure
            rows.append([c.reference, c.candidate, c.tensor, f"{max(c.max_abs, default=0.0):.3g}",
                         f"{max(c.max_rel, default=0.0):.3g}", c.worst_step, "-" if first is None else first,
                         "ok" if c.passed else "FAIL"])
        cells = [headers] + [[str(x) for x in r] for r in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        fmt_row = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
        lines += ["", fmt_row(headers), "  ".join("-" * w for w in widths)] + [fmt_row(r) for r in cells[1:]]
        for c in self.comparisons:
            if c.error is not None:
                lines.append(f"ERROR {c.candidate} {c.tensor}: {c.error}")
        failed = [c for c in self.comparisons if not c.passed]
        lines.append("")
        if not self.comparisons:
            lines.append("NOTHING COMPARED")
        elif failed:
            first = min(failed, key=lambda c: (c.first_failure if c.first_failure is not None else -1))
            lines.append(f"FAILED: {len(failed)} of {len(self.comparisons)} tensors beyond tolerance; first: "
                         f"{first.candidate} {first.tensor} at step {first.first_failure}")
        else:
            lines.append(f"PASSED: {len(self.comparisons)} tensors within tolerance at every step")
        return "\n".join(lines)

    def plot(self, path: PathLike) -> Path:
        """Draws the max abs error per step of every compared tensor (log scale) with the tolerance."""
        from rnnrt.runtime.plots import pyplot, save_figure

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(11, 4.8), dpi=110)
        for c in self.comparisons:
            if c.error is not None or not c.max_abs:
                continue
            y = np.maximum(np.asarray(c.max_abs, dtype=np.float64), 1e-12)
            ax.plot(np.arange(len(y)), y, label=f"{c.candidate} vs {c.reference}: {c.tensor}", linewidth=1.2)
            if c.first_failure is not None:
                ax.scatter([c.first_failure], [y[c.first_failure]], marker="x", color="red", zorder=5)
        ax.axhline(self.atol, color="black", linestyle="--", linewidth=1, label=f"atol {self.atol:g}")
        for s, _ in self.resets:
            ax.axvline(s, color="grey", linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("max |error| per step (0 drawn at 1e-12)")
        ax.set_title(f"rnnrt verify {Path(self.config).name}: {'PASSED' if self.passed else 'FAILED'}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        return save_figure(fig, path)
