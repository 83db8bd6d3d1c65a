"""The wire protocol between :mod:`rnnrt.serve.client` and the served model (:mod:`rnnrt.serve.backend`).

Written once here and imported by both sides (see the backend's module doc for what each means):

- tensor names: :data:`CONTROL_INPUT`, :data:`STATE_TENSOR`, :data:`STREAMS_INPUT`, :data:`FRAMES_INPUT`,
  :data:`FLAGS_INPUT`, :data:`STATUS_TENSOR`;
- ``RNNRT_CONTROL`` values (:data:`COMMANDS`) and ``RNNRT_FLAGS`` bits of a multi-stream request (:data:`FLAGS`);
- the default request limits (:data:`MAX_FRAMES`, :data:`MAX_REQUEST_BYTES`) and the model parameters that
  change them;
- how a stream id travels (:func:`sequence_id`), how the model tags a failed request's error
  (:func:`tagged_error`) and how the client reads it back as an rnnrt error (:func:`reply_error`).

Tensors cross the python-backend stub by DLPack only: the bundled stub's numpy conversions (``as_numpy``,
``Tensor(name, array)``) read numpy 1.x descriptors and break under numpy 2, so no tensor is of
TYPE_STRING (the state travels as UINT8 bytes).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Hashable

import numpy as np

from rnnrt.errors import BindingError, ConfigError, EngineError, RnnrtError, SnapshotError, StateError, fmt

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

ERRORS = {cls.__name__: cls for cls in (BindingError, StateError, ConfigError, EngineError, SnapshotError)}
"""The rnnrt errors a failed request's tag names (any other error is an ``EngineError``)."""
_TAGGED = re.compile(r"\[request id: ([^\]]*)\] (\w+): (.*)", re.S)
REQUEST_ID = re.compile(r"\[request id: ([^\]]*)\]")


def sequence_id(stream_id: Hashable) -> int:
    """The uint64 correlation id a stream id travels as: the int itself when it is one in 1..2**63-1, else
    63 bits of a BLAKE2b hash of ``str(id)`` (tritonclient sends sequence ids as int64)."""
    if isinstance(stream_id, (int, np.integer)) and not isinstance(stream_id, bool) and 0 < stream_id < 2**63:
        return int(stream_id)
    if not isinstance(stream_id, (str, int, np.integer)) or isinstance(stream_id, bool):
        raise StateError(fmt(f"Stream id {stream_id!r}", f"Is a {type(stream_id).__name__}", "Use an int or a str."))
    digest = int.from_bytes(hashlib.blake2b(str(stream_id).encode(), digest_size=8).digest(), "little")
    return (digest & (2**63 - 1)) or 1


def error_kind(err: BaseException) -> str:
    """The kind a failed request's tag names: the rnnrt error's class, else ``EngineError: <class>``."""
    return type(err).__name__ if type(err).__module__.startswith("rnnrt") else f"EngineError: {type(err).__name__}"


def tagged_error(request_id: str, err: BaseException) -> str:
    """The text of a failed request's Triton error: ``[request id: ID] <ErrorType>: <message>``."""
    return f"[request id: {request_id}] {error_kind(err)}: {err}"


def status_error(kind: str, text: str) -> RnnrtError:
    """The rnnrt error of one failed stream of a multi-stream request (its ``RNNRT_STATUS`` entry)."""
    return ERRORS[kind](text) if kind in ERRORS else EngineError(f"{kind}: {text}")


def reply_error(err: Exception, subject: str) -> RnnrtError:
    """The rnnrt error for a tritonclient exception: the model's tagged error, else what Triton said."""
    text = err.message() if hasattr(err, "message") and callable(err.message) else str(err)
    text = text or str(err)
    m = _TAGGED.search(text)
    if m and m.group(2) in ERRORS:
        return ERRORS[m.group(2)](m.group(3))
    status = str(getattr(err, "status", lambda: "")() or "")
    if "UNAVAILABLE" in status or "failed to connect" in text or "Socket closed" in text or "Connection" in text:
        return EngineError(fmt(subject, f"The server is unreachable: {text}",
                               "Check that the server runs (rnnrt serve) and the address."))
    if "START flag" in text or "sequence" in text and "not" in text and "active" in text:
        return StateError(fmt(subject, f"The server does not know the stream: {text}",
                              "The server restarted or released it after max_sequence_idle; open it again."))
    if "unexpected shape" in text or "unexpected datatype" in text or "unexpected inference input" in text \
            or "input" in text and ("expected" in text or "unexpected" in text):
        return BindingError(fmt(subject, f"The server refused the frame: {text}"))
    return EngineError(fmt(subject, f"The request failed: {text}"))


def infer_input(name: str, data: Any, datatype: str) -> Any:
    """A tritonclient gRPC input holding the array ``data`` (its shape as the request's)."""
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput(name, list(data.shape), datatype)
    inp.set_data_from_numpy(data)
    return inp
