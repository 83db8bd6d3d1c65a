"""Export a model config as a Triton Inference Server model repository (``rnnrt export-triton``).

Three engines:

- ``python``: Triton's python backend runs rnnrt itself (:mod:`rnnrt.serve.backend`): a StreamPool
  behind the sequence batcher's ``oldest`` strategy, state kept by rnnrt per correlation id. This is
  what ``rnnrt serve`` runs; see docs/serving.md.
- ``onnx`` / ``plan``: Triton's onnxruntime / tensorrt backends with Triton's implicit state, below.

``config.pbtxt`` is Triton's ``ModelConfig`` protobuf message (``tritonclient.grpc.model_config_pb2``)
written by protobuf's text format; model names are plain folder names inside the repository.

Triton's sequence batcher (``direct`` strategy) gives every live sequence its own batch slot, keeps the
recurrent state inside the server (implicit state, paired by name, zero initial state) and signals the
first request of a sequence with the START control. The export writes::

    REPO/<name>/config.pbtxt
    REPO/<name>/1/model.onnx        (--engine onnx; Triton backend "onnxruntime")
    REPO/<name>/1/model.plan        (--engine plan; Triton backend "tensorrt")

START semantics:

- With a continuation input (Caffe ``cont``): START is mapped onto it with ``fp32_false_true: [1, 0]``
  (``int32_false_true`` for an int32 input), so the first request of a sequence runs with cont=0 at
  t=0, exactly as ``Session.reset`` + auto-filled cont; later requests run with cont=1. Triton also
  resets the implicit state to ``initial_state`` (zeros) at START.
- Without one: START only resets the implicit state to zeros. For models whose cont does nothing but
  zero the previous state (Caffe LSTM/RNN) both give the same outputs; a model that reads cont in
  other ways needs the continuation input.

Layout: Triton batches along the first dim. A step graph whose batch axis is not 0 (Caffe's
``(T, N, ...)``), or whose continuation input is not ``(N, 1)``, is wrapped: batch-first graph inputs
and outputs with Transpose nodes to the original layout, and a ``(N, 1)`` START control input expanded
to the original continuation shape (the control at t=0, 1 elsewhere). Mid-request resets (cont=0 at
t>0) cannot be expressed through START; split such requests. A plan is rebuilt from the wrapped graph
when wrapping was needed.

Folded rows (a binding with ``batch_fold``, e.g. an LRCN net's ``T*N`` time-major frames): each batch row
of the Triton tensor is one sequence's ``outer*inner`` entries (its T frames); the wrapper reshapes and
transposes them into the graph's ``t*N + n`` rows and back. A continuation fed as ``T*N`` rows (clip
markers) gets START on its first time step.

One module per part: :mod:`.layout` (shapes as Triton sees them, whether to wrap), :mod:`.wrap` (the
wrapped graph and its plan), :mod:`.pbtxt`, :mod:`.onnx_plan_config` and :mod:`.python_config` (the configs),
:mod:`.config` (:func:`triton_config`) and :mod:`.export` (:func:`export_triton`: staging and move).

Example::

    from rnnrt.serve.triton import export_triton

    model_dir = export_triton("out/model.yaml", "repo/", engine="onnx")
"""


from rnnrt.serve.triton.config import (ENGINES, INSTANCE_KINDS, check_model_name, default_instance_kind, triton_config,
                                       triton_config_text)
from rnnrt.serve.triton.export import export_triton
from rnnrt.serve.triton.layout import DEFAULT_MAX_BATCH
from rnnrt.serve.triton.pbtxt import TRITON_DTYPES, model_config_pb2
from rnnrt.serve.triton.python_config import PYTHON_MODEL_DIR

__all__ = ["TRITON_DTYPES", "check_model_name", "export_triton", "triton_config", "triton_config_text"]
