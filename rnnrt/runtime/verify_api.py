"""``rnnrt.verify``: compare backends step by step on one stream.

What ``rnnrt verify`` runs: the paths are checked before any backend loads, then
:func:`rnnrt.runtime.verify.verify` runs the comparison.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

# `typing` is imported for type checkers only: `import rnnrt` stays light.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Union

    from rnnrt.ir.config import ModelConfig
    from rnnrt.runtime.verify import VerifyReport

    PathLike = Union[str, os.PathLike]

__all__ = ["verify"]


def verify(
    config: Union[PathLike, ModelConfig],
    backends: Union[str, Sequence[str], None] = None,
    *,
    feed: Optional[PathLike] = None,
    steps: int = 100,
    streams: Optional[int] = None,
    seed: int = 0,
    resets: Sequence[tuple[int, Optional[list[int]]]] = (),
    dims: Optional[Mapping[str, int]] = None,
    shared: Optional[Mapping[str, Any]] = None,
    atol: Optional[float] = None,
    rtol: Optional[float] = None,
    precision: Optional[str] = None,
    plan: Optional[PathLike] = None,
    state: bool = True,
) -> VerifyReport:
    """Runs one stream through two or more backends side by side (each its own Session, state carried) and
    compares their outputs and carried state at every step, and with the outputs recorded in ``feed``.

    Args:
        config (PathLike | ModelConfig): The model YAML config.
        backends (str | Sequence[str] | None): Backend specs ``BASE[:key=value]...`` (see
            :mod:`rnnrt.runtime.verify`). None: ``onnxruntime`` and ``tensorrt`` where a plan and a GPU are
            usable, else ``onnxruntime``.
        feed (PathLike | None): A ``call{k}/{name}`` .npz (recorded outputs in it are compared too). None:
            ``steps`` random frames from the config's shapes.
        steps (int): Steps of a generated stream. Default: 100.
        streams (int | None): Streams (batch) of a generated stream. Default: the static batch, or 1.
        seed (int): Seed of a generated stream. Default: 0.
        resets (Sequence[tuple[int, list[int] | None]]): ``(step, slots)``: reset those slots (None: all) of
            every backend before that step. Default: none.
        dims (Mapping[str, int] | None): Size of each other dynamic dim of a generated stream. Default: 1 each.
        shared (Mapping[str, Any] | None): Inputs of a generated stream held at one value every step
            (``{"sr": 16000}``). Default: none.
        atol (float | None): Absolute tolerance. Default: by ``precision``.
        rtol (float | None): Relative tolerance. Default: by ``precision``.
        precision (str | None): Precision whose default tolerances apply. Default: the lowest of the backends.
        plan (PathLike | None): The plan, when not the config's default. Default: None.
        state (bool): Also compare the carried state. Default: True.

    Returns:
        VerifyReport: ``passed`` is True when every compared tensor is within tolerance at every step;
        ``table()``, ``to_json()`` (schema ``rnnrt.verify/1``) and ``plot(path)`` give the report.

    Raises:
        ConfigError: Bad backend specs or options, a config or feed that is not a file, nothing to compare.
        BindingError: A bad feed.
        RnnrtError: A backend failed to load or to run.

    Example::

        import rnnrt

        report = rnnrt.verify("out/model.yaml", "onnxruntime,tensorrt", streams=4, resets=[(50, None)])
        assert report.passed, report.table()
    """
    from rnnrt.paths import check_input_file
    from rnnrt.runtime import verify as comparison

    if isinstance(config, (str, os.PathLike)):
        check_input_file(config, "Config")
    check_input_file(feed, "Feed")
    return comparison.verify(config, backends, feed=feed, steps=steps, streams=streams, seed=seed, resets=resets,
                             dims=dims, values=shared, atol=atol, rtol=rtol, precision=precision, plan=plan,
                             state=state)
