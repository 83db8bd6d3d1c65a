"""The step graph: an ONNX model whose recurrent state is explicit inputs and outputs.

Every importer (Caffe, ONNX) produces a :class:`StepGraph`; ``rnnrt.config`` turns it into the YAML
config and every later stage (build, engines, Session) reads only that config and the ONNX file.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

import onnx

Dim = Union[int, str]
"""A dimension: a fixed size, or a symbolic name (e.g. ``"batch"``) for a dynamic one."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A user-facing input or output of the step graph.

    Args:
        name (str): The ONNX tensor name.
        dtype (str): A numpy dtype name, e.g. ``"float32"``.
        shape (tuple[Dim, ...]): The shape; symbolic dims are strings.
        batch_axis (int | None): Which axis indexes independent streams (slots); None if none.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    batch_axis: int | None = None


@dataclasses.dataclass(frozen=True)
class StatePair:
    """A recurrent state: what the graph reads at ``input`` it writes, one step later, at ``output``.

    Args:
        input (str): The graph input that receives the previous state.
        output (str): The graph output that carries the next state.
        shape (tuple[Dim, ...]): Shape of both tensors.
        dtype (str): Numpy dtype name of both tensors.
        batch_axis (int): The slot axis; ``reset(slots=...)`` zeroes these rows.
    """

    input: str
    output: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    batch_axis: int = 0


@dataclasses.dataclass(frozen=True)
class Continuation:
    """The input that says, per slot and time step, whether a sequence continues (Caffe ``cont``).

    The Session fills it when the caller does not: 1 everywhere, except 0 at the first time step of
    slots that were reset since the last step.

    Args:
        input (str): The graph input name.
        batch_axis (int): Slot axis of that input.
        time_axis (int | None): Time axis of that input, or None if it has none.
    """

    input: str
    batch_axis: int
    time_axis: int | None = None


@dataclasses.dataclass
class StepGraph:
    """An ONNX step graph with the description of its bindings.

    Args:
        model (onnx.ModelProto): The graph; state inputs/outputs are ordinary graph inputs/outputs.
        inputs (list[TensorSpec]): User-fed inputs (the continuation input included, state excluded).
        outputs (list[TensorSpec]): User-visible outputs (state outputs excluded).
        states (list[StatePair]): Recurrent state pairs, paired by name.
        continuation (Continuation | None): The continuation input, if the model has one.
        source (dict[str, Any]): Where the graph came from (format, file paths), for the config.
        notes (list[str]): Things the user should know about the conversion.
    """

    model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    states: list[StatePair]
    continuation: Continuation | None = None
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
