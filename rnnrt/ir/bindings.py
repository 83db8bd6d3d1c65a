"""The one description of a step graph's bindings: tensors, state pairs, the continuation input.

The same classes are the step-graph IR (:class:`rnnrt.ir.stepgraph.StepGraph` holds them), the model
YAML's ``inputs``/``outputs``/``state``/``continuation`` entries (``rnnrt.ir.config`` uses them as its
models) and the fields an ONNX override may set. They are frozen pydantic models: built from YAML
they are validated field by field (strict integers: ``batch_axis: true`` is an error, not 1); built
in code they also take positional arguments::

    from rnnrt.ir.bindings import StatePair, TensorSpec

    x = TensorSpec("x", "float32", ["batch", 4], 0)
    h = StatePair("h0", "hT", ["batch", 8])         # dtype float32, batch_axis 0, initial zeros

This module is also the one place that maps ONNX element types to dtype names (:data:`ONNX_TO_DTYPE`)
and reads an ONNX tensor's dims (:func:`onnx_tensor_type`, :func:`graph_bindings`).
"""

from __future__ import annotations

import numbers
from typing import Annotated, Any, Literal, Optional, Sequence, Union, get_args

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.streams import fold_entries

__all__ = [
    "DTYPES",
    "ONNX_TO_DTYPE",
    "Axis",
    "Continuation",
    "DType",
    "Dim",
    "PositiveInt",
    "StatePair",
    "StrictInt",
    "TensorName",
    "TensorSpec",
    "check_bindings",
    "format_validation_errors",
    "graph_bindings",
    "onnx_tensor_type",
]


def _integral(value: Any) -> Any:
    # numpy integers are integers; bools are not (YAML's `true` must not read as 1).
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


# Constraints go inside the before-validator, so that the JSON schema shows them (minimum: 0).
StrictInt = Annotated[int, Strict(), BeforeValidator(_integral)]
"""An integer that is an integer: not a bool, a float or a numeric string."""

Axis = Annotated[int, Strict(), Field(ge=0), BeforeValidator(_integral)]
"""An axis index (0-based)."""

PositiveInt = Annotated[int, Strict(), Field(ge=1), BeforeValidator(_integral)]
"""A strict integer of at least 1 (a count, a batch size)."""

TensorName = Annotated[str, Strict(), Field(min_length=1)]
"""A tensor name in the ONNX graph."""

def _dim(value: Any) -> Any:
    # One message for a bad dim instead of one per branch of the union.
    if isinstance(value, str) and value:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise ValueError(f"a dim is a size (an integer >= 0) or a name (a non-empty string), not {value!r}")


Dim = Annotated[Union[Axis, Annotated[str, Strict(), Field(min_length=1)]], BeforeValidator(_dim)]
"""A dimension: a fixed size, or a name (e.g. ``"batch"``) for a dynamic one."""

DType = Literal["float32", "float16", "bfloat16", "float64", "int8", "uint8", "int32", "int64", "bool"]
"""The element types rnnrt binds, as numpy dtype names."""

DTYPES: tuple[str, ...] = get_args(DType)

# ONNX TensorProto element type -> dtype name (onnx.TensorProto.FLOAT == 1, ...; numbers keep onnx
# out of this module's imports).
ONNX_TO_DTYPE: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}
assert set(ONNX_TO_DTYPE.values()) == set(DTYPES)


