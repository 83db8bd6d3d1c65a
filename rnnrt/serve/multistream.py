"""The client's multi-stream requests: one request carries the frames of many streams (see
:mod:`rnnrt.serve.backend`), posted on a server's gRPC stream, on a lane while others are in flight
(:class:`~rnnrt.serve.grpc_stream.Lane`), and collected into each stream's outputs or error.

:class:`MultiStreamRequests` is a part of :class:`rnnrt.serve.client.StreamClient` (its base): it uses the
client's layout, gRPC streams, lanes and the sets of started and carried streams.
"""

from __future__ import annotations

import json
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np

from rnnrt.errors import EngineError, fmt
from rnnrt.serve.grpc_stream import GrpcStream, Lane, carrier_id
from rnnrt.serve.wire import (FLAG_START, FLAGS_INPUT, FRAMES_INPUT, STATE_TENSOR, STATUS_TENSOR, STREAMS_INPUT,
                              infer_input, sequence_id, status_error)

__all__ = ["MultiStreamRequests"]


class MultiStreamRequests:
    """Posting and collecting multi-stream requests (a base of ``StreamClient``; see the module doc)."""

    _started: set  # the client's: streams whose next request needs no START
    _carried: set  # streams that went through a multi-stream request (they stay on them)
    _lanes: dict[str, Lane]
    _ids: Any  # request id counter

    def _carry(self, by_server: Mapping[str, list], state: Optional[np.ndarray] = None) -> dict[Hashable, Any]:
        """Sends one multi-stream request per server (per frame layout) and returns each stream's result."""
        return self._collect(self._post_carriers(by_server, state))

    def _post_carriers(self, by_server: Mapping[str, list], state: Optional[np.ndarray] = None,
                       pipelined: bool = False) -> list:
        """Posts one multi-stream request per server (per frame layout), on the server's lane if it has one
        (or ``pipelined``: one is started), else as one-request sequences.

        ``by_server``: address -> [(stream id, extra flags, {input: [K, ...]} or None), ...]. Streams whose
        frames differ in shape or inputs go in separate requests, so that a refused request fails only them.
        The streams count as started from here on (a request posted after this one needs no START for them).
        Returns what :meth:`_collect` needs.
        """
        layout = self.layout()
        posted = []
        for address, entries in by_server.items():
            groups: dict[tuple, list] = {}
            for entry in entries:
                arrays = entry[2] or {}
                key = tuple((n, a.shape[1:], a.dtype.str) for n, a in arrays.items())
                groups.setdefault(key, []).append(entry)
            requests, meta = [], {}
            for group in groups.values():
                ids = np.array([[sequence_id(sid) for sid, _, _ in group]], np.uint64)
                counts = np.array([[len(next(iter(a.values()))) if a else 0 for _, _, a in group]], np.int32)
                flags = np.array([[f | (0 if sid in self._started else FLAG_START) for sid, f, _ in group]], np.int32)
                inputs = [infer_input(STREAMS_INPUT, ids, "UINT64"), infer_input(FRAMES_INPUT, counts, "INT32")]
                if flags.any():  # optional: every tensor of a request costs the server
                    inputs.append(infer_input(FLAGS_INPUT, flags, "INT32"))
                if int(counts.sum()):
                    for name in group[0][2]:
                        parts = [a[name] for _, _, a in group if a]
                        data = (parts[0] if len(parts) == 1 else np.concatenate(parts))[None]
                        inputs.append(infer_input(name, data, layout.wire[name]))
                if state is not None:
                    inputs.append(infer_input(STATE_TENSOR, state.reshape(1, -1), "UINT8"))
                rid = f"m{next(self._ids)}"
                # whatever the model sends back: the outputs, RNNRT_STATUS if a stream failed, RNNRT_STATE
                requests.append([rid, None, inputs, None, False, False])
                meta[rid] = [(sid, int(k), bool(f & FLAG_START)) for (sid, _, _), k, f in zip(group, counts[0], flags[0])]
                for sid, _, _ in group:
                    self._started.add(sid)
            lane, stream, rids, failed = self._lane_post(address, requests, pipelined)
            posted.append((address, lane, stream, rids, failed, meta))
        return posted

    def _lane_post(self, address: str, requests: list, pipelined: bool) -> tuple:
        """Posts requests on the server's lane (see :class:`_Lane`), or as one-request sequences."""
        stream = self._stream(address)
        with stream.send_lock:  # lane order == send order on the server's gRPC stream
            lane = self._lanes.get(address)
            if lane is None and not pipelined:
                for req in requests:
                    req[1], req[4], req[5] = carrier_id(), True, True
            else:
                start = lane is None
                if start:
                    lane = self._lanes[address] = Lane()
                for i, req in enumerate(requests):
                    req[1], req[4] = lane.id, start and i == 0
                lane.inflight += len(requests)
            _, rids, failed = self._stream_post(address, [tuple(r) for r in requests], stream=stream)
        return lane, stream, rids, failed

    def _end_lane(self, address: str, stream: "GrpcStream", lane: Lane) -> None:
        """Ends a lane with nothing in flight: a request of no stream with END (its Triton slot is freed)."""
        inputs = [infer_input(STREAMS_INPUT, np.zeros((1, 0), np.uint64), "UINT64"),
                  infer_input(FRAMES_INPUT, np.zeros((1, 0), np.int32), "INT32")]
        rid = f"e{next(self._ids)}"
        with stream.send_lock:
            _, rids, failed = self._stream_post(address, [(rid, lane.id, inputs, None, False, True)], stream=stream)
        deadline = self._deadline()
        self._stream_wait(address, stream, rids, failed, deadline)  # an error here only means it is gone

    def _collect(self, posted: list) -> dict[Hashable, Any]:
        """Waits for posted multi-stream requests; returns each stream's outputs or error."""
        deadline = self._deadline()
        results: dict[Hashable, Any] = {}
        for address, lane, stream, rids, failed, meta in posted:
            replies = self._stream_wait(address, stream, rids, failed, deadline)
            if lane is not None:
                with stream.send_lock:
                    lane.inflight -= len(rids)
                    ended = not lane.inflight and self._lanes.get(address) is lane
                    if ended:
                        del self._lanes[address]
                if ended:
                    self._end_lane(address, stream, lane)
            for rid, streams in meta.items():
                reply = replies.get(rid) or EngineError(fmt(f"Streams {[s for s, _, _ in streams]}", "Got no reply"))
                if isinstance(reply, Exception):
                    for sid, _, started_here in streams:
                        results[sid] = reply
                        if started_here:
                            self._started.discard(sid)  # the START did not arrive: the next request sends it
                    continue
                status = reply.as_numpy(STATUS_TENSOR)
                errors = {} if status is None else {i: (kind, text) for i, kind, text in
                                                    json.loads(status.tobytes().decode())["errors"]}
                # Every stream of the request failed: the reply has no outputs.
                arrays = self.layout().frames_of(reply) if any(k for i, (_, k, _) in enumerate(streams) if i not in errors) else {}
                pos = 0
                for i, (sid, k, started_here) in enumerate(streams):
                    if i in errors:
                        kind, text = errors[i]
                        results[sid] = status_error(kind, text)
                        if started_here:
                            self._started.discard(sid)
                    else:
                        self._carried.add(sid)
                        results[sid] = self.layout().unpack(reply, k, pos, arrays) if k else reply
                    pos += k
        return results

    def _carry_one(self, address: str, stream_id: Hashable, flags: int, frames: Optional[Sequence[Any]] = None,
                   state: Optional[np.ndarray] = None) -> Any:
        """A multi-stream request of one stream; raises its error (the lock of the stream is held)."""
        arrays = self._arrays(stream_id, frames) if frames else None
        result = self._carry({address: [(stream_id, flags, arrays)]}, state=state)[stream_id]
        if isinstance(result, Exception):
            raise result
        return result
