"""The options of ``rnnrt convert`` (an importer's options), kept in a YAML file or given as flags.

``rnnrt convert --config import.yaml`` reads them with :func:`load_import_config`; every flag overrides one
field. They are the importers' input, not a stage contract: the importers' output is the step graph and
its model YAML (:mod:`rnnrt.ir.config`).

Example::

    from rnnrt.importers.options import load_import_config

    options = load_import_config("import.yaml", {"name": "lm"})
    print(options.model, options.output)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.bindings import PositiveInt, StrictInt, format_validation_errors
from rnnrt.ir.files import read_yaml

__all__ = ["ImportConfig", "json_schema", "load_import_config"]

_format_errors = format_validation_errors


class ImportConfig(BaseModel):
    """Options of ``rnnrt convert`` kept in a YAML file (``rnnrt convert --config import.yaml``).

    Every ``rnnrt convert`` flag overrides exactly one field; ``--plugins`` adds to ``plugins``. Paths are
    relative to the YAML file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Optional[str] = Field(default=None, description="deploy.prototxt (Caffe) or model.onnx to convert.")
    weights: Optional[str] = Field(default=None, description="weights.caffemodel; none means seeded random weights.")
    output: str = Field(default="out", description="Output directory for <name>.onnx and <name>.yaml.")
    name: str = Field(default="model", min_length=1, description="File stem of the written files.")
    batch: Literal["fixed", "dynamic"] = Field(default="fixed", description="'dynamic': symbolic batch (stream) axis.")
    seed: StrictInt = Field(default=0, description="Seed of random weights when no weights are given.")
    phase: Literal["TEST", "TRAIN"] = Field(default="TEST", description="Caffe phase for include/exclude rules.")
    plugins: list[str] = Field(default_factory=list, description="Caffe layer plugin directories or .py files.")
    add_reset: bool = Field(default=False, description="ONNX: add a continuation input 'cont'.")
    forward_only: bool = Field(default=False, description="ONNX: keep the forward direction of bidirectional layers.")
    override: Optional[str] = Field(default=None, description="ONNX: YAML that fixes detected state pairs.")
    set: dict[str, Any] = Field(
        default_factory=dict, description="ONNX: inputs bound to constants and folded (e.g. {sr: 16000}).")
    context: list[str] = Field(
        default_factory=list, description="ONNX: INPUT:K, the last K samples of INPUT carried to the next call as state.")
    time_steps: Optional[Union[PositiveInt, Literal["dynamic"]]] = Field(
        default=None, description="ONNX: re-shape the time axis of a fixed-T export (N or 'dynamic').")
    strict: bool = Field(default=False, description="ONNX: a head that mixes time steps is an error, not a warning.")
    dims: dict[str, PositiveInt] = Field(
        default_factory=dict, description="Dynamic dims of the inputs pinned to a size (e.g. {chunk: 512}).")
    no_check: bool = Field(default=False, description="Skip the convert-time equivalence check.")
    check_steps: Optional[PositiveInt] = Field(
        default=None, ge=2, description="Calls per stream of the equivalence check (default: 8, fewer for slow models).")
    check_reference: Optional[str] = Field(
        default=None, description="A recorded stream (.npz of call{k}/{name}) the step graph must reproduce.")

    @pydantic.field_validator("context", mode="before")
    @classmethod
    def _one_context(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


_IMPORT_PATHS = ("model", "weights", "output", "override", "check_reference")


def load_import_config(path: Union[str, os.PathLike], overrides: Optional[dict[str, Any]] = None) -> ImportConfig:
    """Reads import options from YAML (paths resolved against its directory) and applies ``overrides``.

    Args:
        path (str | os.PathLike): The YAML file.
        overrides (dict | None): Field values that win over the file (None values are ignored);
            ``plugins`` is appended to the file's list.

    Raises:
        ConfigError: naming the file and the field when the YAML is malformed or has unknown keys.
    """
    path = Path(path)
    data = read_yaml(path, "Import config")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(fmt(f"Import config {str(path)!r}", "Is not a mapping", "Expected keys such as model: and weights:."))
    for key in _IMPORT_PATHS:
        if isinstance(data.get(key), str):
            data[key] = str((path.parent / data[key]).resolve()) if not os.path.isabs(data[key]) else data[key]
    if isinstance(data.get("plugins"), list):
        data["plugins"] = [p if not isinstance(p, str) or os.path.isabs(p) or p.startswith("entry:")
                           else str((path.parent / p).resolve()) for p in data["plugins"]]
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "plugins":
            data[key] = list(data.get("plugins") or []) + list(value)
        elif key == "set" and isinstance(data.get("set"), dict):
            data[key] = {**data["set"], **value}
        else:
            data[key] = value
    try:
        return ImportConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise ConfigError(fmt(f"Import config {str(path)!r}", f"Invalid: {_format_errors(err)}")) from err



def json_schema() -> dict[str, Any]:
    """Returns the JSON schema of the import options (what `rnnrt schema --kind import` prints)."""
    return ImportConfig.model_json_schema()
