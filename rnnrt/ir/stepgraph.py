"""The step graph: an ONNX model whose recurrent state is explicit inputs and outputs.

Every importer (Caffe, ONNX) produces a :class:`StepGraph`; its bindings are the classes of
:mod:`rnnrt.ir.bindings` (re-exported here), which ``rnnrt.config`` writes as the YAML
config and every later stage (build, engines, Session) reads only that config and the ONNX file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx

from rnnrt.ir.bindings import Continuation, Dim, StatePair, TensorSpec
from rnnrt.ir.checks import ChecksRecord

__all__ = ["Continuation", "Dim", "StatePair", "StepGraph", "TensorSpec"]


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
        external_data (dict[str, np.ndarray]): Weights too big to embed (``rnnrt.ir.weights``): the
            model holds external-data placeholders for them, and ``rnnrt.config.save_step_graph``
            writes them to ``<name>.onnx.data``. Empty for models that embed their weights.
        checks (ChecksRecord | None): What the convert-time equivalence check compared
            (``rnnrt.importers.check``); None when it did not run.
    """

    model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    states: list[StatePair]
    continuation: Continuation | None = None
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    external_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    checks: ChecksRecord | None = None
