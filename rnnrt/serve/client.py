"""A client for rnnrt models on Triton servers: streams with sticky routing, chunks, gRPC streaming, drain.

A model written by ``rnnrt export-triton --engine python`` (or served by ``rnnrt serve``) keeps each
stream's recurrent state inside the server that runs it, keyed by the sequence's correlation id. This
client routes each stream to one server by a consistent hash of its id (64 virtual nodes per server), so
adding or draining a server moves only the streams that must move; a stream stays where it started.

Example::

    import rnnrt.client

    client = rnnrt.client.StreamClient(["127.0.0.1:8001", "127.0.0.1:9001"], model="lm")
    client.open("alice")
    out = client.step("alice", {"data": x})            # what a batch-1 Session.step takes and returns
    outs = client.step_chunk("alice", [x1, x2, x3])    # 3 frames, one request
    many = client.step_many({"alice": x4, "bob": y1})  # one request per server for all its streams
    client.drain("127.0.0.1:9001")                     # its streams move to the others, state and all
    client.close("alice")

Frames and outputs are what a batch-1 ``Session.step`` of the model takes and returns: mappings of
binding name to an array whose batch dim is 1 (or a bare array for a model with one input besides the
continuation input). Stream ids are any ints or strings; on the wire a stream is a uint64 sequence id
(the int itself when it is one in 1..2**63-1, else 63 bits of a BLAKE2b hash of ``str(id)``; tritonclient
sends sequence ids as int64).

``step_many`` sends one *multi-stream request* per server (see :mod:`rnnrt.serve.backend`): Triton's
fixed cost per request is paid once for all the streams of that server, which is what makes serving
approach the in-process pool's frames/s. A stream stepped that way once stays on multi-stream requests
(``step``/``step_chunk``/``close``/``drain`` of it send a request of one stream): it is no longer a
Triton sequence, its state stays keyed by its id in the same pool. ``step_many(..., combine=False)``
sends one sequence request per stream instead.

``open`` costs no request: the stream's first request carries Triton's START. Server-side errors
arrive as the rnnrt error the model raised (``BindingError`` for a bad frame, ``StateError`` for a
stream the server does not know); unreachable servers raise ``EngineError``. A failed request leaves
the stream's state as it was.

Threads: every method may be called from any thread; requests of one stream are sent one at a time.
Unary calls use one gRPC connection per thread and server; gRPC streams (one per server) are shared and
replies are matched to requests by request id. ``close_connections()`` (or ``with StreamClient(...)``)
closes them: a Triton server asked to stop waits for open gRPC streams (up to its exit timeout).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import json
import random
import re
import threading
import time
from typing import Any, Hashable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from rnnrt.errors import BindingError, ConfigError, EngineError, RnnrtError, SnapshotError, StateError, fmt
from rnnrt.ir.streams import single_input

__all__ = ["ManyFuture", "StreamClient", "sequence_id"]

_VNODES = 64
_DETACH, _RESTORE, _CLOSE = 1, 2, 3  # rnnrt.serve.backend.COMMANDS
_F_START, _F_END, _F_DETACH, _F_RESTORE = 1, 2, 4, 8  # rnnrt.serve.backend.FLAGS
_ERRORS = {cls.__name__: cls for cls in (BindingError, StateError, ConfigError, EngineError, SnapshotError)}
_TAGGED = re.compile(r"\[request id: ([^\]]*)\] (\w+): (.*)", re.S)
_REQUEST_ID = re.compile(r"\[request id: ([^\]]*)\]")


def sequence_id(stream_id: Hashable) -> int:
    """The uint64 correlation id a stream id travels as (see the module doc)."""
    if isinstance(stream_id, (int, np.integer)) and not isinstance(stream_id, bool) and 0 < stream_id < 2**63:
        return int(stream_id)
    if not isinstance(stream_id, (str, int, np.integer)) or isinstance(stream_id, bool):
        raise StateError(fmt(f"Stream id {stream_id!r}", f"Is a {type(stream_id).__name__}", "Use an int or a str."))
    digest = int.from_bytes(hashlib.blake2b(str(stream_id).encode(), digest_size=8).digest(), "little")
    return (digest & (2**63 - 1)) or 1


def _point(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _error(err: Exception, subject: str) -> RnnrtError:
    """The rnnrt error for a tritonclient exception."""
    text = err.message() if hasattr(err, "message") and callable(err.message) else str(err)
    text = text or str(err)
    m = _TAGGED.search(text)
    if m and m.group(2) in _ERRORS:
        return _ERRORS[m.group(2)](m.group(3))
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


class _Layout:
    """The model's bindings as the client packs them (from the model config's ``rnnrt_bindings``)."""

    def __init__(self, config: Any) -> None:
        from tritonclient.utils import triton_to_np_dtype

        params = config.parameters
        if "rnnrt_bindings" not in params:
            raise ConfigError(fmt(f"Model {config.name!r}", "Is not an rnnrt python-backend model (no rnnrt_bindings)",
                                  "Export it with `rnnrt export-triton --engine python` or serve it with `rnnrt serve`."))
        layout = json.loads(params["rnnrt_bindings"].string_value)
        self.in_axes: dict[str, int] = layout["inputs"]
        self.out_axes: dict[str, int] = layout["outputs"]
        self.cont: Optional[str] = layout.get("continuation")
        from tritonclient.grpc import model_config_pb2 as pb

        types = {t.name: pb.DataType.Name(t.data_type)[len("TYPE_"):] for t in config.input}
        self.wire = {n: ("BYTES" if types[n] == "STRING" else types[n]) for n in self.in_axes}
        self.dtypes = {n: np.dtype(triton_to_np_dtype(self.wire[n])) for n in self.in_axes}
        self.single = single_input(self.in_axes, [self.cont])


class _Lane:
    """The sequence that carries a client's pipelined multi-stream requests to one server, in order.

    Triton runs the requests of one sequence one at a time in arrival order, so while a lane has requests
    in flight, every multi-stream request of this client to that server (``submit_many``, ``step_many`` and
    the one-stream requests of carried streams) goes on it and is handled in the order it was posted.
    When its last request is collected the lane is ended (an END request of no stream) so that it holds
    no Triton sequence slot; with nothing in flight, a request is a one-request sequence of its own
    (START and END).
    """

    __slots__ = ("id", "inflight")

    def __init__(self) -> None:
        self.id = _carrier_id()
        self.inflight = 0


def _carrier_id() -> int:
    return random.getrandbits(62) | (1 << 62)


def _infer_input(name: str, data: np.ndarray, wire: str) -> Any:
    """A tritonclient gRPC input holding ``data`` (its shape as the request's)."""
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput(name, list(data.shape), wire)
    inp.set_data_from_numpy(data)
    return inp


class StreamClient:
    """Streams on one or more Triton servers running an rnnrt python-backend model (see the module doc)."""

    def __init__(self, servers: Union[str, Sequence[str]], model: str, *, timeout: Optional[float] = 60.0,
                 streaming: bool = False) -> None:
        """
        Args:
            servers (str | Sequence[str]): gRPC addresses ``host:port``.
            model (str): The model name on the servers.
            timeout (float | None): Seconds per request. Defaults to 60.
            streaming (bool): Send :meth:`step` and :meth:`step_chunk` over a gRPC stream instead of unary
                calls (:meth:`step_many` always streams). Defaults to False.
        """
        servers = [servers] if isinstance(servers, str) else list(servers)
        if not servers:
            raise ConfigError(fmt("StreamClient", "Got no server", "Pass at least one 'host:port'."))
        try:
            import tritonclient.grpc  # noqa: F401
        except ImportError as err:
            raise EngineError(fmt("rnnrt.client", "Needs tritonclient[grpc]", "pip install 'rnnrt[serve]'.")) from err
        self.model = model
        self.timeout = timeout
        self.streaming = streaming
        self._lock = threading.Lock()
        self._ring: list[tuple[int, str]] = []
        self._servers: list[str] = []
        for s in servers:
            self.add_server(s)
        self._where: dict[Hashable, str] = {}
        self._started: set = set()
        self._carried: set = set()  # streams stepped by multi-stream requests (they stay on them)
        self._stream_locks: dict[Hashable, threading.Lock] = {}
        self._local = threading.local()
        self._streams: dict[str, _Stream] = {}
        self._layout: Optional[_Layout] = None
        self._ids = itertools.count(1)
        self._lanes: dict[str, _Lane] = {}

    # -- servers and routing ----------------------------------------------------------------------------------
    @property
    def servers(self) -> list[str]:
        """The servers new streams may be routed to."""
        return list(self._servers)

    def add_server(self, address: str) -> None:
        """Adds a server to the ring: new streams may go there; open streams stay where they are."""
        with self._lock:
            if address in self._servers:
                return
            self._servers.append(address)
            # A new list (never changed in place): _route reads the ring without the lock.
            self._ring = sorted(self._ring + [(_point(f"{address}#{i}"), address) for i in range(_VNODES)])

    def _route(self, stream_id: Hashable) -> str:
        ring = self._ring
        point = _point(str(sequence_id(stream_id)))
        return ring[bisect.bisect(ring, (point, "")) % len(ring)][1]

    def where(self, stream_id: Hashable) -> str:
        """The server that holds an open stream."""
        try:
            return self._where[stream_id]
        except KeyError:
            raise self._not_open(stream_id) from None

    def streams(self, server: Optional[str] = None) -> list[Hashable]:
        """The open streams (of one server)."""
        with self._lock:
            return [s for s, a in self._where.items() if server is None or a == server]

    def _conn(self, address: str) -> Any:
        import tritonclient.grpc as grpcclient

        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(address)
        if conn is None:
            conn = conns[address] = grpcclient.InferenceServerClient(address)
        return conn

    def layout(self) -> _Layout:
        """The model's bindings, read once from a server's model config."""
        if self._layout is None:
            errors = []
            for address in self.servers:
                try:
                    cfg = self._conn(address).get_model_config(self.model, client_timeout=self.timeout).config
                except Exception as err:  # noqa: BLE001 - try the next server
                    errors.append(_error(err, f"Model {self.model!r} on {address}"))
                    continue
                self._layout = _Layout(cfg)
                break
            else:
                raise errors[0]
        return self._layout

    # -- streams ----------------------------------------------------------------------------------------------
    def _deadline(self) -> Optional[float]:
        """When requests sent now time out (monotonic seconds), or None without a timeout."""
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _not_open(self, stream_id: Hashable) -> StateError:
        return StateError(fmt(f"Stream {stream_id!r}", "Is not open in this client", "Call client.open(stream_id) first."))

    def _stream_lock(self, stream_id: Hashable) -> threading.Lock:
        lock = self._stream_locks.get(stream_id)
        if lock is None:
            raise self._not_open(stream_id)
        return lock

    def open(self, stream_id: Hashable) -> str:
        """Opens a stream (its next request carries START); returns the server it is routed to.

        Raises:
            StateError: The stream is already open in this client.
        """
        sequence_id(stream_id)
        with self._lock:
            if stream_id in self._where:
                raise StateError(fmt(f"Stream {stream_id!r}", "Is already open", "Close it first, or use another id."))
            address = self._route(stream_id)
            self._where[stream_id] = address
            self._stream_locks[stream_id] = threading.Lock()
            self._started.discard(stream_id)
            self._carried.discard(stream_id)
        return address

    def reset(self, stream_id: Hashable) -> None:
        """Starts a new sequence on an open stream: its next request carries START (zero state)."""
        with self._stream_lock(stream_id):
            self._started.discard(stream_id)

    def close(self, stream_id: Hashable) -> None:
        """Closes a stream: the server releases its slot (END).

        Raises:
            StateError: The stream is not open in this client.
        """
        lock = self._stream_lock(stream_id)
        with lock:
            try:
                if stream_id in self._carried:
                    if stream_id in self._started:
                        self._carry_one(self._where[stream_id], stream_id, _F_END)
                elif stream_id in self._started:
                    self._control(self._where[stream_id], stream_id, _CLOSE, end=True)
            finally:
                with self._lock:
                    self._where.pop(stream_id, None)
                    self._started.discard(stream_id)
                    self._carried.discard(stream_id)
                    self._stream_locks.pop(stream_id, None)

    def step(self, stream_id: Hashable, frame: Any) -> dict[str, np.ndarray]:
        """One frame of one stream; returns its outputs (what a batch-1 ``Session.step`` returns)."""
        return self.step_chunk(stream_id, [frame])[0]

    def step_chunk(self, stream_id: Hashable, frames: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        """Several frames of one stream in one request; returns the outputs of each."""
        if not len(frames):
            raise BindingError(fmt(f"Stream {stream_id!r}", "Got no frames", "Pass at least one frame."))
        with self._stream_lock(stream_id):
            address = self._where[stream_id]
            if stream_id in self._carried:
                return self._carry_one(address, stream_id, 0, frames)
            start = stream_id not in self._started
            inputs, outputs = self._pack(stream_id, frames)
            rid = f"r{next(self._ids)}"
            subject = f"Stream {stream_id!r} on {address}"
            try:
                if self.streaming:
                    result = self._stream_send(address, [(rid, sequence_id(stream_id), inputs, outputs, start,
                                                          False)])[rid]
                    if isinstance(result, Exception):
                        raise result
                else:
                    result = self._conn(address).infer(
                        self.model, inputs, outputs=outputs, request_id=rid, sequence_id=sequence_id(stream_id),
                        sequence_start=start, client_timeout=self.timeout)
            except RnnrtError:
                raise
            except Exception as err:  # noqa: BLE001 - tritonclient's exception type
                raise _error(err, subject) from None
            self._started.add(stream_id)
            return self._unpack(result, len(frames))

    def step_many(self, frames: Mapping[Hashable, Any], *, combine: bool = True) -> dict[Hashable, Any]:
        """Steps several streams at once: one multi-stream request per server (or one request per stream).

        Args:
            frames (Mapping[Hashable, Any]): Stream id to one frame, or to a list of frames (a chunk).
            combine (bool): Send each server one request carrying all of its streams' frames (the
                streams then stay on multi-stream requests, see the module doc). False: one sequence
                request per stream, all in flight at once over one gRPC stream per server. Defaults to True.

        Returns:
            dict: Stream id to its outputs (a list of outputs for a chunk), or to the ``RnnrtError`` that
            stream failed with; the other streams' results are still returned. A stream that fails (a bad
            frame, a stream the server does not know) keeps its state as it was.
        """
        locks = self._lock_streams(frames)
        try:
            results, chunks = self._prepare_many(frames)
            todo = {sid: v for sid, v in results.items() if not isinstance(v, Exception)}
            if combine:
                results.update(self._collect(self._post_carriers(self._by_server(todo))))
            else:
                results.update(self._step_each(todo))
            return self._many_results(frames, results, chunks)
        finally:
            for lock in locks:
                lock.release()

    def submit_many(self, frames: Mapping[Hashable, Any]) -> "ManyFuture":
        """:meth:`step_many` without waiting: posts the multi-stream requests and returns a future.

        Requests of this client to one server are handled in the order they were posted (see
        :class:`_Lane`), so a caller may keep several ticks in flight, submitting the next frames while
        the server still works on the last ones: the server never waits for the client.

        Returns:
            ManyFuture: ``result()`` returns what :meth:`step_many` returns.
        """
        locks = self._lock_streams(frames)
        try:
            results, chunks = self._prepare_many(frames)
            todo = {sid: v for sid, v in results.items() if not isinstance(v, Exception)}
            posted = self._post_carriers(self._by_server(todo), pipelined=True)
        finally:
            for lock in locks:
                lock.release()
        return ManyFuture(self, frames, results, chunks, posted)

    def _lock_streams(self, frames: Mapping[Hashable, Any]) -> list:
        # Locks are taken in one global order (by sequence id) so that concurrent calls cannot deadlock.
        locks = [self._stream_lock(s) for s in sorted(frames, key=sequence_id)]
        for lock in locks:
            lock.acquire()
        return locks

    def _prepare_many(self, frames: Mapping[Hashable, Any]) -> tuple[dict, dict]:
        """Each stream's frames checked and packed (or the error that refused them), and whether it sent a chunk."""
        results: dict[Hashable, Any] = {}
        chunks = {}
        for sid, value in frames.items():
            chunk = isinstance(value, (list, tuple))
            chunks[sid] = chunk
            batch = list(value) if chunk else [value]
            if not batch:
                results[sid] = BindingError(fmt(f"Stream {sid!r}", "Got no frames", "Pass at least one frame."))
                continue
            try:
                results[sid] = self._arrays(sid, batch)
            except RnnrtError as err:
                results[sid] = err
        return results, chunks

    def _by_server(self, todo: Mapping[Hashable, dict]) -> dict[str, list]:
        by_server: dict[str, list] = {}
        for sid, arrays in todo.items():
            by_server.setdefault(self._where[sid], []).append((sid, 0, arrays))
        return by_server

    @staticmethod
    def _many_results(frames: Mapping[Hashable, Any], results: dict, chunks: dict) -> dict[Hashable, Any]:
        out = {}
        for sid in frames:
            r = results[sid]
            out[sid] = r if isinstance(r, Exception) or chunks[sid] else r[0]
        return out

    def _step_each(self, todo: Mapping[Hashable, dict]) -> dict[Hashable, Any]:
        """One sequence request per stream, all in flight over the servers' gRPC streams."""
        by_server: dict[str, list] = {}
        meta = {}
        results: dict[Hashable, Any] = {}
        for sid, arrays in todo.items():
            if sid in self._carried:  # it left its Triton sequence: a request of one stream
                by = {self._where[sid]: [(sid, 0, arrays)]}
                results.update(self._carry(by))
                continue
            rid = f"r{next(self._ids)}"
            meta[rid] = (sid, len(next(iter(arrays.values()))))
            by_server.setdefault(self._where[sid], []).append(
                (rid, sequence_id(sid), self._inputs(arrays), self._outputs(), sid not in self._started, False))
        deadline = self._deadline()
        posted = [(address, *self._stream_post(address, reqs)) for address, reqs in by_server.items()]
        replies: dict[str, Any] = {}
        for address, stream, rids, failed in posted:
            replies.update(self._stream_wait(address, stream, rids, failed, deadline))
        for rid, (sid, n) in meta.items():
            reply = replies.get(rid) or EngineError(fmt(f"Stream {sid!r}", "Got no reply"))
            if isinstance(reply, Exception):
                results[sid] = reply
                continue
            self._started.add(sid)
            results[sid] = self._unpack(reply, n)
        return results

    # -- multi-stream requests -----------------------------------------------------------------------------
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
                flags = np.array([[f | (0 if sid in self._started else _F_START) for sid, f, _ in group]], np.int32)
                inputs = [_infer_input("RNNRT_STREAMS", ids, "UINT64"), _infer_input("RNNRT_FRAMES", counts, "INT32")]
                if flags.any():  # optional: every tensor of a request costs the server
                    inputs.append(_infer_input("RNNRT_FLAGS", flags, "INT32"))
                if int(counts.sum()):
                    for name in group[0][2]:
                        parts = [a[name] for _, _, a in group if a]
                        data = (parts[0] if len(parts) == 1 else np.concatenate(parts))[None]
                        inputs.append(_infer_input(name, data, layout.wire[name]))
                if state is not None:
                    inputs.append(_infer_input("RNNRT_STATE", state.reshape(1, -1), "UINT8"))
                rid = f"m{next(self._ids)}"
                # whatever the model sends back: the outputs, RNNRT_STATUS if a stream failed, RNNRT_STATE
                requests.append([rid, None, inputs, None, False, False])
                meta[rid] = [(sid, int(k), bool(f & _F_START)) for (sid, _, _), k, f in zip(group, counts[0], flags[0])]
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
                    req[1], req[4], req[5] = _carrier_id(), True, True
            else:
                start = lane is None
                if start:
                    lane = self._lanes[address] = _Lane()
                for i, req in enumerate(requests):
                    req[1], req[4] = lane.id, start and i == 0
                lane.inflight += len(requests)
            _, rids, failed = self._stream_post(address, [tuple(r) for r in requests], stream=stream)
        return lane, stream, rids, failed

    def _end_lane(self, address: str, stream: "_Stream", lane: _Lane) -> None:
        """Ends a lane with nothing in flight: a request of no stream with END (its Triton slot is freed)."""
        inputs = [_infer_input("RNNRT_STREAMS", np.zeros((1, 0), np.uint64), "UINT64"),
                  _infer_input("RNNRT_FRAMES", np.zeros((1, 0), np.int32), "INT32")]
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
                status = reply.as_numpy("RNNRT_STATUS")
                errors = {} if status is None else {i: (kind, text) for i, kind, text in
                                                    json.loads(status.tobytes().decode())["errors"]}
                arrays = self._frames_of(reply) if any(k for _, k, _ in streams) else {}
                pos = 0
                for i, (sid, k, started_here) in enumerate(streams):
                    if i in errors:
                        kind, text = errors[i]
                        results[sid] = _ERRORS.get(kind, EngineError)(text if kind in _ERRORS else f"{kind}: {text}")
                        if started_here:
                            self._started.discard(sid)
                    else:
                        self._carried.add(sid)
                        results[sid] = self._unpack(reply, k, pos, arrays) if k else reply
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

    # -- drain ------------------------------------------------------------------------------------------------
    def drain(self, address: str) -> list[Hashable]:
        """Moves every stream of a server to the others, state and all; new streams no longer go there.

        Each stream's state is detached from ``address`` (a control request that returns its
        :class:`~rnnrt.StreamState` bytes and ends the sequence there) and restored on the server the
        ring now routes it to (a control request with START). Returns the moved stream ids.

        Raises:
            ConfigError: ``address`` is not a server of this client, or the last one.
            EngineError: A server failed; the streams not yet moved stay on ``address``.
        """
        with self._lock:
            if address not in self._servers:
                raise ConfigError(fmt(f"Server {address!r}", "Is not a server of this client", f"Servers: {self._servers}"))
            if len(self._servers) == 1:
                raise ConfigError(fmt(f"Server {address!r}", "Is the only server", "Add another server first."))
            self._servers.remove(address)
            self._ring = [p for p in self._ring if p[1] != address]
            moving = [s for s, a in self._where.items() if a == address]
        moved = []
        for sid in moving:
            with self._stream_lock(sid):
                target = self._route(sid)
                if sid in self._started and sid in self._carried:
                    reply = self._carry_one(address, sid, _F_DETACH)
                    state = np.ascontiguousarray(reply.as_numpy("RNNRT_STATE"), np.uint8)
                    try:
                        self._carry_one(target, sid, _F_RESTORE, state=state)
                    except RnnrtError as err:
                        self._carry_one(address, sid, _F_RESTORE, state=state)
                        raise type(err)(f"{err}\nNote: stream {sid!r} stays on {address}; {len(moved)} moved.") from err
                elif sid in self._started:
                    reply = self._control(address, sid, _DETACH, end=True)
                    state = np.ascontiguousarray(reply.as_numpy("RNNRT_STATE"), np.uint8)
                    try:
                        self._control(target, sid, _RESTORE, start=True, state=state)
                    except RnnrtError as err:
                        # Put it back where it was so that nothing is lost, then report.
                        self._control(address, sid, _RESTORE, start=True, state=state)
                        raise type(err)(f"{err}\nNote: stream {sid!r} stays on {address}; {len(moved)} moved.") from err
                self._where[sid] = target
                moved.append(sid)
        return moved

    def _control(self, address: str, stream_id: Hashable, command: int, *, start: bool = False, end: bool = False,
                 state: Optional[np.ndarray] = None) -> Any:
        import tritonclient.grpc as grpcclient

        inputs = [_infer_input("RNNRT_CONTROL", np.array([[command]], np.int32), "INT32")]
        if state is not None:
            inputs.append(_infer_input("RNNRT_STATE", state.reshape(1, -1), "UINT8"))
        outputs = [grpcclient.InferRequestedOutput("RNNRT_STATE")] if command == _DETACH else None
        try:
            return self._conn(address).infer(self.model, inputs, outputs=outputs, request_id=f"c{next(self._ids)}",
                                              sequence_id=sequence_id(stream_id), sequence_start=start,
                                              sequence_end=end, client_timeout=self.timeout)
        except Exception as err:  # noqa: BLE001
            raise _error(err, f"Stream {stream_id!r} on {address}") from None

    # -- packing ----------------------------------------------------------------------------------------------
    def _pack(self, stream_id: Hashable, frames: Sequence[Any]) -> tuple[list, list]:
        return self._inputs(self._arrays(stream_id, frames)), self._outputs()

    def _arrays(self, stream_id: Hashable, frames: Sequence[Any]) -> dict[str, np.ndarray]:
        """A stream's frames checked and packed: per input ``[K, ...]`` (the binding's shape without its batch axis)."""
        layout = self.layout()
        mappings = []
        for frame in frames:
            if type(frame) is not dict and not isinstance(frame, Mapping):
                if layout.single is None:
                    raise BindingError(fmt(f"Stream {stream_id!r}", f"Got a bare {type(frame).__name__}",
                                           f"This model has several inputs; pass a mapping of {sorted(layout.in_axes)}."))
                frame = {layout.single: frame}
            mappings.append(frame)
        names = list(mappings[0])
        keys = mappings[0].keys()
        if any(frame.keys() != keys for frame in mappings[1:]):
            raise BindingError(fmt(f"Stream {stream_id!r}", "Frames of one chunk feed different inputs",
                                   f"Every frame must feed {sorted(names)}."))
        packed = {}
        for name in names:
            if name not in layout.in_axes:
                raise BindingError(fmt(f"Stream {stream_id!r}", f"Frame has unknown input {name!r}",
                                       f"Inputs: {sorted(layout.in_axes)}."))
            axis, dtype = layout.in_axes[name], layout.dtypes[name]
            rows = []
            for frame in mappings:
                arr = frame[name]
                if type(arr) is not np.ndarray:
                    arr = np.asarray(arr)
                if arr.dtype != dtype:
                    if not np.can_cast(arr.dtype, dtype, "safe") and arr.dtype.kind != dtype.kind:
                        raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Received dtype {arr.dtype.name}",
                                               f"Expected {dtype.name}."))
                    if not np.can_cast(arr.dtype, dtype, "safe"):
                        raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Received dtype {arr.dtype.name}",
                                               f"Expected {dtype.name} (or a type that casts to it safely)."))
                    arr = arr.astype(dtype)
                if arr.ndim <= axis or arr.shape[axis] != 1:
                    raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Received shape {list(arr.shape)}",
                                           f"Expected batch dim {axis} of size 1 (one stream's frame)."))
                rows.append(arr)
            try:
                # Along the batch axis (each frame has 1 there), then that axis first: [K, ...].
                data = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=axis)
            except ValueError as err:
                raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Frames of one chunk differ in shape: {err}")) from err
            if axis:
                data = np.moveaxis(data, axis, 0)
            packed[name] = np.ascontiguousarray(data)
        return packed

    def _inputs(self, arrays: Mapping[str, np.ndarray]) -> list:
        layout = self.layout()
        return [_infer_input(name, data[None], layout.wire[name]) for name, data in arrays.items()]

    def _outputs(self) -> list:
        import tritonclient.grpc as grpcclient

        return [grpcclient.InferRequestedOutput(n) for n in self.layout().out_axes]

    def _unpack(self, result: Any, count: int, start: int = 0,
                arrays: Optional[dict[str, np.ndarray]] = None) -> list[dict[str, np.ndarray]]:
        """Frames ``start .. start+count`` of a reply's outputs, each what a batch-1 ``Session.step`` returns."""
        if arrays is None:
            arrays = self._frames_of(result)
        names = list(arrays)
        if len(names) == 1:
            name, arr = names[0], arrays[names[0]]
            return [{name: arr[k]} for k in range(start, start + count)]
        return [dict(zip(names, rows)) for rows in zip(*(arr[start:start + count] for arr in arrays.values()))]

    def _frames_of(self, result: Any) -> dict[str, np.ndarray]:
        """A reply's outputs ``[1, F, ...]`` as ``[F, *binding shape with batch dim 1]`` views (frame k: ``[k]``)."""
        frames = {}
        for name, axis in self.layout().out_axes.items():
            arr = result.as_numpy(name)
            rest = arr.shape[2:]
            frames[name] = arr.reshape((arr.shape[1],) + rest[:axis] + (1,) + rest[axis:])
        return frames

    # -- gRPC streaming ---------------------------------------------------------------------------------------
    def _stream(self, address: str) -> "_Stream":
        with self._lock:
            stream = self._streams.get(address)
            if stream is None or stream.broken:
                import tritonclient.grpc as grpcclient

                if stream is not None:
                    stream.close()
                stream = self._streams[address] = _Stream(grpcclient.InferenceServerClient(address))
            return stream

    def _stream_post(self, address: str, requests: list,
                     stream: Optional["_Stream"] = None) -> tuple["_Stream", list, Optional[Exception]]:
        """Sends requests on the server's gRPC stream; returns what :meth:`_stream_wait` needs.
        ``stream``: that stream, whose send lock the caller holds."""
        locked = stream is not None
        stream = stream or self._stream(address)
        rids = [r[0] for r in requests]
        with stream.cond:
            for rid in rids:
                stream.pending[rid] = None
        try:
            with contextlib.nullcontext() if locked else stream.send_lock:
                for rid, seq, inputs, outputs, start, end in requests:
                    stream.conn.async_stream_infer(self.model, inputs, outputs=outputs, request_id=rid,
                                                   sequence_id=seq, sequence_start=start, sequence_end=end)
        except Exception as err:  # noqa: BLE001
            stream.broken = True
            return stream, rids, _error(err, f"Server {address}")
        return stream, rids, None

    def _stream_wait(self, address: str, stream: "_Stream", rids: list, failed: Optional[Exception],
                     deadline: Optional[float]) -> dict[str, Any]:
        with stream.cond:
            if failed is None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                stream.cond.wait_for(lambda: stream.broken or all(stream.pending[r] is not None for r in rids), left)
            replies = {r: stream.pending.pop(r, None) for r in rids}
        if any(v is None for v in replies.values()):
            stream.broken = True
            err = failed or stream.error or EngineError(fmt(f"Server {address}", "No reply within the timeout"))
            replies = {r: (v if v is not None else err) for r, v in replies.items()}
        return {r: (v if isinstance(v, RnnrtError) else _error(v, f"Server {address}") if isinstance(v, Exception)
                    else v) for r, v in replies.items()}

    def _stream_send(self, address: str, requests: Iterable[tuple]) -> dict[str, Any]:
        deadline = self._deadline()
        return self._stream_wait(address, *self._stream_post(address, list(requests)), deadline)

    def close_connections(self) -> None:
        """Closes the gRPC streams and this thread's connections (the streams stay open on the servers)."""
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.close()
        for conn in getattr(self._local, "conns", {}).values():
            conn.close()
        self._local.conns = {}

    def __enter__(self) -> "StreamClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_connections()

    def __repr__(self) -> str:
        return f"StreamClient(model={self.model!r}, servers={self._servers}, streams={len(self._where)})"


