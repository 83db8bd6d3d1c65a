"""What a TensorRT network or engine has: its bindings (:class:`BindingInfo`) and layers (:class:`LayerInfo`).

Shared by the builder (the build record) and ``rnnrt inspect`` (:mod:`rnnrt.build.inspect`); imports
neither onnx nor TensorRT.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["BindingInfo", "LayerInfo", "network_layers", "trt_dtype_name"]


@dataclasses.dataclass(frozen=True)
class BindingInfo:
    """One input or output of a network or engine.

    Args:
        name (str): Tensor name.
        mode (str): ``"input"`` or ``"output"``.
        dtype (str): dtype name (``"float32"``, ``"float16"`` ...).
        shape (tuple[int, ...]): Shape; -1 marks a dynamic dim.
        profile (tuple | None): ``(min, opt, max)`` shapes of a dynamic input, else None.
    """

    name: str
    mode: str
    dtype: str
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    def describe(self) -> str:
        """One line: ``input  data  float32 [-1, 1, 5]  profile [1,1,5] / [8,1,5] / [64,1,5]``."""
        text = f"{self.mode:<6} {self.name:<24} {self.dtype:<9} {list(self.shape)}"
        if self.profile is not None:
            text += "  profile " + " / ".join(str(list(s)) for s in self.profile)
        return text


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One layer of a parsed TensorRT network.

    Args:
        name (str): Layer name (usually the ONNX node name).
        type (str): TensorRT layer type, e.g. ``"MATRIX_MULTIPLY"``.
        outputs (tuple[str, ...]): ``"name: dtype[shape]"`` of each output.
    """

    name: str
    type: str
    outputs: tuple[str, ...]

    def describe(self) -> str:
        """One line: ``MATRIX_MULTIPLY  node_name -> y: float16[1, 28]``."""
        return f"{self.type:<18} {self.name} -> {', '.join(self.outputs)}"


# TensorRT DataType member name -> dtype name.
_TRT_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8",
    "INT4": "int4",
}


def trt_dtype_name(dt: Any) -> str:
    """The dtype name of a TensorRT ``DataType`` (``HALF`` -> ``float16``)."""
    name = getattr(dt, "name", str(dt).split(".")[-1])
    return _TRT_DTYPES.get(name, name.lower())


def _tensor_text(t: Any) -> str:
    return f"{t.name}: {trt_dtype_name(t.dtype)}{list(t.shape)}"


def network_layers(network: Any) -> list[LayerInfo]:
    """The layers of a parsed network (no GPU needed)."""
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = tuple(_tensor_text(layer.get_output(j)) for j in range(layer.num_outputs))
        layers.append(LayerInfo(name=layer.name, type=getattr(layer.type, "name", str(layer.type)), outputs=outputs))
    return layers
