"""Builds TensorRT engines (serialized plans) from ONNX step graphs (``rnnrt inspect`` is :mod:`rnnrt.build.inspect`).

The step graph goes through TensorRT's ``OnnxParser`` into a strongly typed network, gets one
optimization profile (the batch range, i.e. how many concurrent streams), and
``build_serialized_network`` turns it into a plan. Reduced precision is a graph rewrite done before
parsing (:mod:`rnnrt.build.precision`), because TensorRT 11 and TensorRT-RTX have no FP16 builder flag.

Either TensorRT flavour works: ``tensorrt`` (10/11, picked first) or ``tensorrt_rtx``; see
:mod:`rnnrt.trt_compat`. TensorRT-RTX builds without a GPU, which is how CI checks every graph.

Example::

    from rnnrt.build.builder import BuildOptions, plan_from_config

    result = plan_from_config("out/model.yaml", options=BuildOptions(precision="fp16", batch=(1, 8, 64)))
    print(result.plan_path, f"{result.build_seconds:.2f} s")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Union

import onnx

from rnnrt import trt_compat
from rnnrt.errors import BuildError, ConfigError, fmt
from rnnrt.build.engine_info import BindingInfo, LayerInfo, network_layers, trt_dtype_name
from rnnrt.ir.bindings import graph_bindings
from rnnrt.safe_write import staged, write_bytes

G_LOGGER = logging.getLogger("rnnrt.build")

__all__ = [
    "BindingInfo",
    "BuildOptions",
    "BuildResult",
    "LayerInfo",
    "DEFAULT_DYNAMIC_BATCH",
    "network_from_onnx",
    "parse_range",
    "plan_from_config",
    "plan_from_onnx",
]

DEFAULT_DYNAMIC_BATCH = (1, 1, 64)
"""Profile used for a dynamic batch dim when no ``batch`` range is given: min 1, opt 1, max 64."""

BATCH_DIM_NAMES = frozenset({"batch", "N", "batch_size"})
"""Dim names taken as the batch dim when no config says which axis is the batch axis."""

PathLike = Union[str, os.PathLike]


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """How to build a plan.

    ``rnnrt build`` sets most fields from a flag of the same name (``--precision``, ``--io-dtype``,
    ``--state-dtype``, ``--timing-cache``, ``--version-compatible``, ``--exclude-lean-runtime``,
    ``--runtime-cache``, ``--tf32``, ``--trt-module``); the others have flags of other names: ``batch`` is
    ``--batch-profile``, ``dims`` is ``--dim NAME=MIN:OPT:MAX``, ``targets`` is ``--target``,
    ``workspace_mib`` is ``--workspace``, ``optimization_level`` is ``--opt-level``; ``progress`` has no
    flag (the CLI always shows it).

    Args:
        precision (str): Compute precision, ``"fp32"``, ``"fp16"`` or ``"bf16"``. Defaults to ``"fp32"``.
        io_dtype (str): dtype of the float user inputs/outputs. Defaults to ``"float32"``.
        state_dtype (str): dtype of the recurrent state. ``"float32"`` (the default) also keeps the
            element-wise state path in fp32 when ``precision`` is reduced.
        batch (tuple[int, int, int] | None): ``(min, opt, max)`` of the dynamic batch dim. None: the
            static batch of the graph, or :data:`DEFAULT_DYNAMIC_BATCH` for a dynamic one.
        dims (Mapping[str, tuple[int, int, int]]): Ranges of other dynamic dims, by dim name.
        trt_module (str | None): ``"tensorrt"``, ``"tensorrt_rtx"`` or None/``"auto"``.
        targets (tuple[str, ...]): TensorRT-RTX compute capabilities, e.g. ``("sm86", "sm89")``.
            Empty: the flavour's default (TensorRT-RTX: portable across its supported GPUs).
        timing_cache (str | None): Timing cache file, read if present and written after the build.
        workspace_mib (int | None): Workspace memory-pool limit in MiB. None: TensorRT's default.
        optimization_level (int | None): Builder optimization level (0-5). None: TensorRT's default.
        progress (bool): Show a progress bar per build phase (on a terminal). Defaults to False.
        version_compatible (bool): Build a version-compatible plan (``BuilderFlag.VERSION_COMPATIBLE``):
            it also runs on later TensorRT versions and on the lean and dispatch runtimes. TensorRT only;
            TensorRT-RTX refuses it. Defaults to False.
        exclude_lean_runtime (bool): With ``version_compatible``: leave the lean runtime out of the plan
            (``EXCLUDE_LEAN_RUNTIME``); the machine that runs it needs ``tensorrt_lean`` (or the full
            runtime) of the same version. Defaults to False.
        runtime_cache (str | None): TensorRT-RTX runtime cache recorded in the manifest: a file name beside
            the plan (anything else is refused). :func:`plan_from_config` only. Defaults to None.
        tf32 (bool): Let fp32 matrix products and convolutions run in TF32 (TensorRT's default; 10-bit
            mantissa inputs, ~1e-3 relative error). False (the default) clears ``BuilderFlag.TF32`` so an
            fp32 plan computes in fp32 and matches ONNX Runtime within ``rnnrt verify``'s fp32 tolerance.
    """

    precision: str = "fp32"
    io_dtype: str = "float32"
    state_dtype: str = "float32"
    batch: tuple[int, int, int] | None = None
    dims: Mapping[str, tuple[int, int, int]] = dataclasses.field(default_factory=dict)
    trt_module: str | None = None
    targets: tuple[str, ...] = ()
    timing_cache: str | None = None
    workspace_mib: int | None = None
    optimization_level: int | None = None
    progress: bool = False
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    runtime_cache: str | None = None
    tf32: bool = False


@dataclasses.dataclass
class BuildResult:
    """What :func:`plan_from_onnx` built.

    Args:
        plan (bytes): The serialized engine.
        flavour (str): ``"tensorrt"`` or ``"tensorrt_rtx"``.
        version (str): Version of the TensorRT module.
        precision (str): Compute precision.
        io_dtype (str): dtype of the user bindings.
        state_dtype (str): dtype of the state bindings.
        profile (tuple[int, int, int] | None): Batch range; None if the graph has no batch axis.
        bindings (list[BindingInfo]): Network inputs and outputs, with profile shapes.
        layers (list[LayerInfo]): Layers of the parsed network (always available, no GPU needed).
        engine_layers (list[str]): Engine layer lines the builder logged (fused layers, tactics).
        parse_seconds (float): Time to parse the ONNX graph.
        build_seconds (float): Time of ``build_serialized_network``.
        model (onnx.ModelProto | None): The graph that was parsed, when it was rewritten (for precision, or
            by :mod:`rnnrt.build.state_barrier`).
        version_compatible (bool): Built version-compatible.
        exclude_lean_runtime (bool): The lean runtime was left out of the plan.
        targets (tuple[str, ...]): TensorRT-RTX compute capabilities built for.
        plan_path (Path | None): Where :func:`plan_from_config` wrote the plan.
        config_path (Path | None): The config :func:`plan_from_config` built from (never rewritten).
        manifest (EngineManifest | None): The manifest :func:`plan_from_config` wrote beside the plan.
        graph_rewrites (list[dict]): Builder workarounds applied to the parsed graph (records of
            :class:`rnnrt.build.state_barrier.StateBarrier`), recorded in the manifest.
    """

    plan: bytes
    flavour: str
    version: str
    precision: str
    io_dtype: str
    state_dtype: str
    profile: tuple[int, int, int] | None
    bindings: list[BindingInfo]
    layers: list[LayerInfo]
    engine_layers: list[str]
    parse_seconds: float
    build_seconds: float
    model: onnx.ModelProto | None = None
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    targets: tuple[str, ...] = ()
    plan_path: Path | None = None
    config_path: Path | None = None
    manifest: Any = None
    graph_rewrites: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-able record of the build (part of the manifest ``<plan>.json``)."""
        return {
            "flavour": self.flavour,
            "version": self.version,
            "precision": self.precision,
            "io_dtype": self.io_dtype,
            "state_dtype": self.state_dtype,
            "profile": list(self.profile) if self.profile else None,
            "plan_bytes": len(self.plan),
            "plan_sha256": hashlib.sha256(self.plan).hexdigest(),
            "parse_seconds": round(self.parse_seconds, 4),
            "build_seconds": round(self.build_seconds, 4),
            "bindings": [dataclasses.asdict(b) for b in self.bindings],
            "num_network_layers": len(self.layers),
            "engine_layers": self.engine_layers,
            "graph_rewrites": self.graph_rewrites,
        }