class _Stream:
    """One gRPC bidirectional stream; replies are matched to requests by request id."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cond = threading.Condition()
        self.pending: dict[str, Any] = {}
        self.broken = False
        self.error: Optional[Exception] = None
        self.send_lock = threading.Lock()
        conn.start_stream(callback=self._callback)

    def _callback(self, result: Any = None, error: Any = None) -> None:
        with self.cond:
            if result is not None:
                rid = result.get_response().id
                if rid in self.pending:
                    self.pending[rid] = result
            else:
                text = error.message() if hasattr(error, "message") else str(error)
                m = _REQUEST_ID.search(text or "")
                waiting = [r for r, v in self.pending.items() if v is None]
                if m and m.group(1) in self.pending:
                    self.pending[m.group(1)] = error
                elif len(waiting) == 1:
                    self.pending[waiting[0]] = error
                else:  # an error no request can be told from: fail every waiting request
                    self.error = error
                    for r in waiting:
                        self.pending[r] = error
            self.cond.notify_all()

    def close(self) -> None:
        try:
            self.conn.stop_stream()
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


class ManyFuture:
    """The pending result of :meth:`StreamClient.submit_many`."""

    def __init__(self, client: StreamClient, frames: Mapping[Hashable, Any], results: dict, chunks: dict,
                 posted: list) -> None:
        self._client, self._frames, self._results, self._chunks = client, frames, results, chunks
        self._posted: Optional[list] = posted
        self._lock = threading.Lock()

    def result(self) -> dict[Hashable, Any]:
        """Waits for the replies; returns what :meth:`StreamClient.step_many` returns (once, then cached)."""
        with self._lock:
            if self._posted is not None:
                posted, self._posted = self._posted, None
                self._results.update(self._client._collect(posted))
            return StreamClient._many_results(self._frames, self._results, self._chunks)
