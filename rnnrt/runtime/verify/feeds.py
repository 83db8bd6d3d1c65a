"""The frames ``rnnrt verify`` steps through: a feed ``.npz`` (``call{k}/{name}``, optionally with recorded outputs),
or random frames generated from the config's shapes; and the ``--reset-at`` grammar."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np

from rnnrt.errors import BindingError, ConfigError, fmt

PathLike = Union[str, os.PathLike]

__all__ = ["MAX_FEED_BYTES", "Feed", "generate_feed", "load_feed", "parse_resets"]


_MAX_FEED_ARRAYS = 100_000
MAX_FEED_BYTES = 1 << 32


@dataclasses.dataclass
class Feed:
    """The frames of every step and, optionally, recorded outputs.

    Args:
        calls (list[dict[str, np.ndarray]]): Step k's frame (inputs by name).
        recorded (list[dict[str, np.ndarray]]): Step k's recorded outputs (empty dicts when none).
        batch (int | None): Number of streams (slots) the frames carry.
        source (str): ``"generated"`` or the feed file.
        seed (int | None): Seed of a generated feed.
    """

    calls: list[dict[str, np.ndarray]]
    recorded: list[dict[str, np.ndarray]]
    batch: Optional[int]
    source: str
    seed: Optional[int] = None

    @property
    def has_recording(self) -> bool:
        return any(self.recorded)


def _batch_of(cfg: Any, frame: Mapping[str, np.ndarray]) -> Optional[int]:
    for t in cfg.inputs:
        if t.batch_axis is not None and t.name in frame and frame[t.name].ndim > t.batch_axis:
            return int(frame[t.name].shape[t.batch_axis])
    return None


def load_feed(path: PathLike, cfg: Any) -> Feed:
    """Reads a feed ``.npz`` (keys ``call{k}/{name}``: inputs, and recorded outputs if present) with
    :func:`rnnrt.runtime.npz.read_calls`: every key and header is checked before any array is read.

    Raises:
        BindingError: Not an .npz, a key that is not ``call{k}/{name}``, a name that is neither an input
            nor an output, calls with gaps, or no calls.
    """
    from rnnrt.runtime.npz import read_calls

    calls, recorded = read_calls(path, [t.name for t in cfg.inputs], [t.name for t in cfg.outputs], MAX_FEED_BYTES,
                                 max_arrays=_MAX_FEED_ARRAYS)
    if not calls:
        raise BindingError(fmt(f"Feed {str(path)!r}", "Has no inputs", "Keys are call{k}/{input} (call0/data, ...)."))
    return Feed(calls, recorded, _batch_of(cfg, calls[0]), str(path))


def _index_ranges(model_path: Path) -> dict[str, tuple[int, int]]:
    """Graph inputs used as Gather indices (after Cast/Reshape/...): name -> [0, rows) of the table."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # the Session reports a bad model; ranges are a nicety
        return {}
    g = model.graph
    shapes = {t.name: list(t.dims) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(numpy_helper.to_array(a.t).shape) if a.t.data_location == 0 else list(a.t.dims)
    origin = {i.name: i.name for i in g.input}
    passthrough = {"Cast", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Floor", "Transpose", "Where",
                   "Clip", "Min", "Max", "Mod"}
    ranges: dict[str, tuple[int, int]] = {}
    for node in g.node:
        if node.op_type in passthrough and node.output:
            src = next((i for i in node.input if i in origin), None)
            if src is not None:
                origin[node.output[0]] = origin[src]
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in origin and node.input[0] in shapes:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            rows = shapes[node.input[0]][axis]
            name = origin[node.input[1]]
            lo, hi = ranges.get(name, (0, rows))
            ranges[name] = (0, min(hi, rows))
    return ranges


def generate_feed(cfg: Any, steps: int, streams: Optional[int] = None, seed: int = 0,
                  dims: Optional[Mapping[str, int]] = None, values: Optional[Mapping[str, float]] = None) -> Feed:
    """Random frames from the config's shapes: floats in [-1, 1), embedding ids within their table.

    The continuation input is left out (the Session fills it; resets come from ``resets``).

    Args:
        cfg (ModelConfig): The config.
        steps (int): Number of steps.
        streams (int | None): Streams (the batch dim); required when it is dynamic.
        seed (int): Seed of the generator. Defaults to 0.
        dims (Mapping[str, int] | None): Values of other dynamic dims (e.g. a time axis ``T``). A dynamic
            dim not given is 1.
        values (Mapping[str, float] | None): Inputs filled with one value at every step (e.g. Silero's
            ``sr=16000``).

    Raises:
        ConfigError: ``steps`` < 1, ``streams`` < 1 or not the static batch; ``values`` naming no input.
    """
    if steps < 1:
        raise ConfigError(fmt(f"--steps {steps}", "Must be at least 1"))
    if streams is not None and streams < 1:
        raise ConfigError(fmt(f"--streams {streams}", "Must be at least 1"))
    dims = dict(dims or {})
    values = dict(values or {})
    unknown = sorted(set(values) - {t.name for t in cfg.inputs})
    if unknown:
        raise ConfigError(fmt(f"--shared {unknown[0]}", "Names no input of the model", f"Inputs: {[t.name for t in cfg.inputs]}."))
    cont = cfg.continuation.input if cfg.continuation is not None else None
    batch_dims = {t.shape[t.batch_axis] for t in list(cfg.inputs) + list(cfg.state) if t.batch_axis is not None}
    static = {d for d in batch_dims if isinstance(d, int)}
    symbols = {d for d in batch_dims if isinstance(d, str)}
    if symbols and streams is None:
        streams = 1
    if static and streams is not None and streams not in static and not symbols:
        raise ConfigError(fmt(f"--streams {streams}", f"The model has a static batch of {min(static)}",
                              "Convert with `--batch dynamic` to verify other stream counts."))
    if streams is None and static:
        streams = min(static)
    for sym in symbols:
        dims[sym] = int(streams)  # type: ignore[arg-type]
    ranges = _index_ranges(cfg.model_path)
    rng = np.random.default_rng(seed)
    calls = []
    for _ in range(steps):
        frame = {}
        for t in cfg.inputs:
            if t.name == cont and t.name not in values:
                continue
            shape = [int(d) if isinstance(d, int) else int(dims.get(d, 1)) for d in t.shape]
            dtype = np.dtype(t.dtype) if t.dtype != "bfloat16" else np.dtype(np.float32)
            if t.name in values:
                frame[t.name] = np.full(shape, values[t.name], dtype=dtype)
            elif t.name in ranges:
                lo, hi = ranges[t.name]
                frame[t.name] = rng.integers(lo, max(hi, lo + 1), size=shape).astype(dtype)
            elif dtype.kind == "f":
                frame[t.name] = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
            elif dtype.kind == "b":
                frame[t.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                frame[t.name] = rng.integers(0, 2, size=shape).astype(dtype)
        calls.append(frame)
    return Feed(calls, [{} for _ in range(steps)], streams, "generated", seed)


def parse_resets(items: Iterable[str]) -> list[tuple[int, Optional[list[int]]]]:
    """``["10,20", "15:0,2"]`` -> ``[(10, None), (20, None), (15, [0, 2])]`` (None: every stream).

    Raises:
        ConfigError: Not integers, or negative.
    """
    resets: list[tuple[int, Optional[list[int]]]] = []
    for item in items:
        try:
            if ":" in item:
                step, _, slots = item.partition(":")
                resets.append((int(step), [int(s) for s in slots.split(",") if s.strip()]))
            else:
                resets.extend((int(s), None) for s in item.split(",") if s.strip())
        except ValueError:
            raise ConfigError(fmt(f"--reset-at {item!r}", "Is not STEP[,STEP...] or STEP:SLOT[,SLOT...]",
                                  "Example: --reset-at 50,100 --reset-at 75:0,2")) from None
    for step, slots in resets:
        if step < 0 or (slots is not None and any(s < 0 for s in slots)):
            raise ConfigError(fmt(f"--reset-at {step}", "Steps and slots are non-negative"))
    return resets
