"""``rnnrt verify``: run one stream through several backends side by side and compare every step.

Think ``polygraphy run --trt --onnxrt``, but stateful: every backend gets its own :class:`Session`,
the same frames step by step, the state carried inside each Session, and the same resets at the same
steps. After every step each backend's outputs (and, by default, its carried state) are compared with
the reference backend (the first one) and with the outputs *recorded* in the feed, if it has any
(a Caffe ``io.npz`` is such a feed). Reported per compared tensor: the max abs and rel error over the
stream, the step where it was worst, the first step beyond ``atol + rtol * |reference|``, and the
error of every step (``--json``, ``--plot``).

Backends (``--backends``, comma-separated; each ``BASE[:key=value]...``):

- ``onnxruntime``: the config's graph on ONNX Runtime. Options ``opt=disable|basic|extended|all``
  (graph optimization level), ``graph=plan`` (run the graph the plan was built from: the reduced
  precision rewrite of ``rnnrt build --precision fp16``), ``threads=N``.
- ``tensorrt``: the plan built for the config (found through its manifest). Options ``plan=PATH``,
  ``runtime=tensorrt_lean`` (force a runtime module), ``runtime_cache=PATH`` (a TensorRT-RTX runtime
  cache chosen at run time).
- ``module.path:callable``: your own engine. ``callable(config, **options)`` returns an engine or an
  engine factory (e.g. a stand-in GPU engine in tests). An engine installed under the entry-point group
  ``rnnrt.engines`` is named by its bare name; it is loaded only when named. Every backend is resolved
  by the engine registry, :func:`rnnrt.engines.select.engine_for` (as ``rnnrt.load`` resolves it).

Every backend also takes the Session options ``feedback=copy|swap``, ``cuda_graph=0|1``, and
``label=NAME`` (its name in the report), ``precision=fp32|fp16|bf16`` (for the default tolerance).

Example::

    from rnnrt.runtime.verify import verify

    report = verify("out/model.yaml", ["onnxruntime", "tensorrt"], steps=200, streams=4, resets=[(100, None)])
    print(report.table())
    assert report.passed
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from rnnrt.errors import BindingError, ConfigError, RnnrtError, fmt

PathLike = Union[str, os.PathLike]

SCHEMA = "rnnrt.verify/1"
"""``schema`` of :meth:`VerifyReport.to_json`; changes only with a new number."""

TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-3),
    "tf32": (1e-3, 1e-2),
    "fp16": (2e-3, 1e-2),
    "bf16": (2e-2, 5e-2),
}
"""Default ``(atol, rtol)`` by the lowest precision among the compared backends."""

_PRECISION_ORDER = ["fp32", "tf32", "fp16", "bf16"]
_SESSION_OPTIONS = ("feedback", "cuda_graph")
_COMMON_OPTIONS = ("label", "precision") + _SESSION_OPTIONS
_MAX_FEED_ARRAYS = 100_000
MAX_FEED_BYTES = 1 << 32


# ---------------------------------------------------------------------------------------------------
# Backends.
@dataclasses.dataclass
class BackendSpec:
    """One ``--backends`` item: ``BASE[:key=value]...``."""

    text: str
    base: str
    options: dict[str, str]

    @property
    def label(self) -> str:
        return self.options.get("label", self.text)


def parse_backends(text: Union[str, Sequence[str]]) -> list[BackendSpec]:
    """Parses ``"onnxruntime,tensorrt:plan=x.plan,pkg.mod:factory:scale=2"`` into specs.

    Raises:
        ConfigError: An empty item, an option without a value, or two backends with the same label.
    """
    items = [t for t in (text.split(",") if isinstance(text, str) else list(text))]
    specs = []
    for item in items:
        item = item.strip()
        if not item:
            raise ConfigError(fmt(f"--backends {text!r}", "Has an empty item", "Example: onnxruntime,tensorrt."))
        parts = item.split(":")
        base_parts = [p for p in parts if "=" not in p]
        options = {}
        for p in parts:
            if "=" in p:
                key, _, value = p.partition("=")
                if not key or not value:
                    raise ConfigError(fmt(f"Backend {item!r}", f"Option {p!r} is not key=value"))
                options[key] = value
        if not base_parts or not all(base_parts):
            raise ConfigError(fmt(f"Backend {item!r}", "Has no name", "Expected NAME[:key=value]... or module:callable."))
        specs.append(BackendSpec(item, ":".join(base_parts), options))
    labels = [s.label for s in specs]
    dup = sorted({label for label in labels if labels.count(label) > 1})
    if dup:
        raise ConfigError(fmt(f"--backends {text!r}", f"Names {dup[0]!r} twice", "Give each a label=NAME option."))
    return specs


@dataclasses.dataclass
class Backend:
    """A resolved backend: how to make its Session, and what it is."""

    label: str
    spec: str
    kind: str
    precision: str
    make_session: Callable[[Optional[int]], Any]
    note: str = ""


def _bool(value: str, what: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(fmt(what, f"Is {value!r}", "Expected 0/1, true/false."))


def _session_kwargs(spec: BackendSpec) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if "feedback" in spec.options:
        kw["feedback"] = spec.options["feedback"]
    if "cuda_graph" in spec.options:
        kw["cuda_graph"] = _bool(spec.options["cuda_graph"], f"Backend {spec.text!r} cuda_graph")
    return kw


def _check_options(spec: BackendSpec, allowed: Iterable[str]) -> None:
    allowed = set(allowed) | set(_COMMON_OPTIONS)
    unknown = sorted(set(spec.options) - allowed)
    if unknown:
        raise ConfigError(fmt(f"Backend {spec.text!r}", f"Has no option {unknown[0]!r}", f"Options: {sorted(allowed)}."))


def _precision_of(spec: BackendSpec, default: str) -> str:
    p = spec.options.get("precision", default)
    if p not in TOLERANCES:
        raise ConfigError(fmt(f"Backend {spec.text!r} precision {p!r}", "Is not known", f"Expected one of {list(TOLERANCES)}."))
    return p


_VERIFY_OPTIONS = {  # spec option -> engine_for option, per built-in backend
    "onnxruntime": {"opt": "optimization", "graph": "graph", "threads": "threads", "plan": "plan"},
    "tensorrt": {"plan": "plan", "runtime": "runtime", "runtime_cache": "runtime_cache"},
}


def resolve_backend(spec: BackendSpec, cfg: Any, config_path: Optional[PathLike] = None,
                    plan: Optional[PathLike] = None) -> Backend:
    """Turns a spec into a :class:`Backend` through the engine registry (:func:`rnnrt.engines.select.engine_for`);
    no engine is made until its Session is.

    Raises:
        ConfigError: Unknown backend or option; a callable that cannot be imported.
    """
    from rnnrt.engines.select import engine_for
    from rnnrt.runtime.session import Session

    session_kw = _session_kwargs(spec)
    names = _VERIFY_OPTIONS.get(spec.base)
    if names is not None:
        _check_options(spec, names)
        options: dict[str, Any] = {names[k]: v for k, v in spec.options.items() if k in names}
        if "threads" in options:
            options["threads"] = int(options["threads"])
        if plan is not None:
            options.setdefault("plan", plan)
    else:
        options = {k: v for k, v in spec.options.items() if k not in _COMMON_OPTIONS}
    choice = engine_for(cfg, spec.base, config_path=config_path, **options)

    def make(batch: Optional[int]) -> Any:
        kw = dict(session_kw)
        if batch is not None:
            kw["batch_size"] = batch
        return Session(choice.config, choice.engine, **kw)

    return Backend(spec.label, spec.text, choice.backend if names is not None else spec.base,
                   _precision_of(spec, choice.precision), make, choice.note)


# ---------------------------------------------------------------------------------------------------
# Feeds.
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
    """Reads a feed ``.npz`` (keys ``call{k}/{name}``: inputs, and recorded outputs if present).

    Keys under ``call{k}/_internal/`` (extra blobs of a Caffe recording) are skipped. Keys are checked
    before any array is read.

    Raises:
        BindingError: Not an .npz, a key that is not ``call{k}/{name}``, a name that is neither an input
            nor an output, calls with gaps, or no calls.
    """
    import zipfile

    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise BindingError(fmt(f"Feed {str(path)!r}", f"Cannot be read as .npz: {err}")) from err
    inputs = {t.name for t in cfg.inputs}
    outputs = {t.name for t in cfg.outputs}
    calls: dict[int, dict[str, np.ndarray]] = {}
    recorded: dict[int, dict[str, np.ndarray]] = {}
    with npz:
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise BindingError(fmt(f"Feed {str(path)!r}", "Is a single array, not an .npz of call{k}/{name} keys"))
        files = list(npz.files)
        if len(files) > _MAX_FEED_ARRAYS:
            raise BindingError(fmt(f"Feed {str(path)!r}", f"Has {len(files)} arrays", f"At most {_MAX_FEED_ARRAYS}."))
        total = sum(info.file_size for info in npz.zip.infolist())
        if total > MAX_FEED_BYTES:
            raise BindingError(fmt(f"Feed {str(path)!r}", f"Unpacks to {total} bytes", f"At most {MAX_FEED_BYTES}."))
        wanted = []
        for key in files:
            m = re.fullmatch(r"call(\d+)/(.+)", key)
            if m is None:
                raise BindingError(fmt(f"Feed key {key!r}", "Is not of the form call{k}/{name}"))
            k, name = int(m.group(1)), m.group(2)
            if name.startswith("_internal/"):
                continue
            if name in inputs:
                wanted.append((k, name, key, calls))
            elif name in outputs:
                wanted.append((k, name, key, recorded))
            else:
                raise BindingError(fmt(f"Feed key {key!r}", f"Names {name!r}, which is neither an input nor an output",
                                       f"Inputs: {sorted(inputs)}; outputs: {sorted(outputs)}."))
        for k, name, key, target in wanted:
            target.setdefault(k, {})[name] = npz[key]
    if not calls:
        raise BindingError(fmt(f"Feed {str(path)!r}", "Has no inputs", "Keys are call{k}/{input} (call0/data, ...)."))
    if sorted(calls) != list(range(len(calls))):
        raise BindingError(fmt(f"Feed {str(path)!r}", f"Has calls {sorted(calls)}", "Calls are numbered 0, 1, 2 ... without gaps."))
    n = len(calls)
    return Feed([calls[k] for k in range(n)], [recorded.get(k, {}) for k in range(n)], _batch_of(cfg, calls[0]),
                str(path))


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
        raise ConfigError(fmt(f"--set {unknown[0]}", "Names no input of the model", f"Inputs: {[t.name for t in cfg.inputs]}."))
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


# ---------------------------------------------------------------------------------------------------
# Comparison.
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
        from rnnrt.runtime.plots import pyplot

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
        path = Path(path)
        fig.savefig(path)
        plt.close(fig)
        return path


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
        precision = max((b.precision for b in resolved), key=_PRECISION_ORDER.index)
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