def format_validation_errors(err: pydantic.ValidationError) -> str:
    """One line per pydantic error: ``<location>: <message>`` (``unknown key`` for extra fields)."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}")
    return "; ".join(parts)


class _Binding(BaseModel):
    """Frozen, strict about keys; takes its fields positionally too (in declaration order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = list(type(self).model_fields)
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes at most {len(fields)} positional arguments")
        for key, value in zip(fields, args):
            if key in kwargs:
                raise TypeError(f"{type(self).__name__} got two values for {key!r}")
            kwargs[key] = value
        try:
            super().__init__(**kwargs)
        except pydantic.ValidationError as err:
            name = kwargs.get("name", kwargs.get("input", "?"))
            raise ConfigError(
                fmt(f"{type(self).__name__} {name!r}", f"Invalid: {format_validation_errors(err)}")
            ) from err

    # Validation of a nested entry (a config's `inputs: [...]`) goes straight to pydantic's validator,
    # so its errors keep their location in the file; pydantic's RootModel marks its __init__ the same way.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


def _check_axis(axis: Optional[int], shape: Sequence[Any], what: str) -> None:
    if axis is not None and axis >= len(shape):
        raise ValueError(f"{what} {axis} is out of range for shape {list(shape)}")


class TensorSpec(_Binding):
    """A user-fed input or a user-visible output of the step graph."""

    name: TensorName = Field(description="Tensor name in the ONNX step graph.")
    dtype: DType = Field(description="Element type, as a numpy dtype name.")
    shape: tuple[Dim, ...] = Field(description="Shape; a string names a dynamic dim (e.g. 'batch').")
    batch_axis: Optional[Axis] = Field(
        default=None, description="Axis that indexes independent streams (slots); null if none."
    )
    batch_fold: Optional[tuple[PositiveInt, PositiveInt]] = Field(
        default=None,
        description="[outer, inner] when the batch axis folds the N streams with other dims: it has "
        "outer*N*inner entries and entry (o*N + n)*inner + i belongs to stream n. [T, 1]: T*N time-major rows, "
        "row t*N + n (LRCN frames). Null: the batch axis is the N streams alone.",
    )

    @model_validator(mode="after")
    def _check(self) -> "TensorSpec":
        _check_axis(self.batch_axis, self.shape, "batch_axis")
        if self.batch_fold is not None and self.batch_axis is None:
            raise ValueError(f"batch_fold {list(self.batch_fold)} needs a batch_axis")
        return self

    def batch_entries(self, batch: int) -> int:
        """The size of the batch axis for ``batch`` streams (``outer * batch * inner`` when folded)."""
        return fold_entries(self.batch_fold, batch)


class StatePair(_Binding):
    """A recurrent state pair: the graph reads ``input`` and writes the next state to ``output``."""

    input: TensorName = Field(description="Graph input that receives the previous state (e.g. 'lstm1.h0').")
    output: TensorName = Field(description="Graph output that carries the next state (e.g. 'lstm1.hT').")
    shape: tuple[Dim, ...] = Field(description="Shape of both tensors; only the batch dim may be dynamic.")
    dtype: DType = Field(default="float32", description="Element type of both tensors.")
    batch_axis: Axis = Field(default=0, description="Slot axis; reset(slots=...) zeroes these rows.")
    initial: Literal["zeros"] = Field(default="zeros", description="Initial value of the state.")

    @model_validator(mode="after")
    def _check(self) -> "StatePair":
        _check_axis(self.batch_axis, self.shape, "batch_axis")
        for axis, dim in enumerate(self.shape):
            if isinstance(dim, str) and axis != self.batch_axis:
                raise ValueError(f"state dim {axis} is dynamic ({dim!r}); only the batch dim may be dynamic")
        return self


class Continuation(_Binding):
    """The input that says whether a sequence continues (Caffe ``cont``) and how the Session fills it."""

    input: TensorName = Field(description="Name of the continuation input; must be one of `inputs`.")
    batch_axis: Axis = Field(description="Slot axis of the continuation input.")
    time_axis: Optional[Axis] = Field(
        default=None,
        description="Time axis of the continuation input, or null. Equal to batch_axis when the input holds T*N "
        "time-major rows (batch_fold [T, 1]): the first time step is rows 0..N-1.",
    )
    fill: Literal["auto", "never"] = Field(
        default="auto",
        description="'auto': when the caller omits the input, the Session feeds 1, or 0 at the first time "
        "step of slots reset since the last step. 'never': the caller must always feed it.",
    )


def check_bindings(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    states: Sequence[StatePair],
    continuation: Optional[Continuation],
) -> None:
    """Checks the bindings as a whole: no name used twice; the continuation is an input, axes in range.

    Raises:
        ValueError: naming the binding (pydantic validators turn it into a located error).
    """
    seen: dict[str, str] = {}
    roles = (
        [(t.name, "inputs") for t in inputs]
        + [(t.name, "outputs") for t in outputs]
        + [(s.input, "state.input") for s in states]
        + [(s.output, "state.output") for s in states]
    )
    for name, role in roles:
        if name in seen:
            raise ValueError(f"binding name {name!r} is used twice (as {seen[name]} and as {role})")
        seen[name] = role
    if continuation is not None:
        by_name = {t.name: t for t in inputs}
        cont = by_name.get(continuation.input)
        if cont is None:
            raise ValueError(f"continuation input {continuation.input!r} is not one of the inputs {sorted(by_name)}")
        _check_axis(continuation.batch_axis, cont.shape, "continuation batch_axis")
        _check_axis(continuation.time_axis, cont.shape, "continuation time_axis")


def onnx_tensor_type(value_info: Any, unnamed: Optional[str] = None) -> tuple[Optional[str], Optional[list[Dim]]]:
    """The dtype name and shape of an ONNX ``ValueInfoProto``: the one reader of ONNX dims.

    Args:
        value_info (onnx.ValueInfoProto): A graph input, output or value_info entry.
        unnamed (str | None): What a dynamic dim without a name becomes; None (the default) names it
            ``<tensor>_dim<axis>``, so that unnamed dims of different tensors stay different.

    Returns:
        tuple: The dtype name (None for an element type rnnrt does not bind) and the shape (None when
        the model records no shape); a dim is an int, or a string for a dynamic one.
    """
    ttype = value_info.type.tensor_type
    dtype = ONNX_TO_DTYPE.get(ttype.elem_type)
    if not ttype.HasField("shape"):
        return dtype, None
    dims: list[Dim] = []
    for axis, d in enumerate(ttype.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or (f"{value_info.name}_dim{axis}" if unnamed is None else unnamed))
    return dtype, dims


def graph_bindings(model: Any, role: str, unnamed: Optional[str] = None) -> dict[str, Any]:
    """The graph inputs (``role="input"``) or outputs (``"output"``) of an ONNX model, weights excluded.

    Old exporters list initializers as graph inputs too; those are weights, not bindings.

    Returns:
        dict[str, tuple[str | None, list[Dim] | None]]: name -> :func:`onnx_tensor_type` of it, in graph order.
    """
    weights = {t.name for t in model.graph.initializer}
    vis = model.graph.input if role == "input" else model.graph.output
    return {vi.name: onnx_tensor_type(vi, unnamed) for vi in vis if vi.name not in weights}
