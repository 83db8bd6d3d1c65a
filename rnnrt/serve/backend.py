"""The Triton python-backend model that ``rnnrt export-triton --engine python`` writes (its ``model.py``).

Triton's sequence batcher (``oldest`` strategy) groups requests of different sequences into one
``execute`` call; the state of every sequence lives in one :class:`rnnrt.StreamPool` keyed by the
correlation id (CORRID), whose Session has ``max_candidate_sequences`` slots. Per request:

- ``READY = 0`` (a ``direct``-strategy placeholder): answered empty, nothing steps.
- ``START = 1``: opens the stream, or resets it when the id is still open. A full pool (Triton freed a
  slot by its idle timeout before the pool did) releases its longest-idle stream first.
- Data inputs ``[1, K, ...]`` (the binding's shape without its batch axis, K frames a request): the
  stream takes K steps; frames of all requests in the call step together, one ``pool.step`` per frame
  index. Outputs come back as ``[1, K, ...]``. The continuation input is optional: the pool fills it.
- ``END = 1``: the stream is closed after its frames.
- ``RNNRT_CONTROL`` (see :data:`COMMANDS`): ``"detach"`` returns the stream's :class:`~rnnrt.StreamState` bytes in
  ``RNNRT_STATE`` and closes it; ``"restore"`` (with START) opens it from the bytes in ``RNNRT_STATE``;
  ``"close"`` closes it. The client's ``drain`` moves streams between servers with these.
- A request that fails (unknown stream without START, a bad frame, bad state bytes) gets a Triton
  error response ``[request id: ID] <ErrorType>: <message>``; the other requests of the call go on and
  the failed stream's state is as before the request.
- Streams idle for ``max_sequence_idle_microseconds`` are released (Triton does not tell the model).

Counters on Triton's metrics endpoint (label ``model``): ``rnnrt_requests_total``, ``rnnrt_frames_total``,
``rnnrt_request_errors_total``, ``rnnrt_streams_opened_total``, ``rnnrt_streams_closed_total``,
``rnnrt_streams_expired_total``, ``rnnrt_streams_migrated_total``, gauge ``rnnrt_streams_open``.

The model's parameters (config.pbtxt) name the rnnrt config (``rnnrt_config``, relative to the version
folder), the binding layout (``rnnrt_bindings``, JSON) and the engine backend (``rnnrt_backend``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

CONTROL_INPUT = "RNNRT_CONTROL"
STATE_TENSOR = "RNNRT_STATE"
CONTROLS = ("START", "END", "READY", "CORRID")
COMMANDS = {1: "detach", 2: "restore", 3: "close"}
"""``RNNRT_CONTROL`` (INT32) values. Tensors cross the stub by DLPack only: the bundled stub's numpy
conversions (``as_numpy``, ``Tensor(name, array)``) read numpy 1.x descriptors and break under numpy 2,
so no tensor is of TYPE_STRING (the state travels as UINT8 bytes)."""

__all__ = ["CONTROL_INPUT", "STATE_TENSOR", "TritonPythonModel"]


def _param(config: dict, key: str, default: Optional[str] = None) -> Optional[str]:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class _Job:
    """One request as the model handles it."""

    __slots__ = ("index", "request", "rid", "cid", "start", "end", "command", "state", "frames", "outputs", "error",
                 "snapshot")

    def __init__(self, index: int, request: Any) -> None:
        self.index = index
        self.request = request
        self.rid = request.request_id() or ""
        self.cid: Any = None
        self.start = self.end = False
        self.command: Optional[str] = None
        self.state: Optional[bytes] = None
        self.frames: list[dict] = []
        self.outputs: list[dict] = []
        self.error: Optional[BaseException] = None
        self.snapshot: Any = None


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
        self.idle_timeout = idle_us / 1e6
        self.pool = StreamPool(self.session, idle_timeout=self.idle_timeout, on_expire=self._expired)
        self._last_use: dict[Any, float] = {}

        labels = {"model": self.name}

        def counter(name: str, what: str) -> Any:
            family = pb_utils.MetricFamily(name=name, description=what, kind=pb_utils.MetricFamily.COUNTER)
            self._families.append(family)
            return family.Metric(labels=labels)

        self._families: list = []
        self.m_requests = counter("rnnrt_requests_total", "Requests handled by the rnnrt model")
        self.m_frames = counter("rnnrt_frames_total", "Frames stepped (one step of one stream)")
        self.m_errors = counter("rnnrt_request_errors_total", "Requests answered with an error")
        self.m_opened = counter("rnnrt_streams_opened_total", "Streams opened (START)")
        self.m_closed = counter("rnnrt_streams_closed_total", "Streams closed (END or close)")
        self.m_expired = counter("rnnrt_streams_expired_total", "Streams released after max_sequence_idle")
        self.m_migrated = counter("rnnrt_streams_migrated_total", "Streams detached or restored by a control request")
        gauge = pb_utils.MetricFamily(name="rnnrt_streams_open", description="Streams open in the pool",
                                      kind=pb_utils.MetricFamily.GAUGE)
        self._families.append(gauge)
        self.m_open = gauge.Metric(labels=labels)

    # -- helpers -------------------------------------------------------------------------------------------
    def _expired(self, stream_id: Any) -> None:
        self._last_use.pop(stream_id, None)
        self.m_expired.increment(1)

    def _array(self, request: Any, name: str) -> Optional[np.ndarray]:
        tensor = self._pb.get_input_tensor_by_name(request, name)
        return None if tensor is None else np.from_dlpack(tensor)

    def _scalar(self, request: Any, name: str) -> Any:
        arr = self._array(request, name)
        return arr.reshape(-1)[0].item() if arr is not None and arr.size else None

    def _parse(self, job: _Job) -> None:
        from rnnrt.errors import BindingError, StateError, fmt

        req = job.request
        cid = self._scalar(req, "CORRID")
        if not cid:
            raise StateError(fmt(f"Model {self.name!r}", "The request has no correlation id",
                                 "Send every request with a sequence id."))
        job.cid = cid
        job.start = bool(self._scalar(req, "START") or 0)
        job.end = bool(self._scalar(req, "END") or 0)
        command = self._scalar(req, CONTROL_INPUT)
        if command is not None:
            job.command = COMMANDS.get(command)
            if job.command is None:
                raise StateError(fmt(f"Control {command!r}", "Is not a known control request",
                                     f"Use one of {COMMANDS}."))
            if job.command == "restore":
                state = self._array(req, STATE_TENSOR)
                if state is None:
                    raise StateError(fmt(f"Stream {cid!r}", f"Control 'restore' needs the state bytes in {STATE_TENSOR}"))
                job.state = state.tobytes()
        arrays, count = {}, None
        for name, axis in self._in_axes.items():
            arr = self._array(req, name)
            if arr is None:
                continue
            if arr.ndim < 2 or arr.shape[0] != 1:
                raise BindingError(fmt(f"Stream {cid!r} input {name!r}", f"Has shape {list(arr.shape)}",
                                       "Expected [1, frames, ...]: one request of one sequence, frames along dim 1."))
            if count is not None and arr.shape[1] != count:
                raise BindingError(fmt(f"Stream {cid!r} input {name!r}", f"Has {arr.shape[1]} frames, another input {count}",
                                       "Send the same number of frames for every input."))
            count = arr.shape[1]
            arrays[name] = (arr, axis)
        if arrays and job.command is not None:
            raise StateError(fmt(f"Stream {cid!r}", f"Control {job.command!r} was sent with frames",
                                 "Send control requests without data inputs."))
        # Frame k of an input: [1, K, *rest][0, k] with the batch dim 1 put back at the binding's axis.
        shapes = {n: a.shape[2:2 + ax] + (1,) + a.shape[2 + ax:] for n, (a, ax) in arrays.items()}
        for k in range(count or 0):
            job.frames.append({n: a[0, k].reshape(shapes[n]) for n, (a, _) in arrays.items()})

    def _open(self, cid: Any) -> None:
        if cid in self.pool:
            self.pool.reset(cid)
            return
        if self.pool.free_slots == 0:
            self.pool.expire()
        if self.pool.free_slots == 0 and self._last_use:
            # Triton only starts a sequence when one of its slots is free, so the pool holds a stream that
            # Triton already released for idleness: the longest-idle one.
            victim = min(self._last_use, key=self._last_use.get)
            self.pool.close(victim, missing_ok=True)
            self._last_use.pop(victim, None)
            self.m_expired.increment(1)
        self.pool.open(cid)
        self.m_opened.increment(1)

    def _close(self, cid: Any) -> None:
        if cid in self.pool:
            self.pool.close(cid)
            self.m_closed.increment(1)
        self._last_use.pop(cid, None)

    def _controls(self, job: _Job) -> None:
        from rnnrt.errors import StateError, fmt
        from rnnrt import StreamState

        cid = job.cid
        if job.command == "restore":
            state = StreamState.from_bytes(job.state)
            if cid in self.pool:
                self.pool.close(cid)
            if self.pool.free_slots == 0:
                self.pool.expire()
            self.pool.restore(cid, state)
            self.m_migrated.increment(1)
            self._last_use[cid] = time.monotonic()
            return
        if job.start:
            self._open(cid)
        elif cid not in self.pool:
            raise StateError(fmt(f"Stream {cid!r}", f"Is not open in model {self.name!r} (no START, or it was closed, "
                                 "released after max_sequence_idle, or the server restarted)",
                                 "Start the sequence again (client.open)."))
        if job.command == "detach":
            job.state = self.pool.snapshot(cid).to_bytes()
            self._close(cid)
            self.m_migrated.increment(1)
        elif job.command == "close":
            self._close(cid)
        self._last_use[cid] = time.monotonic()

    def _step_round(self, jobs: list[_Job], k: int) -> None:
        """Steps frame k of every job that has one; a failing job fails alone."""
        groups: dict[tuple, list[_Job]] = {}
        for job in jobs:
            frame = job.frames[k]
            key = tuple((n, a.shape, a.dtype.str) for n, a in frame.items())
            groups.setdefault(key, []).append(job)
        for group in groups.values():
            try:
                outs = self.pool.step({job.cid: job.frames[k] for job in group})
            except Exception:  # noqa: BLE001 - find the culprit by stepping each alone
                outs = None
            if outs is not None:
                for job in group:
                    job.outputs.append({n: np.array(v) for n, v in outs[job.cid].items()})
                continue
            for job in group:
                try:
                    out = self.pool.step({job.cid: job.frames[k]})[job.cid]
                    job.outputs.append({n: np.array(v) for n, v in out.items()})
                except Exception as err:  # noqa: BLE001 - reported in this request's response
                    job.error = err
                    if job.snapshot is not None:
                        self.pool.close(job.cid)
                        self.pool.restore(job.cid, job.snapshot)

    def _response(self, job: _Job) -> Any:
        pb = self._pb
        if job.error is not None:
            self.m_errors.increment(1)
            err = job.error
            kind = type(err).__name__ if type(err).__module__.startswith("rnnrt") else f"EngineError: {type(err).__name__}"
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"[request id: {job.rid}] {kind}: {err}"))
        tensors = []
        if job.outputs:
            for name, axis in self._out_axes.items():
                stacked = np.ascontiguousarray(np.stack([np.squeeze(o[name], axis=axis) for o in job.outputs])[None])
                tensors.append(pb.Tensor.from_dlpack(name, stacked))
        if job.command == "detach":
            tensors.append(pb.Tensor.from_dlpack(STATE_TENSOR, np.frombuffer(job.state, np.uint8)[None].copy()))
        return pb.InferenceResponse(output_tensors=tensors)

    # -- Triton entry points ---------------------------------------------------------------------------------
    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        waves: list[list[_Job]] = [[]]
        seen: list[set] = [set()]
        for i, request in enumerate(requests):
            job = _Job(i, request)
            self.m_requests.increment(1)
            ready = self._scalar(request, "READY")
            if ready is not None and not ready:
                responses[i] = self._pb.InferenceResponse(output_tensors=[])
                continue
            try:
                self._parse(job)
            except Exception as err:  # noqa: BLE001
                job.error = err
                responses[i] = self._response(job)
                continue
            w = next((w for w, ids in enumerate(seen) if job.cid not in ids), None)
            if w is None:
                waves.append([])
                seen.append(set())
                w = len(waves) - 1
            waves[w].append(job)
            seen[w].add(job.cid)
        for wave in waves:
            for job in wave:
                try:
                    self._controls(job)
                except Exception as err:  # noqa: BLE001
                    job.error = err
            live = [job for job in wave if job.error is None and job.frames]
            for job in live:
                if len(job.frames) > 1:
                    job.snapshot = self.pool.snapshot(job.cid)
            for k in range(max((len(j.frames) for j in live), default=0)):
                self._step_round([j for j in live if len(j.frames) > k and j.error is None], k)
            now = time.monotonic()
            for job in wave:
                if job.error is None:
                    self.m_frames.increment(len(job.frames))
                    self._last_use[job.cid] = now
                    if job.end:
                        try:
                            self._close(job.cid)
                        except Exception as err:  # noqa: BLE001
                            job.error = err
                responses[job.index] = self._response(job)
        self.m_open.set(len(self.pool))
        return responses

    def finalize(self) -> None:
        self.session.close()