def parse_range(text: str, what: str = "--batch") -> tuple[int, int, int]:
    """Parses ``"MIN:OPT:MAX"``, ``"MIN:MAX"`` (opt = min) or ``"N"`` into ``(min, opt, max)``.

    Raises:
        ConfigError: Not integers, not positive, or not ``min <= opt <= max``.
    """
    parts = str(text).split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 3
    elif len(values) == 2:
        values = [values[0], values[0], values[1]]
    if len(values) != 3 or values[0] < 1 or not values[0] <= values[1] <= values[2]:
        raise ConfigError(
            fmt(f"{what} {text!r}", "Is not a valid range", "Expected MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. 1:8:64.")
        )
    return values[0], values[1], values[2]


def _parser_error(parser: Any, model: onnx.ModelProto | None, where: str, log: list[tuple[str, str]]) -> BuildError:
    nodes = list(model.graph.node) if model is not None else []
    lines = []
    ops_and_descs = []
    for i in range(parser.num_errors):
        perr = parser.get_error(i)
        index = perr.node()
        name = perr.node_name() if hasattr(perr, "node_name") else ""
        op = perr.node_operator() if hasattr(perr, "node_operator") else ""
        if 0 <= index < len(nodes):
            name = name or nodes[index].name
            op = op or nodes[index].op_type
        desc = perr.desc()
        ops_and_descs.append((op, desc))
        if index >= 0 or name:
            lines.append(fmt(f"ONNX node {name!r} (op {op!r}, node #{index})", f"TensorRT's ONNX parser rejected it: {desc}"))
        else:
            lines.append(fmt(f"Step graph {where!r}", f"TensorRT's ONNX parser failed: {desc}"))
    if not lines:
        lines.append(fmt(f"Step graph {where!r}", f"TensorRT's ONNX parser failed: {trt_compat.errors_in(log) or 'no message'}"))
    hint = "Check that every op is supported by the installed TensorRT (`rnnrt -v build` shows the parser log)."
    missing = sorted({op for op, desc in ops_and_descs if "Plugin not found" in desc})
    if missing:
        hint = (f"TensorRT has no importer for op {missing[0]!r} and no plugin of that name is registered; "
                "rewrite the node with supported ops or register a TensorRT plugin for it.")
    return BuildError("\n".join(lines) + f"\nNote: {hint}")


