"""Shape and dtype helpers of the ONNX importer: shape inference, the dims of a value, a dim set in place."""

from __future__ import annotations

import logging
from typing import Any, Optional, Union

import numpy as np
import onnx

from rnnrt.importers.onnx.probe import onnx_dims
from rnnrt.ir.stepgraph import Dim

G_LOGGER = logging.getLogger("rnnrt.onnx")


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as err:  # a model onnx cannot infer is still convertible; shapes come from the exporter
        G_LOGGER.debug("Shape inference failed: %s", err)
        return model


def _dims_of(vi: onnx.ValueInfoProto) -> list[Any]:
    return onnx_dims(vi)


def _set_dim(vi: onnx.ValueInfoProto, axis: int, value: Union[int, str]) -> None:
    d = vi.type.tensor_type.shape.dim[axis]
    d.Clear()
    if isinstance(value, int):
        d.dim_value = value
    else:
        d.dim_param = value


def _spec_shape(var: Any) -> Optional[list[Dim]]:
    if var.shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else "?") for d in var.shape]


def _np_dtype(dtype: Any) -> np.dtype:
    try:
        return np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    except TypeError:
        return np.dtype(np.float32)
