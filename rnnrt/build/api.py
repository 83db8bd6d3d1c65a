"""``rnnrt.build``: a model YAML config -> a TensorRT plan and its manifest, options checked before building.

What ``rnnrt build`` runs. The heavy builder (onnx, TensorRT) is imported only when a build starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from rnnrt.errors import ConfigError, fmt

# `typing` is imported for type checkers only: `import rnnrt` stays light.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Union

    from rnnrt.build.builder import BuildResult

    PathLike = Union[str, os.PathLike]
    Range = Union[int, str, Sequence[int]]

__all__ = ["MAX_DIM", "build", "dim_range"]

MAX_DIM = 2**31 - 1
"""Largest size of a profile dim: TensorRT dims are int64, but beyond int32 nothing can be allocated or built."""


def dim_range(value: Range, what: str) -> tuple[int, int, int]:
    """A profile range from ``N``, ``"N"``, ``"MIN:MAX"`` (opt = min), ``"MIN:OPT:MAX"`` or ``(min, opt, max)``.

    Raises:
        ConfigError: Not integers, not ``1 <= MIN <= OPT <= MAX``, or MAX beyond :data:`MAX_DIM`; the
            message names ``what`` (e.g. ``"--dim T"``).
    """
    from rnnrt.build.builder import parse_range

    text = ":".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
    rng = parse_range(text, what)
    if rng[2] > MAX_DIM:
        raise ConfigError(fmt(f"{what} {text!r}", f"MAX {rng[2]} is too large",
                              f"A dim range goes up to {MAX_DIM}; a profile's sizes must fit int32."))
    return rng


def build(
    config: PathLike,
    output: Optional[PathLike] = None,
    *,
    precision: str = "fp32",
    io_dtype: str = "float32",
    state_dtype: str = "float32",
    batch_profile: Optional[Range] = None,
    dims: Optional[Mapping[str, Range]] = None,
    trt_module: str = "auto",
    targets: Sequence[str] = (),
    runtime_cache: Union[str, bool, None] = None,
    version_compatible: bool = False,
    exclude_lean_runtime: bool = False,
    tf32: bool = False,
    timing_cache: Optional[PathLike] = None,
    workspace_mib: Optional[int] = None,
    optimization_level: Optional[int] = None,
    progress: bool = False,
) -> BuildResult:
    """Builds the TensorRT plan of a model config and writes it with its manifest ``<plan>.json``.

    The config is never changed; ``rnnrt.load(config)`` finds the plan through the manifest. The config,
    the output path and every range are checked before the builder starts.

    Args:
        config (PathLike): The model YAML config (``DIR/model.yaml``).
        output (PathLike | None): The plan file to write; missing folders are created. Default: the
            config's path with ``.plan``.
        precision (str): Compute precision, ``"fp32"``, ``"fp16"`` or ``"bf16"``. Default: ``"fp32"``.
        io_dtype (str): dtype of the user inputs/outputs. Default: ``"float32"``.
        state_dtype (str): dtype of the recurrent state; ``"float32"`` keeps the state path in fp32. Default:
            ``"float32"``.
        batch_profile (int | str | Sequence[int] | None): Range of stream counts a dynamic-batch plan
            accepts (see :func:`dim_range`). Default: None (1:1:64 for a dynamic batch).
        dims (Mapping[str, int | str | Sequence[int]] | None): Range of each other dynamic dim, by name
            (``{"T": "1:16:256"}``; a single size N means N:N:N). Default: none.
        trt_module (str): ``"auto"`` (tensorrt if importable, else tensorrt_rtx), ``"tensorrt"`` or
            ``"tensorrt_rtx"``. Default: ``"auto"``.
        targets (Sequence[str]): TensorRT-RTX compute capabilities, e.g. ``("sm86", "sm89")``. Default: portable.
        runtime_cache (str | bool | None): TensorRT-RTX runtime cache recorded in the manifest: a file name
            beside the plan, or True for ``<plan>.cache``. Default: None.
        version_compatible (bool): A plan that also runs on later TensorRT and the lean runtime. Default: False.
        exclude_lean_runtime (bool): With ``version_compatible``: leave the lean runtime out. Default: False.
        tf32 (bool): Let fp32 matrix products run in TF32. Default: False (true fp32).
        timing_cache (PathLike | None): Timing cache file, read and then updated. Default: None.
        workspace_mib (int | None): Workspace memory-pool limit in MiB. Default: TensorRT's.
        optimization_level (int | None): Builder optimization level 0-5. Default: TensorRT's.
        progress (bool): A progress bar per build phase on a terminal. Default: False.

    Returns:
        BuildResult: The plan (``plan_path``, ``manifest``), its bindings, layers and timings.

    Raises:
        ConfigError: A bad config, output path or range (before building).
        BuildError: TensorRT could not parse or build the graph.

    Example::

        import rnnrt

        result = rnnrt.build("out/model.yaml", batch_profile="1:8:64", precision="fp16")
        print(result.plan_path, result.manifest.runtimes)
    """
    from rnnrt.build.builder import BuildOptions, plan_from_config
    from rnnrt.paths import check_input_file, check_output_file

    check_input_file(config, "Config")
    if output is not None:
        check_output_file(output, "-o/--output", example="model.plan", create_folder=True)
    ranges = {name: dim_range(value, f"--dim {name}") for name, value in (dims or {}).items()}
    if runtime_cache is True:
        from pathlib import Path

        plan = Path(output) if output is not None else Path(config).with_suffix(".plan")
        runtime_cache = f"{plan.name}.cache"
    options = BuildOptions(
        precision=precision,
        io_dtype=io_dtype,
        state_dtype=state_dtype,
        batch=dim_range(batch_profile, "--batch-profile") if batch_profile is not None else None,
        dims=ranges,
        trt_module=trt_module,
        targets=tuple(t.strip() for t in targets if t.strip()),
        timing_cache=None if timing_cache is None else str(timing_cache),
        workspace_mib=workspace_mib,
        optimization_level=optimization_level,
        progress=progress,
        version_compatible=version_compatible,
        exclude_lean_runtime=exclude_lean_runtime,
        runtime_cache=runtime_cache or None,
        tf32=tf32,
    )
    return plan_from_config(config, output, options)