def network_from_onnx(
    trt: ModuleType, model: onnx.ModelProto | None = None, path: PathLike | None = None
) -> tuple[Any, Any, Any]:
    """Parses an ONNX step graph into a strongly typed TensorRT network.

    Args:
        trt (ModuleType): The TensorRT module (see :func:`rnnrt.trt_compat.import_trt`).
        model (onnx.ModelProto | None): The graph. If None, ``path`` is parsed from disk.
        path (PathLike | None): The ONNX file (also where external weights are looked up).

    Returns:
        tuple: ``(builder, network, parser)``; keep all three alive while using the network.

    Raises:
        BuildError: The parser rejected the graph; the message names each rejected node, its op and
            the parser's text.
    """
    logger = trt_compat.get_logger(trt)
    builder = trt.Builder(logger)
    if builder is None:
        raise BuildError(fmt("TensorRT", "Could not create a Builder", "See the TensorRT log (rnnrt build -vv)."))
    network = builder.create_network(trt_compat.network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    where = str(path) if path is not None else "<in-memory model>"
    with trt_compat.capture_log() as log:
        if model is None:
            ok = parser.parse_from_file(str(path))
        else:
            data = model.SerializeToString()
            # The path tells the parser where external weights live.
            ok = parser.parse(data, str(path)) if path is not None else parser.parse(data)
    if not ok:
        if model is None and path is not None:
            model = onnx.load(str(path), load_external_data=False)
        raise _parser_error(parser, model, where, log)
    return builder, network, parser


def _graph_dims(model: onnx.ModelProto) -> dict[str, list[Union[int, str]]]:
    return {name: shape or [] for name, (_, shape) in graph_bindings(model, "input", unnamed="?").items()}


def _fold_factor(dim: str) -> tuple[int, str]:
    """``"4*batch*3"`` -> ``(12, "batch")``: a batch dim folded with fixed dims; ``"batch"`` -> ``(1, "batch")``."""
    parts = dim.split("*")
    names = [p for p in parts if not p.isdigit()]
    if len(parts) == 1 or len(names) != 1:
        return 1, dim
    return math.prod(int(p) for p in parts if p.isdigit()), names[0]


def _profile_shapes(
    graph_dims: Mapping[str, list[Union[int, str]]],
    batch_axes: Mapping[str, int | None],
    options: BuildOptions,
    state_inputs: Sequence[str] = (),
) -> tuple[dict[str, tuple[tuple[int, ...], ...]], tuple[int, int, int] | None]:
    """Min/opt/max shapes of every dynamic input, and the batch range (None if there is no batch axis).

    A batch dim that folds the streams with other dims (``4*batch``: T*N time-major rows, see the
    config's ``batch_fold``) gets the batch range times its factor.
    """
    batch_names = {graph_dims[n][a] for n, a in batch_axes.items() if a is not None and n in graph_dims
                   and a < len(graph_dims[n]) and isinstance(graph_dims[n][a], str)}
    batch_names = {_fold_factor(d)[1] for d in batch_names}
    if not batch_axes:
        batch_names = {d for shape in graph_dims.values() for d in shape if d in BATCH_DIM_NAMES}
    # The stream count of a static graph: the state's batch dim, else the inputs'.
    static_batches: set = set()
    for names in (state_inputs, list(batch_axes)):
        static_batches = {graph_dims[n][a] for n in names if (a := batch_axes.get(n)) is not None and n in graph_dims
                          and a < len(graph_dims[n]) and isinstance(graph_dims[n][a], int)}
        if static_batches:
            break
    if batch_names:
        batch = options.batch or DEFAULT_DYNAMIC_BATCH
        if options.batch is None:
            G_LOGGER.info("Dynamic batch %s: using the default profile %s.", sorted(batch_names), batch)
    else:
        batch = None
        if static_batches:
            n = min(static_batches)
            if options.batch is not None and options.batch != (n, n, n):
                raise BuildError(
                    fmt(
                        f"--batch {':'.join(map(str, options.batch))}",
                        f"The step graph has a static batch of {n}",
                        "Convert it with a dynamic batch (`rnnrt convert --batch dynamic`) to build a batch range.",
                    )
                )
            batch = (n, n, n)
        elif options.batch is not None:
            raise BuildError(
                fmt(
                    f"--batch {':'.join(map(str, options.batch))}",
                    "The step graph has no batch axis",
                    "Its inputs declare no batch_axis and no dim is named 'batch'.",
                )
            )
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    for name, dims in graph_dims.items():
        if all(isinstance(d, int) for d in dims):
            continue
        mins, opts, maxs = [], [], []
        for axis, d in enumerate(dims):
            factor, base = _fold_factor(d) if isinstance(d, str) else (1, d)
            if isinstance(d, int):
                rng = (d, d, d)
            elif factor != 1 and base in batch_names and batch is not None:
                rng = tuple(factor * b for b in batch)  # type: ignore[assignment]
            elif d in batch_names or (batch_axes.get(name) == axis and batch is not None):
                rng = batch  # type: ignore[assignment]
            elif d in options.dims:
                rng = options.dims[d]
            else:
                raise BuildError(
                    fmt(
                        f"Input {name!r}",
                        f"Dim {axis} ({d!r}) is dynamic and has no range",
                        f"Give one with --dim {d}=MIN:OPT:MAX; only the batch dim gets a default.",
                    )
                )
            mins.append(rng[0])
            opts.append(rng[1])
            maxs.append(rng[2])
        shapes[name] = (tuple(mins), tuple(opts), tuple(maxs))
    return shapes, batch


class _Progress:
    """Shows TensorRT's build phases as tqdm bars (only on a terminal) and logs them at DEBUG."""

    def __init__(self, trt: ModuleType) -> None:
        from tqdm import tqdm

        outer = self

        class _Monitor(trt.IProgressMonitor):
            def __init__(self) -> None:
                trt.IProgressMonitor.__init__(self)

            def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
                depth = outer.depth.get(parent_phase, -1) + 1 if parent_phase else 0
                outer.depth[phase_name] = depth
                G_LOGGER.debug("TensorRT build phase %r (%d steps)", phase_name, num_steps)
                outer.bars[phase_name] = tqdm(
                    total=num_steps, desc=phase_name, position=depth, leave=False, disable=None, unit="step"
                )

            def step_complete(self, phase_name: str, step: int) -> bool:
                bar = outer.bars.get(phase_name)
                if bar is not None:
                    bar.update(max(0, step + 1 - bar.n))
                return True

            def phase_finish(self, phase_name: str) -> None:
                bar = outer.bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

        self.depth: dict[str, int] = {}
        self.bars: dict[str, Any] = {}
        self.monitor = _Monitor()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _engine_layer_lines(log: Sequence[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for _, msg in log:
        if msg.startswith("Engine Layer Information"):
            lines.extend(line.strip() for line in msg.splitlines()[1:] if line.strip())
    return lines


def _configure(trt: ModuleType, builder: Any, config: Any, options: BuildOptions) -> None:
    if options.targets:
        if not hasattr(config, "set_compute_capability"):
            raise BuildError(
                fmt(
                    f"--target {','.join(options.targets)}",
                    f"{trt_compat.flavour_of(trt)} {trt.__version__} has no compute-capability targets",
                    "--target is a TensorRT-RTX option; TensorRT builds for the GPU it runs on.",
                )
            )
        caps = [trt_compat.compute_capability(trt, t) for t in options.targets]
        config.num_compute_capabilities = len(caps)
        for i, cap in enumerate(caps):
            if not config.set_compute_capability(cap, i):
                raise BuildError(fmt(f"Target {options.targets[i]!r}", "TensorRT did not accept it"))
    if options.exclude_lean_runtime and not options.version_compatible:
        raise BuildError(fmt("--exclude-lean-runtime", "Needs --version-compatible",
                             "Only a version-compatible plan can leave the lean runtime out."))
    if options.version_compatible:
        for flag in trt_compat.version_compatible_flags(trt, options.exclude_lean_runtime):
            config.set_flag(flag)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        if options.tf32:
            config.set_flag(tf32)
        else:
            config.clear_flag(tf32)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if options.optimization_level is not None:
        config.builder_optimization_level = int(options.optimization_level)
    if options.timing_cache is not None and trt_compat.is_rtx(trt):
        G_LOGGER.warning(
            "Timing cache %r | Ignored: timing caches are a no-op in TensorRT-RTX (it compiles kernels at run time; "
            "see the runtime cache).", options.timing_cache
        )
    elif options.timing_cache is not None:
        data = b""
        if os.path.exists(options.timing_cache):
            with open(options.timing_cache, "rb") as f:
                data = f.read()
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise BuildError(
                fmt(f"Timing cache {options.timing_cache!r}", "TensorRT could not use it", "Delete the file to start a new cache.")
            )


def _save_timing_cache(config: Any, path: str) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    write_bytes(path, memoryview(cache.serialize()), "Timing cache")


def plan_from_onnx(
    model: onnx.ModelProto | PathLike,
    options: BuildOptions = BuildOptions(),
    *,
    batch_axes: Mapping[str, int | None] | None = None,
    state_inputs: Sequence[str] = (),
    state_outputs: Sequence[str] = (),
) -> BuildResult:
    """Builds a serialized TensorRT plan from an ONNX step graph.

    Args:
        model (onnx.ModelProto | PathLike): The fp32 step graph, or its file.
        options (BuildOptions): Precision, batch range, TensorRT module and builder settings.
            Defaults to fp32 with the graph's own batch.
        batch_axes (Mapping[str, int | None] | None): Batch axis of each input (state inputs included),
            as the config declares them. None: a dim named ``batch`` (or ``N``, ``batch_size``) is the
            batch dim.
        state_inputs (Sequence[str]): State inputs (kept in ``options.state_dtype``).
        state_outputs (Sequence[str]): State outputs, paired with ``state_inputs`` by position.

    Returns:
        BuildResult: The plan and what is known about it.

    Raises:
        BuildError: No TensorRT module, a node the parser rejects, a dynamic dim without a range, or a
            failed build (with TensorRT's error text).

    Example::

        result = plan_from_onnx("model.onnx", BuildOptions(batch=(1, 8, 64)), batch_axes={"data": 1})
        Path("model.plan").write_bytes(result.plan)
    """
    from rnnrt.build.precision import convert_precision
    from rnnrt.build.state_barrier import find_state_barriers, insert_state_barriers

    trt = trt_compat.import_trt(options.trt_module)
    flavour = trt_compat.flavour_of(trt)
    path = Path(model) if not isinstance(model, onnx.ModelProto) else None
    rewrite = options.precision != "fp32" or options.io_dtype != "float32" or options.state_dtype != "float32"
    proto: onnx.ModelProto | None = model if isinstance(model, onnx.ModelProto) else None
    if path is not None:
        if not path.exists():
            raise BuildError(fmt(f"Step graph {str(path)!r}", "Does not exist"))
        proto = onnx.load(str(path), load_external_data=rewrite)
    assert proto is not None
    dims = _graph_dims(proto)
    shapes, batch = _profile_shapes(dims, dict(batch_axes or {}), options, state_inputs)
    if path is not None and not rewrite and find_state_barriers(proto):
        proto = onnx.load(str(path), load_external_data=True)  # the rewritten graph is saved beside the plan
    # A Myelin workaround (see rnnrt.build.state_barrier); exact, and only where the pattern is.
    guarded, barriers = insert_state_barriers(proto)
    rewritten = guarded if barriers else None
    if rewrite:
        rewritten = convert_precision(
            guarded,
            options.precision,
            io_dtype=options.io_dtype,
            state_dtype=options.state_dtype,
            state_inputs=state_inputs,
            state_outputs=state_outputs,
        )

    t0 = time.perf_counter()
    if rewritten is not None:
        builder, network, parser = network_from_onnx(trt, rewritten, path)
    elif path is not None:
        builder, network, parser = network_from_onnx(trt, None, path)
    else:
        builder, network, parser = network_from_onnx(trt, proto)
    parse_seconds = time.perf_counter() - t0

    config = builder.create_builder_config()
    _configure(trt, builder, config, options)
    profile_inputs: dict[str, tuple[tuple[int, ...], ...]] = {}
    if shapes:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if tensor.name in shapes:
                lo, opt, hi = shapes[tensor.name]
                profile.set_shape(tensor.name, lo, opt, hi)
                profile_inputs[tensor.name] = (lo, opt, hi)
        config.add_optimization_profile(profile)

    bindings = [
        BindingInfo(t.name, "input", trt_dtype_name(t.dtype), tuple(t.shape), profile_inputs.get(t.name))
        for t in (network.get_input(i) for i in range(network.num_inputs))
    ] + [
        BindingInfo(t.name, "output", trt_dtype_name(t.dtype), tuple(t.shape))
        for t in (network.get_output(i) for i in range(network.num_outputs))
    ]
    layers = network_layers(network)

    progress = _Progress(trt) if options.progress and hasattr(trt, "IProgressMonitor") else None
    if progress is not None:
        config.progress_monitor = progress.monitor
    G_LOGGER.info("Building a %s engine with %s %s (%d network layers) ...", options.precision, flavour, trt.__version__, len(layers))
    t0 = time.perf_counter()
    try:
        with trt_compat.capture_log() as log:
            serialized = builder.build_serialized_network(network, config)
    finally:
        if progress is not None:
            progress.close()
    build_seconds = time.perf_counter() - t0
    if serialized is None:
        raise BuildError(
            fmt(
                f"Step graph {str(path) if path else '<in-memory model>'!r}",
                f"{flavour} {trt.__version__} failed to build an engine:\n{trt_compat.errors_in(log) or 'no error message'}",
                "Run `rnnrt -vv build ...` for TensorRT's full log.",
            )
        )
    if options.timing_cache is not None and not trt_compat.is_rtx(trt):
        _save_timing_cache(config, options.timing_cache)
    plan = bytes(memoryview(serialized))
    del parser, network, builder
    return BuildResult(
        plan=plan,
        flavour=flavour,
        version=str(trt.__version__),
        precision=options.precision,
        io_dtype=options.io_dtype,
        state_dtype=options.state_dtype,
        profile=batch,
        bindings=bindings,
        layers=layers,
        engine_layers=_engine_layer_lines(log),
        parse_seconds=parse_seconds,
        build_seconds=build_seconds,
        model=rewritten,
        version_compatible=options.version_compatible,
        exclude_lean_runtime=options.exclude_lean_runtime,
        targets=tuple(options.targets),
        graph_rewrites=[b.record() for b in barriers],
    )


def plan_from_config(
    config: PathLike,
    plan: PathLike | None = None,
    options: BuildOptions = BuildOptions(),
) -> BuildResult:
    """Builds the plan of a YAML config and writes it with its manifest (``rnnrt build``).

    Writes the plan and its manifest ``<plan>.json`` (:mod:`rnnrt.ir.manifest`: what the plan needs
    to run, and the build record: bindings, layer lines, timings, for ``rnnrt inspect`` on machines that
    cannot deserialize the plan). When the graph was rewritten (precision, binding dtypes, the state
    barrier of :mod:`rnnrt.build.state_barrier`), the rewritten graph is saved as ``<plan>.onnx`` and named in the manifest. The config is never
    changed, so building again from it always works; ``rnnrt.load(config)`` finds the plan through
    the manifest.

    Args:
        config (PathLike): The YAML config (``model.yaml``).
        plan (PathLike | None): Plan file to write. Defaults to the config's name with ``.plan``.
        options (BuildOptions): See :class:`BuildOptions`.

    Returns:
        BuildResult: With ``plan_path``, ``config_path`` and ``manifest`` set.

    Raises:
        ConfigError: The config cannot be read or does not match its model; a runtime cache that is not
            beside the plan.
        BuildError: See :func:`plan_from_onnx`.
    """
    from rnnrt.ir.manifest import EngineManifest, beside, manifest_path, sha256_file
    from rnnrt.ir.config import load_config

    config_path = Path(config)
    cfg = load_config(config_path)
    plan_path = Path(plan) if plan is not None else config_path.with_suffix(".plan")
    runtime_cache = None
    if options.runtime_cache is not None:
        runtime_cache = beside(plan_path, options.runtime_cache, "Runtime cache").name
    bound = [t.dtype for t in cfg.inputs] + [t.dtype for t in cfg.outputs] + [s.dtype for s in cfg.state]
    if any(d in ("float16", "bfloat16") for d in bound):
        raise BuildError(
            fmt(
                f"Config {str(config_path)!r}",
                "Has fp16/bf16 bindings: its model is a graph an older rnnrt build rewrote",
                "Build from the config `rnnrt convert` wrote, whose graph is fp32.",
            )
        )
    if plan_path.suffix in (".yaml", ".yml", ".onnx", ".json"):
        raise BuildError(fmt(f"Plan {str(plan_path)!r}", f"Has the suffix {plan_path.suffix!r}",
                             "Name the plan *.plan (or *.engine); the config and graph are never overwritten."))
    batch_axes: dict[str, int | None] = {t.name: t.batch_axis for t in cfg.inputs}
    batch_axes.update({s.input: s.batch_axis for s in cfg.state})
    result = plan_from_onnx(
        cfg.model_path,
        options,
        batch_axes=batch_axes,
        state_inputs=[s.input for s in cfg.state],
        state_outputs=[s.output for s in cfg.state],
    )
    graph_name = None
    try:
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(plan_path, result.plan, "Plan")
        if result.model is not None:
            graph_path = Path(f"{plan_path}.onnx")
            _save_graph(result.model, graph_path)
            graph_name = graph_path.name
    except OSError as err:
        raise BuildError(fmt(f"Plan {str(plan_path)!r}", f"Cannot be written: {err.strerror}")) from err
    summary = result.summary()
    manifest = EngineManifest(
        plan=plan_path.name,
        flavour=result.flavour,
        version=result.version,
        runtimes=trt_compat.runtimes_for(result.flavour, result.version_compatible),
        version_compatible=result.version_compatible,
        exclude_lean_runtime=result.exclude_lean_runtime,
        tf32=options.tf32,
        precision=result.precision,
        io_dtype=result.io_dtype,
        state_dtype=result.state_dtype,
        profile=list(result.profile) if result.profile else None,
        targets=list(result.targets),
        graph=graph_name,
        runtime_cache=runtime_cache,
        config=os.path.relpath(config_path.absolute(), plan_path.absolute().parent),
        model_sha256=sha256_file(cfg.model_path),
        plan_bytes=len(result.plan),
        plan_sha256=summary["plan_sha256"],
        record={k: v for k, v in summary.items() if k in ("parse_seconds", "build_seconds", "bindings",
                                                          "num_network_layers", "engine_layers",
                                                          "graph_rewrites")},
        path=manifest_path(plan_path),
    )
    try:
        manifest.write()
    except OSError as err:
        raise BuildError(fmt(f"Manifest {str(manifest.path)!r}", f"Cannot be written: {err.strerror}")) from err
    result.plan_path = plan_path
    result.config_path = config_path
    result.manifest = manifest
    return result


def _save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Saves a rewritten graph; weights go to ``<path>.data`` when the graph is too big for one protobuf."""
    with staged([path, path.with_name(f"{path.name}.data")], "Graph") as (tmp, _):
        try:
            onnx.save(model, str(tmp))
        except ValueError:
            onnx.save(model, str(tmp), save_as_external_data=True, location=f"{path.name}.data")
