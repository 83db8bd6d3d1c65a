"""``rnnrt.convert``: a Caffe or ONNX model -> an ONNX step graph and its model YAML config, written to a folder.

What ``rnnrt convert`` runs. The importer is chosen by the model's suffix (``.onnx``: the ONNX importer,
anything else: a Caffe deploy prototxt).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from rnnrt.errors import ConfigError, fmt

# `typing` is imported for type checkers only: `import rnnrt` stays light.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Optional, Union

    from rnnrt.ir.stepgraph import StepGraph

    PathLike = Union[str, os.PathLike]

__all__ = ["Converted", "convert"]


class Converted:
    """What :func:`convert` wrote.

    Args:
        config (Path): The model YAML config (``OUTPUT/NAME.yaml``): what every later step reads.
        model (Path): The ONNX step graph (``OUTPUT/NAME.onnx``).
        step_graph (StepGraph): The step graph in memory (state pairs, continuation, notes).
    """

    __slots__ = ("config", "model", "step_graph")

    def __init__(self, config: Path, model: Path, step_graph: StepGraph) -> None:
        self.config = config
        self.model = model
        self.step_graph = step_graph

    def __repr__(self) -> str:
        return f"Converted(config={str(self.config)!r}, model={str(self.model)!r})"


def convert(
    model: PathLike,
    weights: Optional[PathLike] = None,
    output: PathLike = "out",
    *,
    name: str = "model",
    batch: str = "fixed",
    seed: int = 0,
    phase: str = "TEST",
    plugins: Sequence[str] = (),
    add_reset: bool = False,
    forward_only: bool = False,
    override: Optional[PathLike] = None,
    constants: Optional[Mapping[str, Any]] = None,
    context: Sequence[str] = (),
    time_steps: Union[int, str, None] = None,
    strict: bool = False,
    dims: Optional[Mapping[str, int]] = None,
    check: bool = True,
    check_steps: Optional[int] = None,
    check_reference: Optional[PathLike] = None,
    progress: bool = False,
) -> Converted:
    """Converts a model into an ONNX step graph whose recurrent state is explicit inputs/outputs, and writes
    ``OUTPUT/NAME.onnx`` and ``OUTPUT/NAME.yaml``.

    Every argument is also a field of the import options (``rnnrt schema --kind import``) and a flag of
    ``rnnrt convert``. Paths are checked before any work.

    Args:
        model (PathLike): ``deploy.prototxt`` (Caffe) or ``model.onnx``.
        weights (PathLike | None): Caffe: ``weights.caffemodel``. None: seeded random weights. Default: None.
        output (PathLike): The folder to write into; created if missing. Default: ``"out"``.
        name (str): File stem of the written files, a plain name. Default: ``"model"``.
        batch (str): ``"dynamic"`` makes the batch (stream) axis symbolic (Caffe; ONNX: a fixed-batch
            export's batch dim, proven by running streams batched and alone). Default: ``"fixed"``.
        seed (int): Caffe: seed of random weights (>= 0). Default: 0.
        phase (str): Caffe: ``"TEST"`` or ``"TRAIN"`` for include/exclude rules. Default: ``"TEST"``.
        plugins (Sequence[str]): Caffe: layer plugin folders, ``.py`` files or ``entry:NAME``. They run
            arbitrary code: trusted ones only. Default: none.
        add_reset (bool): ONNX: add a continuation input ``cont``. Default: False.
        forward_only (bool): ONNX: keep the forward direction of bidirectional layers. Default: False.
        override (PathLike | None): ONNX: YAML that fixes detected state pairs, batch axes or continuation.
        constants (Mapping[str, Any] | None): ONNX: inputs bound to constants and folded (``{"sr": 16000}``;
            a string value is read as YAML). Default: none.
        context (Sequence[str]): ONNX: ``INPUT:K[:AXIS]``, the last K samples of INPUT (along its last axis,
            or AXIS) carried as state. Causal windows on a known time axis get theirs unasked. Default: none.
        time_steps (int | str | None): ONNX: re-shape the time axis of a fixed-T export to N steps per call,
            or ``"dynamic"``. Default: None (as exported).
        strict (bool): ONNX: an op after the recurrence that mixes time steps is an error. Default: False.
        dims (Mapping[str, int] | None): Dynamic dims of the inputs pinned to a size (``{"chunk": 512}``):
            recorded in the config and checked at every step. Default: none.
        check (bool): Run the equivalence check (docs/onnx.md): the step graph streamed one frame per call
            against the original, streams batched against each alone, a reset stream against a fresh one;
            recorded as the config's ``checks:``. Default: True.
        check_steps (int | None): Calls per stream of the check (>= 2). Default: None (8, fewer for slow
            models).
        check_reference (PathLike | None): A recorded stream (``.npz`` of ``call{k}/{name}``, e.g. from the
            package's own wrapper) that the step graph must reproduce. Default: None.
        progress (bool): Caffe: show progress while reading big weights. Default: False.

    Returns:
        Converted: The config and model paths and the step graph.

    Raises:
        ConfigError: A bad option, name or path (before any work), or a bad override.
        ModelImportError: The model cannot be read or has no recurrent state rnnrt can expose.
        UnsupportedOpError: A layer or op rnnrt cannot convert exactly.
        EquivalenceError: The check found the step graph streaming, batching or resetting differently from
            the original (nothing is written).

    Example::

        import rnnrt

        converted = rnnrt.convert("lstm.onnx", output="out", add_reset=True)
        session = rnnrt.load(converted.config)
    """
    import pydantic

    from rnnrt.importers.options import ImportConfig
    from rnnrt.ir.config import save_step_graph
    from rnnrt.paths import check_input_file, check_name, check_output_dir

    try:
        opts = ImportConfig.model_validate(dict(
            model=str(model), weights=None if weights is None else str(weights), output=str(output), name=name,
            batch=batch, seed=seed, phase=phase, plugins=list(plugins), add_reset=add_reset,
            forward_only=forward_only, override=None if override is None else str(override),
            set=dict(constants or {}), context=list(context), time_steps=time_steps, strict=strict,
            dims=dict(dims or {}), no_check=not check, check_steps=check_steps,
            check_reference=None if check_reference is None else str(check_reference)))
    except pydantic.ValidationError as err:
        what = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(fmt("convert options", f"Invalid: {what}")) from err
    if opts.seed < 0:
        raise ConfigError(fmt(f"seed {opts.seed}", "Is negative", "A seed is an integer >= 0."))
    check_name(opts.name, "--name")
    check_output_dir(opts.output, "-o/--output")
    for path, what in ((opts.model, "Model"), (opts.weights, "Weights"), (opts.override, "--override"),
                       (opts.check_reference, "--check-reference")):
        check_input_file(path, what)
    if opts.model.endswith(".onnx"):
        from rnnrt.importers.onnx.importer import convert_onnx

        step = convert_onnx(opts.model, add_reset=opts.add_reset, forward_only=opts.forward_only,
                            override=opts.override, constants=dict(opts.set), context=list(opts.context),
                            time_steps=opts.time_steps, strict=opts.strict, batch=opts.batch)
    else:
        from rnnrt.importers.caffe.convert import convert_caffe
        from rnnrt.importers.caffe.plugins import load_plugins
        from rnnrt.ir.weights import FILE_EMBED_LIMIT

        loaded = load_plugins(opts.plugins)
        step = convert_caffe(
            opts.model,
            opts.weights,
            batch="dynamic" if opts.batch == "dynamic" else None,
            seed=opts.seed,
            phase=opts.phase,
            schema=loaded.schema,
            progress=progress,
            embed_limit=FILE_EMBED_LIMIT,  # big weights go to model.onnx.data, streamed (peak memory)
        )
        if loaded.plugins:
            step.source["plugins"] = loaded.describe()
    step = _pin_and_check(step, opts)
    config = save_step_graph(step, opts.output, opts.name)
    return Converted(config, config.with_suffix(".onnx"), step)


def _pin_and_check(step: Any, opts: Any) -> Any:
    """Pins ``opts.dims``, then runs the equivalence check (unless ``no_check``), which records ``checks:``."""
    from rnnrt.importers.check import check_conversion
    from rnnrt.importers.dims import pin_dims

    step = pin_dims(step, opts.dims)
    if opts.no_check:
        return step
    onnx_model = opts.model if opts.model.endswith(".onnx") else None
    changed = ("--forward-only keeps the forward direction only: the outputs differ from the original by request"
               if opts.forward_only else None)
    return check_conversion(step, onnx_model, constants=dict(opts.set), context=list(opts.context),
                            steps=opts.check_steps, reference=opts.check_reference, no_reference=changed)
