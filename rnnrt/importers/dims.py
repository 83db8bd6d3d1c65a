"""Dynamic dims pinned at convert time (``rnnrt convert --dim chunk=512``).

A model made for one chunk length (Silero: 512 samples at 16 kHz) still exports that dim as dynamic, and a
chunk of another length streams garbage with nothing said. :func:`pin_dims` fixes such a dim in the step
graph and its bindings: the config then records the size, and every step checks it (a frame of another
size is a ``BindingError`` naming the input, the dim and both sizes). The pinned sizes are also kept in
the config's ``source.dims``.

::

    step = pin_dims(convert_onnx("silero_vad.onnx", constants={"sr": 16000}, context="input:64"), {"chunk": 512})
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Mapping

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.stepgraph import StepGraph, TensorSpec

__all__ = ["pin_dims"]


def pin_dims(step: StepGraph, sizes: Mapping[str, int]) -> StepGraph:
    """Returns ``step`` with the named dynamic dims of its inputs and outputs fixed to ``sizes``.

    Args:
        step (StepGraph): The step graph (not modified).
        sizes (Mapping[str, int]): Dim name -> size (a positive integer), as the config names the dims.

    Raises:
        ConfigError: A name that is no dynamic dim of an input, a batch (stream) dim, or a size < 1.
    """
    if not sizes:
        return step
    batch = {t.shape[t.batch_axis] for t in list(step.inputs) + list(step.outputs) if t.batch_axis is not None}
    batch |= {s.shape[s.batch_axis] for s in step.states}
    named = sorted({d for t in step.inputs for d in t.shape if isinstance(d, str)} - batch)
    for name, size in sizes.items():
        if name in batch:
            raise ConfigError(fmt(f"--dim {name}={size}", f"{name!r} is the batch (stream) dim",
                                  "The number of streams is chosen when the model is loaded (batch_size=N) or built "
                                  "(--batch-profile)."))
        if name not in named:
            raise ConfigError(fmt(f"--dim {name}={size}", "Names no dynamic dim of the inputs",
                                  f"Dynamic dims: {named or 'none'}."))
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(fmt(f"--dim {name}={size}", "Is not a positive integer size"))
    model = copy.deepcopy(step.model)
    for vi in list(model.graph.input) + list(model.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in sizes:
                value = sizes[d.dim_param]
                d.Clear()
                d.dim_value = value

    def pinned(t: TensorSpec) -> TensorSpec:
        return t.model_copy(update={"shape": tuple(sizes.get(d, d) if isinstance(d, str) else d for d in t.shape)})

    source = {**step.source, "dims": {**step.source.get("dims", {}), **dict(sizes)}}
    notes = step.notes + [f"Pinned {', '.join(f'{k}={v}' for k, v in sizes.items())} (--dim): every step checks it."]
    return dataclasses.replace(step, model=model, inputs=[pinned(t) for t in step.inputs],
                               outputs=[pinned(t) for t in step.outputs], source=source, notes=notes)
