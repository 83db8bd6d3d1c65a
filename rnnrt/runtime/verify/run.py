"""``verify``: one stream through every backend side by side, compared step by step."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from rnnrt.errors import ConfigError, RnnrtError, fmt
from rnnrt.runtime.verify.backends import parse_backends, resolve_backend
from rnnrt.runtime.verify.compare import PRECISION_ORDER, TOLERANCES, Comparison, compare
from rnnrt.runtime.verify.feeds import Feed, generate_feed, load_feed
from rnnrt.runtime.verify.report import VerifyReport

PathLike = Union[str, os.PathLike]

__all__ = ["default_backends", "verify"]


def default_backends(cfg: Any, config_path: Optional[PathLike] = None, plan: Optional[PathLike] = None) -> tuple[list[str], str]:
    """``onnxruntime,tensorrt`` when a plan and a GPU are usable, else ``onnxruntime`` (and why)."""
    from rnnrt.engines.trt import tensorrt_unavailable

    why = tensorrt_unavailable(cfg, plan, config_path)
    if why is None:
        return ["onnxruntime", "tensorrt"], ""
    return ["onnxruntime"], f"tensorrt not run: {why}"


def verify(
    config: Union[PathLike, Any],
    backends: Union[str, Sequence[str], None] = None,
    *,
    feed: Union[PathLike, Feed, None] = None,
    steps: int = 100,
    streams: Optional[int] = None,
    seed: int = 0,
    resets: Sequence[tuple[int, Optional[list[int]]]] = (),
    dims: Optional[Mapping[str, int]] = None,
    values: Optional[Mapping[str, float]] = None,
    atol: Optional[float] = None,
    rtol: Optional[float] = None,
    precision: Optional[str] = None,
    plan: Optional[PathLike] = None,
    state: bool = True,
) -> VerifyReport:
    """Runs one stream through every backend side by side and compares them step by step.

    Args:
        config (PathLike | ModelConfig): The model YAML config.
        backends (str | Sequence[str] | None): Backend specs (see the module doc). None: ``onnxruntime``
            and ``tensorrt`` where a plan and a GPU are usable, else ``onnxruntime``.
        feed (PathLike | Feed | None): A ``call{k}/{name}`` .npz (recorded outputs in it are compared too),
            or None to generate ``steps`` random frames.
        steps (int): Steps of a generated feed. Defaults to 100.
        streams (int | None): Streams (batch) of a generated feed. Defaults to the static batch, or 1.
        seed (int): Seed of a generated feed. Defaults to 0.
        resets (Sequence[tuple[int, list[int] | None]]): ``(step, slots)``: reset those slots (None: all)
            of every backend before that step.
        dims (Mapping[str, int] | None): Values of dynamic dims other than the batch in a generated feed.
        values (Mapping[str, float] | None): Inputs of a generated feed held at one value (``sr=16000``).
        atol (float | None): Absolute tolerance. Defaults to :data:`TOLERANCES` of ``precision``.
        rtol (float | None): Relative tolerance. Defaults likewise.
        precision (str | None): Precision for the default tolerances. Defaults to the lowest precision of
            the backends (a plan's manifest says its precision).
        plan (PathLike | None): The plan, when it is not the config's default.
        state (bool): Also compare the carried state after every step. Defaults to True.

    Returns:
        VerifyReport: ``passed`` is True when every compared tensor is within tolerance at every step.

    Raises:
        ConfigError: Bad backend specs, nothing to compare (one backend and no recording).
        BindingError: A bad feed.
        RnnrtError: A backend failed to load or to run (e.g. EngineError for a plan that cannot load).
    """
    from rnnrt.ir.config import ModelConfig, load_config

    config_path = None if isinstance(config, ModelConfig) else Path(config)
    cfg = config if isinstance(config, ModelConfig) else load_config(config)
    notes: list[str] = []
    if backends is None:
        names, why = default_backends(cfg, config_path, plan)
        if why:
            notes.append(why)
        specs = parse_backends(names)
    else:
        specs = parse_backends(backends)
    if isinstance(feed, Feed):
        data = feed
    elif feed is not None:
        data = load_feed(feed, cfg)
    else:
        data = generate_feed(cfg, steps, streams, seed, dims, values)
    if len(specs) < 2 and not data.has_recording:
        raise ConfigError(fmt("rnnrt verify", f"Has nothing to compare: one backend ({specs[0].text}) and a feed "
                              "without recorded outputs",
                              "Give two or more --backends (e.g. onnxruntime,tensorrt), or a --feed with call{k}/{output} "
                              "recordings (a Caffe io.npz)." + (f" ({notes[0]})" if notes else "")))
    resolved = [resolve_backend(s, cfg, config_path, plan) for s in specs]
    if precision is None:
        precision = max((b.precision for b in resolved), key=PRECISION_ORDER.index)
    if precision not in TOLERANCES:
        raise ConfigError(fmt(f"--precision {precision!r}", "Is not known", f"Expected one of {list(TOLERANCES)}."))
    d_atol, d_rtol = TOLERANCES[precision]
    atol = d_atol if atol is None else float(atol)
    rtol = d_rtol if rtol is None else float(rtol)
    if atol < 0 or rtol < 0:
        raise ConfigError(fmt(f"--atol {atol} / --rtol {rtol}", "Must not be negative"))
    reset_map: dict[int, list[Optional[list[int]]]] = {}
    for step, slots in resets:
        if step >= len(data.calls):
            notes.append(f"reset at step {step} is past the last step ({len(data.calls) - 1})")
        reset_map.setdefault(step, []).append(slots)

    sessions: list[Any] = []
    comparisons: dict[tuple[str, str, str], Comparison] = {}
    ref_label = resolved[0].label

    def comp(ref: str, cand: str, tensor: str, kind: str) -> Comparison:
        key = (ref, cand, tensor)
        if key not in comparisons:
            comparisons[key] = Comparison(ref, cand, tensor, kind)
        return comparisons[key]

    try:
        for b in resolved:
            sessions.append(b.make_session(data.batch))
        state_names = [s.input for s in cfg.state] if state else []
        for k, frame in enumerate(data.calls):
            for slots in reset_map.get(k, []):
                for s in sessions:
                    s.reset() if slots is None else s.reset(slots=slots)
            results = []
            for b, s in zip(resolved, sessions):
                feeds = {n: _cast(v, s, n) for n, v in frame.items()}
                # Copies: a Session may return views that its next step overwrites.
                out = {n: np.array(v, copy=True) for n, v in s.step(feeds).items()}
                if state_names:
                    st = s.state
                    out.update({f"state:{n}": np.array(st[n]) for n in state_names})
                results.append(out)
            pairs = [(ref_label, results[0], b.label, r) for b, r in zip(resolved[1:], results[1:])]
            if data.recorded[k]:
                pairs = [("recorded", data.recorded[k], b.label, r) for b, r in zip(resolved, results)] + pairs
            for rname, ref, cname, got in pairs:
                for tensor, rv in ref.items():
                    kind = "state" if tensor.startswith("state:") else "output"
                    c = comp(rname, cname, tensor, kind)
                    if c.error is not None:
                        continue
                    if tensor not in got:
                        c.error = f"{cname} has no {tensor!r}"
                        continue
                    gv = got[tensor]
                    if np.shape(gv) != np.shape(rv):
                        c.error = f"step {k}: shape {list(np.shape(gv))} vs {list(np.shape(rv))}"
                        continue
                    a, r, beyond = compare(rv, gv, atol, rtol)
                    c.max_abs.append(a)
                    c.max_rel.append(r)
                    c.failed.append(beyond)
    finally:
        for s in sessions:
            try:
                s.close()
            except RnnrtError:
                pass
    return VerifyReport(str(config_path) if config_path is not None else "<config>", resolved, data, list(resets),
                        precision, atol, rtol, list(comparisons.values()), notes)


def _cast(value: np.ndarray, session: Any, name: str) -> np.ndarray:
    """The frame in the dtype this session's config declares (a plan built with fp16 I/O takes fp16)."""
    for t in session.config.inputs:
        if t.name == name and t.dtype != "bfloat16" and np.dtype(t.dtype) != value.dtype:
            return value.astype(t.dtype)
    return value
