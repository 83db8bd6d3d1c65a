"""The wire protocol between :mod:`rnnrt.serve.client` and the served model (:mod:`rnnrt.serve.backend`).

Written once here and imported by both sides (see the backend's module doc for what each means):

- tensor names: :data:`CONTROL_INPUT`, :data:`STATE_TENSOR`, :data:`STREAMS_INPUT`, :data:`FRAMES_INPUT`,
  :data:`FLAGS_INPUT`, :data:`STATUS_TENSOR`;
- ``RNNRT_CONTROL`` values (:data:`COMMANDS`) and ``RNNRT_FLAGS`` bits of a multi-stream request (:data:`FLAGS`);
- the default request limits (:data:`MAX_FRAMES`, :data:`MAX_REQUEST_BYTES`) and the model parameters that
  change them.

Tensors cross the python-backend stub by DLPack only: the bundled stub's numpy conversions (``as_numpy``,
``Tensor(name, array)``) read numpy 1.x descriptors and break under numpy 2, so no tensor is of
TYPE_STRING (the state travels as UINT8 bytes).
"""

from __future__ import annotations

CONTROL_INPUT = "RNNRT_CONTROL"
STATE_TENSOR = "RNNRT_STATE"
STREAMS_INPUT = "RNNRT_STREAMS"
FRAMES_INPUT = "RNNRT_FRAMES"
FLAGS_INPUT = "RNNRT_FLAGS"
STATUS_TENSOR = "RNNRT_STATUS"

DETACH, RESTORE, CLOSE, RELEASE = 1, 2, 3, 4
COMMANDS = {DETACH: "detach", RESTORE: "restore", CLOSE: "close", RELEASE: "release"}
"""``RNNRT_CONTROL`` (INT32) values. ``release`` (sent with END) ends the stream's Triton sequence and keeps
its state in the pool: the stream goes on in multi-stream requests only."""

FLAG_START, FLAG_END, FLAG_DETACH, FLAG_RESTORE = 1, 2, 4, 8
FLAGS = {"start": FLAG_START, "end": FLAG_END, "detach": FLAG_DETACH, "restore": FLAG_RESTORE}
"""``RNNRT_FLAGS`` bits of a multi-stream request, per stream."""

MAX_FRAMES = 16384
"""Default bound on the frames of one request (all streams of a multi-stream request together):
``rnnrt_max_frames`` in config.pbtxt, ``--max-frames`` of ``rnnrt serve``/``export-triton``."""
MAX_REQUEST_BYTES = 64 << 20
"""Default bound on the input bytes of one request (frames and state): ``rnnrt_max_request_bytes``,
``--max-request-bytes``."""
