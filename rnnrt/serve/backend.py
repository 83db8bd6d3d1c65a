"""The Triton python-backend model that ``rnnrt export-triton --engine python`` writes (its ``model.py``).

Triton's sequence batcher (``oldest`` strategy) groups requests of different sequences into one
``execute`` call; the state of every sequence lives in one :class:`rnnrt.StreamPool` keyed by the
correlation id (CORRID), whose Session has ``max_candidate_sequences`` slots. Per request:

- ``READY = 0`` (a ``direct``-strategy placeholder): answered empty, nothing steps.
- ``START = 1``: opens the stream, or resets it when the id is still open. **Admission**: a full pool
  first releases the streams idle past ``max_sequence_idle_microseconds``, and only those; when none is,
  the new stream gets a ``StateError`` (a Triton error to that request) and no open stream is touched
  (streams of multi-stream requests hold pool slots but no Triton slot, so Triton may admit a sequence
  that the pool has no room for).
- Data inputs ``[1, K, ...]`` (the binding's shape without its batch axis, K frames a request): the
  stream takes K steps; the streams of all requests in the call with the same K and frame shapes step
  together, one atomic ``pool.step_chunk`` (K steps, the state read and written once). Outputs come back
  as ``[1, K, ...]``. The continuation input is optional: the pool fills it.
- ``END = 1``: the stream is closed after its frames.
- ``RNNRT_CONTROL`` (see :data:`COMMANDS`): ``"detach"`` returns the stream's :class:`~rnnrt.StreamState` bytes in
  ``RNNRT_STATE`` and closes it; ``"restore"`` (with START) opens it from the bytes in ``RNNRT_STATE``;
  ``"close"`` closes it; ``"release"`` (with END) ends the stream's Triton sequence and keeps its state (the
  client sends it once when a stream moves on to multi-stream requests, so that no Triton sequence is left
  open: an open sequence holds a Triton slot and makes a stopping server wait). The client's ``drain``
  moves streams between servers with these.
- **Limits**: a request of more than ``rnnrt_max_frames`` frames (default :data:`~rnnrt.serve.wire.MAX_FRAMES`;
  all streams of a multi-stream request together) or ``rnnrt_max_request_bytes`` input bytes (default
  :data:`~rnnrt.serve.wire.MAX_REQUEST_BYTES`) is refused with a ``BindingError`` before anything steps.
- A request that fails (unknown stream without START, a bad frame, bad state bytes, an engine failure)
  gets a Triton error response ``[request id: ID] <ErrorType>: <message>``; the other requests of the
  call go on and the failed stream's state is as before the request (``step_chunk`` is atomic: when a
  group's chunk fails, each of its streams is stepped alone and only the culprits fail, unmoved).
- Streams idle for ``max_sequence_idle_microseconds`` are released (Triton does not tell the model).

**Multi-stream requests** (``RNNRT_STREAMS`` present): one request carries the frames of S streams, so
Triton's fixed cost per request is paid once for all of them. The request itself is a one-request
sequence of its own (the client sends it with a fresh CORRID, START and END): the model does not open
its CORRID; the streams it names are keyed in the same pool by their own ids.

- ``RNNRT_STREAMS`` UINT64 ``[1, S]``: the streams' ids (what CORRID is for a sequence's requests).
- ``RNNRT_FRAMES`` INT32 ``[1, S]``: frames per stream, ``K_i >= 0``; the data inputs are
  ``[1, sum(K_i), ...]``, stream i's frames following stream i-1's.
- ``RNNRT_FLAGS`` INT32 ``[1, S]`` (optional, see :data:`FLAGS`): START (open or reset before the frames),
  END (close after them), DETACH and RESTORE (as the controls above; only in a request of one stream,
  the state in ``RNNRT_STATE``).
- Outputs ``[1, sum(K_i), ...]`` in the same order, and, when a stream failed, ``RNNRT_STATUS`` (UINT8,
  JSON text): ``{"errors": [[i, "ErrorType", "message"], ...]}`` (absent: every stream went fine; each
  output tensor costs the stub a fixed ~0.2 ms). A stream that fails (unknown without START, a bad
  frame, a full pool) is listed there, its output rows are zero and its state is as before; the others
  go on. A malformed request (counts that do not add up, a missing input) fails as a whole.

A stream may be stepped through both kinds of request (never two at once: the client sends one request
of a stream at a time). A stream stepped by a multi-stream request is not a Triton sequence, so Triton
holds no slot for it; the pool's idle timeout releases it like any other.

Counters on Triton's metrics endpoint (label ``model``): ``rnnrt_requests_total``, ``rnnrt_frames_total``,
``rnnrt_request_errors_total`` (a failed stream of a multi-stream request counts as one),
``rnnrt_streams_opened_total``, ``rnnrt_streams_closed_total``, ``rnnrt_streams_expired_total``,
``rnnrt_streams_migrated_total``, gauges ``rnnrt_streams_open`` and ``rnnrt_busy`` (1 while a request ran in
the last period). A thread of the model sends them to the
server every :data:`METRICS_PERIOD` seconds (each update is a message to the server, ~0.1 ms of stub CPU:
per request it was a tenth of the cost of a multi-stream request), so they lag by up to that.

The model's parameters (config.pbtxt) name the rnnrt config (``rnnrt_config``, relative to the version
folder), the binding layout (``rnnrt_bindings``, JSON), the engine backend (``rnnrt_backend``) and the values
of inputs without a batch axis (``rnnrt_shared``, JSON: the pool's ``shared=``) and the request limits
(``rnnrt_max_frames``, ``rnnrt_max_request_bytes``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rnnrt.serve.jobs import Carrier, Job, Sink
from rnnrt.serve.wire import (COMMANDS, CONTROL_INPUT, FLAG_DETACH, FLAG_END, FLAG_RESTORE, FLAG_START, FLAGS,
                              FLAGS_INPUT, FRAMES_INPUT, MAX_FRAMES, MAX_REQUEST_BYTES, STATE_TENSOR,
                              STATUS_TENSOR, STREAMS_INPUT, error_kind, tagged_error)

CONTROLS = ("START", "END", "READY", "CORRID")
METRICS_PERIOD = 0.05
_USED_CAPSULE = b"used_dltensor"

__all__ = ["CONTROL_INPUT", "FLAGS", "FLAGS_INPUT", "FRAMES_INPUT", "STATE_TENSOR", "STATUS_TENSOR",
           "STREAMS_INPUT", "TritonPythonModel"]


def _mark_used(capsule: Any) -> None:
    """Names a DLPack capsule that its consumer took ``used_dltensor`` (the name DLPack's producers check)."""
    global _set_capsule_name
    if _set_capsule_name is None:
        import ctypes

        fn = ctypes.pythonapi.PyCapsule_SetName
        fn.argtypes = [ctypes.py_object, ctypes.c_char_p]
        fn.restype = ctypes.c_int
        _set_capsule_name = fn
    if _set_capsule_name(capsule, _USED_CAPSULE) != 0:
        raise RuntimeError("PyCapsule_SetName failed")


_set_capsule_name: Any = None


def _param(config: dict, key: str, default: Optional[str] = None) -> Optional[str]:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    """Runs an rnnrt StreamPool behind Triton's sequence batcher (see the module doc)."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        import rnnrt
        from rnnrt import StreamPool

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        cfg_path = version_dir / _param(config, "rnnrt_config", "rnnrt_model/model.yaml")
        layout = json.loads(_param(config, "rnnrt_bindings", "{}"))
        self._in_axes: dict[str, int] = layout["inputs"]
        self._sized = tuple(self._in_axes) + (STATE_TENSOR,)  # the inputs a request's byte bound counts
        self._out_axes: dict[str, int] = layout["outputs"]
        seq = config["sequence_batching"]
        oldest = seq.get("oldest") or {}
        capacity = int(oldest.get("max_candidate_sequences") or config["max_batch_size"])
        idle_us = int(seq.get("max_sequence_idle_microseconds") or 1_000_000)  # Triton's default for 0: 1 s
        backend = _param(config, "rnnrt_backend", "auto")
        threads = int(_param(config, "rnnrt_threads", "0") or 0)
        kwargs: dict[str, Any] = {"batch_size": capacity}
        if threads > 0:
            kwargs["threads"] = threads
        self.session = rnnrt.load(str(cfg_path), backend=backend, **kwargs)
        self.max_frames = int(_param(config, "rnnrt_max_frames", str(MAX_FRAMES)))
        self.max_request_bytes = int(_param(config, "rnnrt_max_request_bytes", str(MAX_REQUEST_BYTES)))
        self._executing = 0  # execute calls running now, and whether one ran since the last metrics flush
        self._ran = False
        self._busy_reported = -1
        self.idle_timeout = idle_us / 1e6
        shared = {n: np.asarray(v["value"], dtype=v["dtype"])
                  for n, v in json.loads(_param(config, "rnnrt_shared", "{}")).items()}
        self.pool = StreamPool(self.session, idle_timeout=self.idle_timeout, on_expire=self._expired,
                               shared=shared or None)
        self._last_use: dict[Any, float] = {}
        self._carried: set = set()  # streams stepped by multi-stream requests (no Triton sequence holds them)

        labels = {"model": self.name}
        self._families: list = []
        self._metrics: dict[str, Any] = {}
        for key, name, what in (
                ("requests", "rnnrt_requests_total", "Requests handled by the rnnrt model"),
                ("frames", "rnnrt_frames_total", "Frames stepped (one step of one stream)"),
                ("errors", "rnnrt_request_errors_total", "Requests (or streams of a multi-stream request) "
                                                         "answered with an error"),
                ("opened", "rnnrt_streams_opened_total", "Streams opened (START)"),
                ("closed", "rnnrt_streams_closed_total", "Streams closed (END or close)"),
                ("expired", "rnnrt_streams_expired_total", "Streams released after max_sequence_idle"),
                ("migrated", "rnnrt_streams_migrated_total", "Streams detached or restored by a control request")):
            family = pb_utils.MetricFamily(name=name, description=what, kind=pb_utils.MetricFamily.COUNTER)
            self._families.append(family)
            self._metrics[key] = family.Metric(labels=labels)
        gauge = pb_utils.MetricFamily(name="rnnrt_streams_open", description="Streams open in the pool",
                                      kind=pb_utils.MetricFamily.GAUGE)
        self._families.append(gauge)
        self.m_open = gauge.Metric(labels=labels)
        busy = pb_utils.MetricFamily(name="rnnrt_busy", description="1 while the model ran a request in the last "
                                     "metrics period (rnnrt serve waits for 0 before it stops the server)",
                                     kind=pb_utils.MetricFamily.GAUGE)
        self._families.append(busy)
        self.m_busy = busy.Metric(labels=labels)
        self._open_reported = -1
        self._counts = dict.fromkeys(self._metrics, 0)
        self._metrics_lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="rnnrt-metrics", daemon=True)
        self._flusher.start()

    # -- helpers -------------------------------------------------------------------------------------------
    _open_now = 0

    def _count(self, key: str, n: int = 1) -> None:
        with self._metrics_lock:
            self._counts[key] += n

    def _flush_metrics(self) -> None:
        """One message to the server per changed counter (each Metric call crosses to the server)."""
        with self._metrics_lock:
            counts = {k: n for k, n in self._counts.items() if n}
            for key in counts:
                self._counts[key] = 0
            open_now = self._open_now
            busy = int(self._ran or self._executing > 0)
            self._ran = False
        for key, n in counts.items():
            self._metrics[key].increment(n)
        if open_now != self._open_reported:
            self.m_open.set(open_now)
            self._open_reported = open_now
        if busy != self._busy_reported:
            self.m_busy.set(busy)
            self._busy_reported = busy

    def _flush_loop(self) -> None:
        while not self._stop.wait(METRICS_PERIOD):
            self._flush_metrics()

    def _expired(self, stream_id: Any) -> None:
        self._last_use.pop(stream_id, None)
        self._carried.discard(stream_id)
        self._count("expired")

    def _array(self, request: Any, name: str) -> Optional[np.ndarray]:
        tensor = self._pb.get_input_tensor_by_name(request, name)
        return None if tensor is None else np.from_dlpack(tensor)

    def _scalar(self, request: Any, name: str) -> Any:
        arr = self._array(request, name)
        return arr.reshape(-1)[0].item() if arr is not None and arr.size else None

    def _data(self, req: Any, subject: str) -> tuple[dict[str, np.ndarray], Optional[int]]:
        """The request's data inputs as ``[frames, *binding shape with batch dim 1]`` views, and the frame count."""
        from rnnrt.errors import BindingError, fmt

        arrays, count = {}, None
        for name, axis in self._in_axes.items():
            arr = self._array(req, name)
            if arr is None:
                continue
            if arr.ndim < 2 or arr.shape[0] != 1:
                raise BindingError(fmt(f"{subject} input {name!r}", f"Has shape {list(arr.shape)}",
                                       "Expected [1, frames, ...]: one request, frames along dim 1."))
            if count is not None and arr.shape[1] != count:
                raise BindingError(fmt(f"{subject} input {name!r}", f"Has {arr.shape[1]} frames, another input {count}",
                                       "Send the same number of frames for every input."))
            count = arr.shape[1]
            # [1, K, *rest] -> [K, *rest with the batch dim 1 put back at the binding's axis] (a view).
            rest = arr.shape[2:]
            arrays[name] = arr.reshape((count,) + rest[:axis] + (1,) + rest[axis:])
        return arrays, count

    def _check_size(self, subject: str, frames: int, request: Any, names: tuple) -> None:
        """Refuses a request over the frame or byte bound (``rnnrt_max_frames``, ``rnnrt_max_request_bytes``)."""
        from rnnrt.errors import BindingError, fmt

        if frames > self.max_frames:
            raise BindingError(fmt(subject, f"Carries {frames} frames; this server takes at most {self.max_frames} "
                                   "per request", "Send the frames in chunks (several requests), or serve with a "
                                   "larger --max-frames."))
        size = 0
        for name in names:
            arr = self._array(request, name)
            size += 0 if arr is None else arr.nbytes
        if size > self.max_request_bytes:
            raise BindingError(fmt(subject, f"Carries {size} input bytes; this server takes at most "
                                   f"{self.max_request_bytes} per request", "Send the frames in chunks (several "
                                   "requests), or serve with a larger --max-request-bytes."))

    def _parse(self, job: Job) -> None:
        from rnnrt.errors import StateError, fmt

        req = job.request
        cid = self._scalar(req, "CORRID")
        if not cid:
            raise StateError(fmt(f"Model {self.name!r}", "The request has no correlation id",
                                 "Send every request with a sequence id."))
        job.cid = cid
        job.start = bool(self._scalar(req, "START") or 0)
        job.end = bool(self._scalar(req, "END") or 0)
        arrays, count = self._data(req, f"Stream {cid!r}")
        self._check_size(f"Stream {cid!r}", count or 0, req, self._sized)  # before any bytes are copied
        command = self._scalar(req, CONTROL_INPUT)
        if command is not None:
            job.command = COMMANDS.get(command)
            if job.command is None:
                raise StateError(fmt(f"Control {command!r}", "Is not a known control request",
                                     f"Use one of {COMMANDS}."))
            if job.command == "restore":
                job.state = self._state_bytes(req, cid)
        if arrays and job.command is not None:
            raise StateError(fmt(f"Stream {cid!r}", f"Control {job.command!r} was sent with frames",
                                 "Send control requests without data inputs."))
        job.arrays, job.count = arrays, count or 0
        job.key = (job.count,) + tuple((n, a.shape[1:], a.dtype.str) for n, a in arrays.items())
        if job.count:
            job.sink = Sink(job.count, zero=False)

    def _state_bytes(self, req: Any, cid: Any) -> bytes:
        from rnnrt.errors import StateError, fmt

        state = self._array(req, STATE_TENSOR)
        if state is None:
            raise StateError(fmt(f"Stream {cid!r}", f"Control 'restore' needs the state bytes in {STATE_TENSOR}"))
        return state.tobytes()

    def _parse_carrier(self, index: int, request: Any, rid: str) -> Carrier:
        """A multi-stream request's jobs (see the module doc); raises for a malformed request."""
        from rnnrt.errors import BindingError, StateError, fmt

        subject = f"Multi-stream request {rid!r}"
        ids = self._array(request, STREAMS_INPUT)
        counts = self._array(request, FRAMES_INPUT)
        flags = self._array(request, FLAGS_INPUT)
        n = ids.size
        if counts is None or counts.size != n or (flags is not None and flags.size != n):
            raise BindingError(fmt(subject, f"Names {n} streams but {FRAMES_INPUT}/{FLAGS_INPUT} have "
                                   f"{None if counts is None else counts.size}/{None if flags is None else flags.size} "
                                   "entries", f"Send one entry per stream in {STREAMS_INPUT}, {FRAMES_INPUT} and "
                                   f"{FLAGS_INPUT}."))
        ids = ids.reshape(-1).tolist()
        counts = counts.reshape(-1).tolist()
        flags = [0] * n if flags is None else flags.reshape(-1).tolist()
        if any(c < 0 for c in counts) or not all(ids):
            raise BindingError(fmt(subject, "Has a negative frame count or a zero stream id",
                                   "Frame counts are >= 0 and stream ids >= 1."))
        arrays, total = self._data(request, subject)
        self._check_size(subject, total or 0, request, self._sized)
        if (total or 0) != sum(counts):
            raise BindingError(fmt(subject, f"Carries {total or 0} frames, {FRAMES_INPUT} adds up to {sum(counts)}",
                                   "The data inputs hold every stream's frames, one after another."))
        if n > 1 and any(f & (FLAG_DETACH | FLAG_RESTORE) for f in flags):
            raise StateError(fmt(subject, "Asks to detach or restore a stream among others",
                                 "Send detach and restore in a request of one stream."))
        sink = Sink(total or 0, zero=True)
        shapes = tuple((n, a.shape[1:], a.dtype.str) for n, a in arrays.items())
        jobs, pos = [], 0
        for cid, k, flag in zip(ids, counts, flags):
            job = Job(index, request, rid)
            job.cid, job.start, job.end = cid, bool(flag & FLAG_START), bool(flag & FLAG_END)
            if flag & FLAG_DETACH:
                job.command = "detach"
            elif flag & FLAG_RESTORE:
                job.command = "restore"
                job.state = self._state_bytes(request, cid)
            if k and job.command is not None:
                raise StateError(fmt(f"Stream {cid!r}", f"Control {job.command!r} was sent with frames",
                                     "Send control requests without data inputs."))
            job.arrays = {n: a[pos:pos + k] for n, a in arrays.items()}
            job.count = k
            job.sink, job.offset, job.key = sink, pos, (k,) + shapes
            pos += k
            jobs.append(job)
        carrier = Carrier(index, rid, jobs, sink)
        for job in jobs:
            job.carrier = carrier
        return carrier

    def _open(self, cid: Any, evict: bool = True) -> None:
        """Opens (or resets) a stream. A full pool first releases streams idle past the idle time (the pool's
        own expiry, then sequences Triton released for idleness before the pool noticed: never a stream that
        stepped within the idle time); when none is, the new stream is refused and no open stream is touched."""
        from rnnrt.errors import StateError, fmt

        if cid in self.pool:
            self.pool.reset(cid)
            return
        if self.pool.free_slots == 0:
            self.pool.expire()
        if self.pool.free_slots == 0 and evict:
            now = time.monotonic()
            idle = [s for s, t in self._last_use.items()
                    if s not in self._carried and now - t >= self.idle_timeout and s in self.pool]
            for victim in idle:
                self.pool.close(victim, missing_ok=True)
                self._last_use.pop(victim, None)
                self._count("expired")
        if self.pool.free_slots == 0:
            raise StateError(fmt(f"Stream {cid!r}", f"Cannot open: all {self.pool.capacity} slots of model "
                                 f"{self.name!r} hold streams that stepped within the idle time "
                                 f"({self.idle_timeout:g} s); none was touched",
                                 "Retry later, close streams you no longer need, or serve with a larger "
                                 "--max-sequences."))
        self.pool.open(cid)
        self._count("opened")

    def _close(self, cid: Any) -> None:
        if cid in self.pool:
            self.pool.close(cid)
            self._count("closed")
        self._last_use.pop(cid, None)
        self._carried.discard(cid)

    def _controls(self, job: Job) -> None:
        from rnnrt import StreamState
        from rnnrt.errors import StateError, fmt

        cid = job.cid
        if job.carrier is not None:
            self._carried.add(cid)
        if job.command == "restore":
            state = StreamState.from_bytes(job.state)
            if cid in self.pool:
                self.pool.close(cid)
            if self.pool.free_slots == 0:
                self.pool.expire()
            self.pool.restore(cid, state)
            self._count("migrated")
            self._last_use[cid] = time.monotonic()
            return
        if job.start:
            self._open(cid, evict=job.carrier is None)
        elif cid not in self.pool:
            raise StateError(fmt(f"Stream {cid!r}", f"Is not open in model {self.name!r} (no START, or it was closed, "
                                 "released after max_sequence_idle, or the server restarted)",
                                 "Start the sequence again (client.open)."))
        if job.command == "detach":
            job.state = self.pool.snapshot(cid).to_bytes()
            self._close(cid)
            self._count("migrated")
        elif job.command == "close":
            self._close(cid)
        elif job.command == "release":  # its Triton sequence ends (END); the stream goes on in multi-stream requests
            self._carried.add(cid)
        self._last_use[cid] = time.monotonic()

    def _step_group(self, group: list[Job]) -> None:
        """Steps jobs with the same K and frame shapes as one atomic chunk (``pool.step_chunk``); when it
        fails, each job is stepped alone so that only the culprits fail (their state unmoved)."""
        try:
            outs = self.pool.step_chunk(tuple(job.cid for job in group), self._pack(group))
        except Exception as err:  # noqa: BLE001 - reported in the response; with others, find the culprits
            if len(group) == 1:
                group[0].error = err
            else:
                for job in group:
                    self._step_group([job])
            return
        sinks: dict[int, list] = {}
        for i, job in enumerate(group):
            job.row = i
            sinks.setdefault(id(job.sink), []).append(job)
        for jobs in sinks.values():
            jobs[0].sink.put_chunk(jobs, outs, self._out_axes)

    def _pack(self, jobs: list[Job]) -> dict[str, np.ndarray]:
        """The jobs' frames as one chunk ``[K, *binding shape with one row per job]`` per input."""
        first = jobs[0].arrays
        if len(jobs) == 1:
            return first
        return {name: np.concatenate([job.arrays[name] for job in jobs], axis=1 + self._in_axes[name])
                for name in first}

    def _tensors(self, sink: Sink) -> list:
        """The output tensors ``[1, frames, ...]`` of a sink (its arrays, reshaped: the batch dim is 1)."""
        tensors = []
        if sink.buffers is not None:
            for name, axis in self._out_axes.items():
                buf = sink.buffers[name]
                shape = buf.shape[1:1 + axis] + buf.shape[2 + axis:]
                tensors.append(self._tensor(name, buf.reshape((1, sink.total) + shape)))
        return tensors

    def _tensor(self, name: str, arr: np.ndarray) -> Any:
        """A stub tensor sharing ``arr`` (by DLPack).

        The stub takes the DLPack capsule and renames it ``used_dlpack``; numpy's capsule destructor only
        knows DLPack's ``used_dltensor`` and would print a traceback per tensor (the tensor itself is fine:
        the stub owns it and calls its deleter). So the capsule is handed over by hand and marked used in
        DLPack's own words once the stub has taken it."""
        capsule = arr.__dlpack__()
        tensor = self._pb.Tensor.from_dlpack(name, capsule)
        _mark_used(capsule)
        return tensor

    def _error_response(self, rid: str, err: BaseException) -> Any:
        """The Triton error response of a failed request (counted)."""
        self._count("errors")
        return self._pb.InferenceResponse(output_tensors=[], error=self._pb.TritonError(
            tagged_error(rid, err)))

    def _response(self, job: Job) -> Any:
        pb = self._pb
        if job.error is not None:
            return self._error_response(job.rid, job.error)
        tensors = self._tensors(job.sink) if job.sink is not None else []
        if job.command == "detach":
            tensors.append(self._tensor(STATE_TENSOR, np.frombuffer(job.state, np.uint8)[None].copy()))
        return pb.InferenceResponse(output_tensors=tensors)

    def _carrier_response(self, carrier: Carrier) -> Any:
        pb = self._pb
        errors = []
        for i, job in enumerate(carrier.jobs):
            if job.error is not None:
                self._count("errors")
                errors.append([i, error_kind(job.error), str(job.error)])
        tensors = self._tensors(carrier.sink)
        if errors:
            status = np.frombuffer(json.dumps({"errors": errors}).encode(), np.uint8)[None].copy()
            tensors.append(self._tensor(STATUS_TENSOR, status))
        job = carrier.jobs[0] if len(carrier.jobs) == 1 else None
        if job is not None and job.command == "detach" and job.error is None:
            tensors.append(self._tensor(STATE_TENSOR, np.frombuffer(job.state, np.uint8)[None].copy()))
        return pb.InferenceResponse(output_tensors=tensors)

    # -- Triton entry points ---------------------------------------------------------------------------------
    def execute(self, requests: list) -> list:
        self._executing += 1
        self._ran = True
        try:
            return self._execute(requests)
        finally:
            self._executing -= 1

    def _execute(self, requests: list) -> list:
        pb = self._pb
        responses: list = [None] * len(requests)
        carriers: list[Carrier] = []
        waves: list[list[Job]] = [[]]
        seen: list[set] = [set()]
        self._count("requests", len(requests))

        def place(job: Job) -> None:
            w = next((w for w, ids in enumerate(seen) if job.cid not in ids), None)
            if w is None:
                waves.append([])
                seen.append(set())
                w = len(waves) - 1
            waves[w].append(job)
            seen[w].add(job.cid)

        for i, request in enumerate(requests):
            rid = request.request_id() or ""
            if pb.get_input_tensor_by_name(request, STREAMS_INPUT) is not None:
                try:
                    carrier = self._parse_carrier(i, request, rid)
                except Exception as err:  # noqa: BLE001
                    responses[i] = self._error_response(rid, err)
                    continue
                carriers.append(carrier)
                for job in carrier.jobs:
                    place(job)
                continue
            ready = self._scalar(request, "READY")
            if ready is not None and not ready:
                responses[i] = pb.InferenceResponse(output_tensors=[])
                continue
            job = Job(i, request, rid)
            try:
                self._parse(job)
            except Exception as err:  # noqa: BLE001
                job.error = err
                responses[i] = self._response(job)
                continue
            place(job)
        for wave in waves:
            for job in wave:
                try:
                    self._controls(job)
                except Exception as err:  # noqa: BLE001
                    job.error = err
            groups: dict[tuple, list[Job]] = {}
            for job in wave:
                if job.error is None and job.count:
                    groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                self._step_group(group)
            now = time.monotonic()
            for job in wave:
                if job.error is None:
                    self._count("frames", job.count)
                    self._last_use[job.cid] = now
                    if job.end and job.command != "release":
                        try:
                            self._close(job.cid)
                        except Exception as err:  # noqa: BLE001
                            job.error = err
                if job.carrier is None:
                    responses[job.index] = self._response(job)
        for carrier in carriers:
            responses[carrier.index] = self._carrier_response(carrier)
        self._open_now = len(self.pool)
        return responses

    def finalize(self) -> None:
        self._stop.set()
        self._flusher.join(1.0)
        self.session.close()
