"""The model file: the YAML that describes a step graph's bindings, its recurrent state and its runtime defaults.

One YAML file sits next to the ONNX step graph. It names the user-fed inputs, the user-visible
outputs, the recurrent state pairs (paired by name), the optional continuation input and the Session's
defaults. It is the contract between the importers (which write it through :func:`save_step_graph`) and
every later stage (build, engines, runtime, serve, CLI), which read it through :func:`load_config`. The
binding entries (``inputs``, ``outputs``, ``state``, ``continuation``) are the step graph's own classes
from :mod:`rnnrt.ir.bindings`; YAML is read with the bounded :func:`rnnrt.ir.files.read_yaml`. What a
build made is not in this file: it is the plan's manifest (:mod:`rnnrt.ir.manifest`).

Example::

    from rnnrt.ir.config import load_config

    cfg = load_config("out/model.yaml")  # validated against out/model.onnx
    print(cfg.model_path, [s.input for s in cfg.state])
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.bindings import (
    Continuation,
    DType,
    Dim,
    PositiveInt,
    StatePair,
    TensorSpec,
    check_bindings,
    format_validation_errors,
    graph_bindings,
)
from rnnrt.ir.checks import ChecksRecord
from rnnrt.ir.files import MAX_MODEL_BYTES, check_regular_file, read_yaml
from rnnrt.ir.manifest import EngineManifest, legacy_manifest
from rnnrt.safe_write import staged, write_text

__all__ = [
    "CONFIG_VERSION",
    "ContinuationConfig",
    "Dim",
    "EngineConfig",
    "ModelConfig",
    "ProfileConfig",
    "SessionConfig",
    "StateConfig",
    "TensorConfig",
    "config_from_step_graph",
    "json_schema",
    "load_config",
    "save_config",
    "save_step_graph",
    "validate_against_model",
]

CONFIG_VERSION = 1

_STRICT = ConfigDict(extra="forbid", frozen=True)

# The binding entries of the YAML are the step graph's own binding classes (rnnrt.ir.bindings);
# these names are what the config calls them.
TensorConfig = TensorSpec
StateConfig = StatePair
ContinuationConfig = Continuation


class ProfileConfig(BaseModel):
    """The batch range of a TensorRT optimization profile."""

    model_config = _STRICT

    min: PositiveInt = Field(description="Smallest batch size the engine accepts.")
    opt: PositiveInt = Field(description="Batch size the engine is tuned for.")
    max: PositiveInt = Field(description="Largest batch size the engine accepts.")

    @model_validator(mode="after")
    def _check_order(self) -> "ProfileConfig":
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"profile must satisfy min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        return self


class EngineConfig(BaseModel):
    """The deprecated ``engine:`` section that older builds wrote into the YAML: only parsed by
    :func:`load_config`, which turns it into the plan's manifest (:attr:`ModelConfig.legacy_engine`)."""

    model_config = _STRICT

    plan: str = Field(min_length=1, description="Serialized engine file, relative to the YAML file.")
    flavour: Literal["tensorrt_rtx", "tensorrt"] = Field(description="Which TensorRT built the plan.")
    version: str = Field(description="Version of the TensorRT that built the plan.")
    precision: Literal["fp32", "fp16", "bf16"] = Field(default="fp32", description="Compute precision.")
    io_dtype: DType = Field(default="float32", description="Element type of the user inputs and outputs.")
    state_dtype: DType = Field(default="float32", description="Element type of the state tensors.")
    profile: Optional[ProfileConfig] = Field(default=None, description="Batch range of the optimization profile.")


class SessionConfig(BaseModel):
    """Runtime defaults of a Session; arguments of ``rnnrt.load`` override them."""

    model_config = _STRICT

    backend: str = Field(default="auto", min_length=1,
                         description="Engine backend: auto, onnxruntime, tensorrt, or an engine installed under the "
                         "'rnnrt.engines' entry-point group (checked when the Session is made).")
    threads: Optional[PositiveInt] = Field(default=None, description="CPU threads of the ONNX Runtime engine.")
    feedback: Literal["copy", "swap"] = Field(
        default="copy",
        description="How state outputs become the next state inputs: copy the output arena into the input "
        "arena, or swap the two arenas.",
    )
    cuda_graph: bool = Field(default=False, description="Capture the GPU step into a CUDA graph (TensorRT only).")
    runtime_cache: Optional[str] = Field(
        default=None,
        description="Deprecated (a config must not name a file an engine writes): read only with an older "
        "build's engine section, and only a file beside the plan; otherwise ignored. The TensorRT-RTX runtime "
        "cache is a build option recorded beside the plan (`rnnrt build --runtime-cache`), or a file passed at "
        "run time (`rnnrt.load(..., runtime_cache=PATH)`).",
    )


