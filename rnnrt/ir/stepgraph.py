"""The step graph: an ONNX model whose recurrent state is explicit inputs and outputs.

Every importer (Caffe, ONNX) produces a :class:`StepGraph`; its bindings are the classes of
:mod:`rnnrt.ir.bindings` (re-exported here), which :mod:`rnnrt.ir.config` writes as the model YAML beside
the ONNX file. The later stages read those two files, and also the plan's manifest that ``rnnrt build``
writes beside the plan (:mod:`rnnrt.ir.manifest`: binding dtypes, the profile, the runtimes, the rewritten
graph). A :class:`StepGraph` itself reaches no later stage: it is handed from an importer to
:func:`rnnrt.ir.config.save_step_graph`, which writes the two files.
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
            model holds external-data placeholders for them, and ``rnnrt.ir.config.save_step_graph``
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
