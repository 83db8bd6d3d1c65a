"""Pictures of what ``rnnrt bench`` and ``rnnrt verify`` measured (``--plot out.png``).

matplotlib is an optional extra (``pip install 'rnnrt[plot]'``); without it ``--plot`` is a
:class:`rnnrt.errors.ConfigError` saying so. Figures are drawn with the non-interactive Agg backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from rnnrt.errors import ConfigError, fmt
from rnnrt.safe_write import staged


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ConfigError(fmt("--plot", "Needs matplotlib, which is not installed", "pip install 'rnnrt[plot]'.")) from err
    return plt


def latency_histogram(times_us: Sequence[float], path: Union[str, os.PathLike], title: str) -> Path:
    """Histogram of per-step latencies (µs) with the median and p99 marked; returns ``path``."""
    plt = pyplot()
    us = np.asarray(times_us, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    lo, hi = (max(float(us.min()), 1e-3), max(float(us.max()), 1e-3)) if us.size else (1.0, 10.0)
    ax.hist(us, bins=np.geomspace(lo, hi * 1.0001 if hi > lo else lo * 1.01, 80), color="tab:blue", alpha=0.85)
    ax.set_xscale("log")
    for q, style, name in ((50, "-", "median"), (99, "--", "p99")):
        v = float(np.percentile(us, q))
        ax.axvline(v, color="black", linestyle=style, linewidth=1, label=f"{name} {v:.1f} µs")
    ax.set_xlabel("step latency (µs, host time, log scale)")
    ax.set_ylabel("steps")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: Union[str, os.PathLike]) -> Path:
    """Saves and closes a figure through :mod:`rnnrt.safe_write` (temporary name, rename; never through a
    link); matplotlib picks the format by the file's suffix. Returns the path."""
    path = Path(path)
    with staged([path], "Plot") as (tmp,):
        fig.savefig(tmp)  # the same file name, so the suffix still names the format
    pyplot().close(fig)
    return path