class ModelConfig(BaseModel):
    """The whole YAML config: the step graph, its bindings, its state and the Session's defaults.

    Relative paths (``model``) are relative to the YAML file; :attr:`model_path` resolves them. What a
    build made is the plan's manifest (:func:`rnnrt.ir.manifest.find_engine`), never a field here.
    """

    model_config = _STRICT

    version: Literal[1] = Field(default=CONFIG_VERSION, description="Config format version.")
    model: str = Field(min_length=1, description="ONNX step graph, relative to this YAML file.")
    source: dict[str, Any] = Field(default_factory=dict, description="Where the step graph came from (free-form).")
    inputs: list[TensorConfig] = Field(
        default_factory=list, description="User-fed inputs, continuation included, state inputs excluded."
    )
    outputs: list[TensorConfig] = Field(default_factory=list, description="User-visible outputs, state excluded.")
    state: list[StateConfig] = Field(default_factory=list, description="Recurrent state pairs, paired by name.")
    continuation: Optional[ContinuationConfig] = Field(default=None, description="The continuation input, if any.")
    session: SessionConfig = Field(default_factory=SessionConfig, description="Runtime defaults of the Session.")
    checks: Optional[ChecksRecord] = Field(default=None, description="What the convert-time equivalence check "
                                           "compared, its largest errors, seed and steps; null if it did not run.")

    # Directory the relative paths above are relative to (the YAML file's directory).
    _base_dir: Optional[str] = PrivateAttr(default=None)
    # The manifest load_config made from an older build's `engine:` section (read once, never written).
    _legacy_engine: Optional[EngineManifest] = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_names(self) -> "ModelConfig":
        check_bindings(self.inputs, self.outputs, self.state, self.continuation)
        return self

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths are relative to (the YAML file's, else the working directory)."""
        return Path(self._base_dir) if self._base_dir is not None else Path.cwd()

    def resolve(self, path: str) -> Path:
        """Resolves a path written in the config against :attr:`base_dir`."""
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def model_path(self) -> Path:
        """The ONNX step graph file."""
        return self.resolve(self.model)

    @property
    def legacy_engine(self) -> Optional[EngineManifest]:
        """The plan an older ``rnnrt build`` recorded in the YAML's ``engine:`` section, as its manifest.

        :func:`load_config` reads that section once (with a ``FutureWarning``); None for every config
        written since. Readers find a plan with :func:`rnnrt.ir.manifest.find_engine`, which falls back
        to this when no ``<plan>.json`` is found.
        """
        return self._legacy_engine

    def with_base_dir(self, base_dir: Union[str, os.PathLike]) -> "ModelConfig":
        """Returns a copy whose relative paths resolve against ``base_dir``."""
        new = self.model_copy()
        new._base_dir = str(Path(base_dir).absolute())
        return new

    def with_session(self, **fields: Any) -> "ModelConfig":
        """Returns a copy whose ``session`` section has ``fields`` updated."""
        try:
            session = SessionConfig(**{**self.session.model_dump(), **fields})
        except pydantic.ValidationError as err:
            raise ConfigError(fmt("session", f"Invalid session section: {_format_errors(err)}")) from err
        return self.model_copy(update={"session": session})

    def binding_names(self) -> list[str]:
        """Every binding name of the config: inputs, outputs, state inputs, state outputs."""
        return (
            [t.name for t in self.inputs]
            + [t.name for t in self.outputs]
            + [s.input for s in self.state]
            + [s.output for s in self.state]
        )


_format_errors = format_validation_errors


def load_config(path: Union[str, os.PathLike], validate: bool = True) -> ModelConfig:
    """Loads a YAML config and (by default) checks it against its ONNX model.

    Args:
        path (str | os.PathLike): The YAML file.
        validate (bool): Whether to check the config against the ONNX step graph with
            :func:`validate_against_model`. Defaults to True.

    Returns:
        ModelConfig: The config; relative paths in it resolve against the YAML file's directory.

    Raises:
        ConfigError: The file is missing, an ONNX model (``.onnx``: convert it first) or not YAML, a field
            is invalid or unknown (the message gives the YAML path and the field location), or the config
            does not match the model.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        raise ConfigError(fmt(f"Config {str(path)!r}", "Is an ONNX model, not an rnnrt model config",
                              f"Run `rnnrt convert {path} -o DIR` first and give DIR/model.yaml."))
    data = read_yaml(path, "Config")
    if not isinstance(data, dict):
        raise ConfigError(
            fmt(f"Config {str(path)!r}", f"Top level is a {type(data).__name__}", "Expected a mapping of config keys.")
        )
    section = data.pop("engine", None)  # an older build's record of its plan: read once, below
    try:
        cfg = ModelConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise ConfigError(
            fmt(
                f"Config {str(path)!r}",
                f"Invalid config: {_format_errors(err)}",
                "See `rnnrt schema` for the keys a config may have.",
            )
        ) from err
    cfg = cfg.with_base_dir(path.parent)
    if section is not None:
        try:
            legacy = EngineConfig.model_validate(section)
        except pydantic.ValidationError as err:
            raise ConfigError(fmt(f"Config {str(path)!r} engine", f"Invalid engine section: {_format_errors(err)}",
                                  "Run `rnnrt build` again (it writes <plan>.json) and delete the section.")) from err
        warnings.warn(f"Config {str(path)!r} | Has an `engine:` section, which only builds before the plan manifest "
                      "wrote; it is read as the plan's manifest for now. Run `rnnrt build` again to write "
                      "<plan>.json, and delete the section.", FutureWarning, stacklevel=2)
        cfg._legacy_engine = legacy_manifest(cfg.resolve(legacy.plan), legacy.flavour, legacy.version,
                                             precision=legacy.precision, io_dtype=legacy.io_dtype,
                                             state_dtype=legacy.state_dtype, profile=legacy.profile and
                                             [legacy.profile.min, legacy.profile.opt, legacy.profile.max],
                                             runtime_cache=cfg.session.runtime_cache or None)
    if validate:
        validate_against_model(cfg)
    return cfg


class _FlowList(list):
    """A list that YAML writes in flow style (``[1, 1, 5]``)."""


class _FlowDict(dict):
    """A mapping that YAML writes on one line (``{name: data, ...}``)."""


def _flow_list_representer(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _flow_dict_representer(dumper: yaml.SafeDumper, data: _FlowDict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FlowList, _flow_list_representer)
_Dumper.add_representer(_FlowDict, _flow_dict_representer)


def _flow_shapes(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _flow_shapes(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if all(isinstance(v, (int, str, float)) for v in obj):
            return _FlowList(obj)
        return [_flow_shapes(v) for v in obj]
    return obj


def _relative_to(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.absolute(), base.absolute())
    except ValueError:  # different drives on Windows
        return str(path.absolute())


def save_config(cfg: ModelConfig, path: Union[str, os.PathLike]) -> ModelConfig:
    """Writes a config as YAML.

    Relative paths in ``cfg`` are rewritten so that they stay correct relative to the new file.

    Args:
        cfg (ModelConfig): The config.
        path (str | os.PathLike): The YAML file to write; its directory must exist.

    Returns:
        ModelConfig: The config as written, with its paths resolving against ``path``'s directory.
    """
    path = Path(path)
    base = path.parent
    update: dict[str, Any] = {}
    if not Path(cfg.model).is_absolute():
        update["model"] = _relative_to(cfg.model_path, base)
    out = cfg.model_copy(update=update).with_base_dir(base)
    data = out.model_dump(mode="json", exclude_none=False)
    if out.continuation is None:
        data.pop("continuation")
    if out.checks is None:
        data.pop("checks")
    else:
        data["checks"]["results"] = [_FlowDict(r) for r in data["checks"]["results"]]
    data = _flow_shapes(data)
    for key in ("inputs", "outputs"):
        for item in data[key]:
            if item.get("batch_fold") is None:
                item.pop("batch_fold", None)
    for key in ("inputs", "outputs", "state"):
        data[key] = [_FlowDict(item) for item in data[key]]
    if isinstance(data.get("session"), dict):
        if data["session"].get("runtime_cache") is None:
            data["session"].pop("runtime_cache", None)  # deprecated: never written
        data["session"] = _FlowDict(data["session"])
    header = "# rnnrt model config (see `rnnrt schema`). Paths are relative to this file.\n"
    try:
        write_text(path, header + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120), "Config")
    except OSError as err:
        raise ConfigError(fmt(f"Config {str(path)!r}", f"Cannot be written: {err.strerror}")) from err
    return out


def config_from_step_graph(step: Any, model_path: Union[str, os.PathLike]) -> ModelConfig:
    """Makes the config of a step graph whose ONNX file is (or will be) ``model_path``.

    Args:
        step (rnnrt.ir.stepgraph.StepGraph): The step graph an importer produced.
        model_path (str | os.PathLike): Where its ONNX file is saved. The config refers to it by file name
            and resolves against its directory, so save the YAML next to it (``save_config``).

    Returns:
        ModelConfig: The config. It is not checked against the ONNX file (it may not exist yet).
    """
    model_path = Path(model_path)
    data: dict[str, Any] = {
        "version": CONFIG_VERSION,
        "model": model_path.name,
        "source": dict(step.source),
        "inputs": list(step.inputs),
        "outputs": list(step.outputs),
        "state": list(step.states),
        "continuation": step.continuation,
        "checks": getattr(step, "checks", None),
    }
    try:
        cfg = ModelConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise ConfigError(fmt(f"Step graph for {str(model_path)!r}", f"Invalid description: {_format_errors(err)}")) from err
    return cfg.with_base_dir(model_path.parent)


def _check_binding(
    where: str, name: str, dtype: str, shape: list[Dim], graph: dict[str, Any], role: str, model: str
) -> None:
    if name not in graph:
        raise ConfigError(
            fmt(
                f"{where} {name!r}",
                f"Is not a graph {role} of {model!r}",
                f"The graph {role}s are {sorted(graph)}.",
            )
        )
    onnx_dtype, onnx_shape = graph[name]
    if onnx_dtype is not None and onnx_dtype != dtype:
        raise ConfigError(
            fmt(f"{where} {name!r}", f"Has dtype {dtype!r} in the config but {onnx_dtype!r} in {model!r}", "They must agree.")
        )
    if onnx_shape is None:
        return
    if len(onnx_shape) != len(shape):
        raise ConfigError(
            fmt(
                f"{where} {name!r}",
                f"Has rank {len(shape)} in the config (shape {shape}) but rank {len(onnx_shape)} in {model!r} "
                f"(shape {onnx_shape})",
                "They must agree.",
            )
        )
    for axis, (ours, theirs) in enumerate(zip(shape, onnx_shape)):
        if isinstance(theirs, int) and ours != theirs:
            raise ConfigError(
                fmt(
                    f"{where} {name!r}",
                    f"Dim {axis} is {ours!r} in the config but {theirs} in {model!r}",
                    f"The model's shape is {onnx_shape}.",
                )
            )


def validate_against_model(cfg: ModelConfig, onnx_path: Union[str, os.PathLike, None] = None) -> None:
    """Checks that a config matches its ONNX step graph.

    Every config binding must be a graph input or output of the right role, dtype and rank (fixed dims
    must agree); every graph input and output must be declared; a continuation input must be one of the
    inputs; no name may be used twice. Weights stored as external data are not loaded.

    Args:
        cfg (ModelConfig): The config.
        onnx_path (str | os.PathLike | onnx.ModelProto | None): The ONNX file, or the model itself
            (named as ``cfg.model_path`` in messages). Defaults to ``cfg.model_path``.

    Raises:
        ConfigError: On the first mismatch, naming the binding, the config value and the model's.
    """
    import onnx  # heavy; only needed here

    model = None
    if isinstance(onnx_path, onnx.ModelProto):  # already in memory (save_step_graph): not read again
        model, onnx_path = onnx_path, cfg.model_path
    path = Path(onnx_path) if onnx_path is not None else cfg.model_path
    model_name = str(path)
    check_regular_file(path, f"Model {model_name!r}", MAX_MODEL_BYTES, "`model` in the config is relative to the YAML file.")
    try:
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError as err:
        raise ConfigError(
            fmt(f"Model {model_name!r}", "Does not exist", "`model` in the config is relative to the YAML file.")
        ) from err
    except Exception as err:  # onnx raises DecodeError and friends
        raise ConfigError(fmt(f"Model {model_name!r}", f"Cannot be read as ONNX: {err}")) from err

    graph_inputs = graph_bindings(model, "input", unnamed="?")
    graph_outputs = graph_bindings(model, "output", unnamed="?")

    # Names used twice are rejected by ModelConfig itself; re-check in case validation was bypassed.
    names = cfg.binding_names()
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(fmt(f"Binding {dupes[0]!r}", "Is used twice in the config", "Every binding name is unique."))

    for t in cfg.inputs:
        _check_binding("Input", t.name, t.dtype, t.shape, graph_inputs, "input", model_name)
    for s in cfg.state:
        _check_binding("State input", s.input, s.dtype, s.shape, graph_inputs, "input", model_name)
    for t in cfg.outputs:
        _check_binding("Output", t.name, t.dtype, t.shape, graph_outputs, "output", model_name)
    for s in cfg.state:
        _check_binding("State output", s.output, s.dtype, s.shape, graph_outputs, "output", model_name)

    declared_in = {t.name for t in cfg.inputs} | {s.input for s in cfg.state}
    declared_out = {t.name for t in cfg.outputs} | {s.output for s in cfg.state}
    for name in graph_inputs:
        if name not in declared_in:
            raise ConfigError(
                fmt(
                    f"Graph input {name!r}",
                    f"Of {model_name!r} is not declared in the config",
                    "Every graph input must be listed under `inputs` or as a `state` input.",
                )
            )
    for name in graph_outputs:
        if name not in declared_out:
            raise ConfigError(
                fmt(
                    f"Graph output {name!r}",
                    f"Of {model_name!r} is not declared in the config",
                    "Every graph output must be listed under `outputs` or as a `state` output.",
                )
            )
    if cfg.continuation is not None and cfg.continuation.input not in {t.name for t in cfg.inputs}:
        raise ConfigError(
            fmt(
                f"Continuation input {cfg.continuation.input!r}",
                "Is not one of the config inputs",
                f"Inputs: {[t.name for t in cfg.inputs]}.",
            )
        )


def json_schema() -> dict[str, Any]:
    """Returns the JSON schema of the model config (what `rnnrt schema` prints).

    It lists the deprecated ``engine`` section too (marked ``deprecated``), so files older builds wrote
    still validate; :func:`load_config` reads that section once into :attr:`ModelConfig.legacy_engine`.
    """
    schema = ModelConfig.model_json_schema()
    legacy = EngineConfig.model_json_schema()
    schema.setdefault("$defs", {}).update(legacy.pop("$defs", {}))
    schema["$defs"]["EngineConfig"] = legacy
    schema["properties"]["engine"] = {
        "anyOf": [{"$ref": "#/$defs/EngineConfig"}, {"type": "null"}], "default": None, "deprecated": True,
        "description": "Deprecated: the built plan, as older `rnnrt build`s recorded it (read with a warning; "
        "builds now write the plan's manifest `<plan>.json` instead)."}
    return schema


def save_step_graph(step: Any, out_dir: Union[str, os.PathLike], name: str = "model") -> Path:
    """Writes a step graph as ``out_dir/<name>.onnx`` plus its config ``out_dir/<name>.yaml``.

    Args:
        step (rnnrt.ir.stepgraph.StepGraph): The step graph an importer produced.
        out_dir (str | os.PathLike): Output directory; created if missing.
        name (str): File stem of both files. Defaults to ``"model"``.

    Returns:
        Path: The YAML config's path.
    """
    import onnx

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(fmt(f"Output directory {str(out)!r}", f"Cannot be created: {err.strerror}")) from err
    onnx_path = out / f"{name}.onnx"
    if getattr(step, "external_data", None):
        # Weights the importer kept out of the ModelProto: streamed to <name>.onnx.data, never serialized.
        from rnnrt.ir.weights import save_with_external_data

        save_with_external_data(step.model, step.external_data, onnx_path, f"{name}.onnx.data")
    else:
        # Protobuf cannot serialize 2 GiB; big weights go to an external data file next to the model.
        external = step.model.ByteSize() > (1 << 30)
        try:
            with staged([onnx_path, out / f"{name}.onnx.data"], "Model file") as (tmp, _):
                onnx.save_model(step.model, str(tmp), save_as_external_data=external,
                                location=f"{name}.onnx.data" if external else None)
        except OSError as err:
            raise ConfigError(fmt(f"Model file {str(onnx_path)!r}", f"Cannot be written: {err.strerror}")) from err
    cfg = config_from_step_graph(step, onnx_path)
    yaml_path = out / f"{name}.yaml"
    save_config(cfg, yaml_path)
    # Checked against the model in memory: reading a big model back would double the peak memory.
    validate_against_model(load_config(yaml_path, validate=False), step.model)
    return yaml_path
