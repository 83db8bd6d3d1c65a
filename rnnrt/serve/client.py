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
closes them. A stream that moves from sequence requests (``step``) to multi-stream requests ends its Triton
sequence first (a ``release`` control): an open sequence would hold a Triton slot, and a stopping Triton
server waits for open sequences.

This module is the client's streams and requests; its routing is :mod:`rnnrt.serve.routing`, the frames on
the wire :mod:`rnnrt.serve.frames`, gRPC streams :mod:`rnnrt.serve.grpc_stream`, multi-stream requests
:mod:`rnnrt.serve.multistream`, the protocol :mod:`rnnrt.serve.wire`. Import it as ``rnnrt.client``.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Hashable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from rnnrt.errors import BindingError, ConfigError, EngineError, RnnrtError, StateError, fmt
from rnnrt.serve.frames import ModelLayout
from rnnrt.serve.grpc_stream import GrpcStream, Lane
from rnnrt.serve.multistream import MultiStreamRequests
from rnnrt.serve.routing import HashRing
from rnnrt.serve.wire import (CLOSE, CONTROL_INPUT, DETACH, FLAG_DETACH, FLAG_END, FLAG_RESTORE, RELEASE, RESTORE,
                              STATE_TENSOR, infer_input, reply_error, sequence_id)

__all__ = ["ManyFuture", "StreamClient", "sequence_id"]


class StreamClient(MultiStreamRequests):
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
        self._ring = HashRing()
        for s in servers:
            self.add_server(s)
        self._where: dict[Hashable, str] = {}
        self._started: set = set()
        self._carried: set = set()  # streams stepped by multi-stream requests (they stay on them)
        self._sequences: set = set()  # streams whose Triton sequence is open (started by a sequence request)
        self._stream_locks: dict[Hashable, threading.Lock] = {}
        self._local = threading.local()
        self._streams: dict[str, GrpcStream] = {}
        self._layout: Optional[ModelLayout] = None
        self._ids = itertools.count(1)
        self._lanes: dict[str, Lane] = {}

    # -- servers and routing ----------------------------------------------------------------------------------
    @property
    def servers(self) -> list[str]:
        """The servers new streams may be routed to."""
        return list(self._ring.servers)

    def add_server(self, address: str) -> None:
        """Adds a server to the ring: new streams may go there; open streams stay where they are."""
        with self._lock:
            self._ring.add(address)

    def _route(self, stream_id: Hashable) -> str:
        return self._ring.route(stream_id)

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

    def layout(self) -> ModelLayout:
        """The model's bindings, read once from a server's model config."""
        if self._layout is None:
            errors = []
            for address in self.servers:
                try:
                    cfg = self._conn(address).get_model_config(self.model, client_timeout=self.timeout).config
                except Exception as err:  # noqa: BLE001 - try the next server
                    errors.append(reply_error(err, f"Model {self.model!r} on {address}"))
                    continue
                self._layout = ModelLayout(cfg)
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
            self._sequences.discard(stream_id)
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
                        self._carry_one(self._where[stream_id], stream_id, FLAG_END)
                elif stream_id in self._started:
                    self._control(self._where[stream_id], stream_id, CLOSE, end=True)
            finally:
                with self._lock:
                    self._where.pop(stream_id, None)
                    self._started.discard(stream_id)
                    self._carried.discard(stream_id)
                    self._sequences.discard(stream_id)
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
                raise reply_error(err, subject) from None
            self._started.add(stream_id)
            self._sequences.add(stream_id)
            return self.layout().unpack(result, len(frames))

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
                todo = self._release_sequences(todo, results)
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
        :class:`~rnnrt.serve.grpc_stream.Lane`), so a caller may keep several ticks in flight, submitting the next frames while
        the server still works on the last ones: the server never waits for the client.

        Returns:
            ManyFuture: ``result()`` returns what :meth:`step_many` returns.
        """
        locks = self._lock_streams(frames)
        try:
            results, chunks = self._prepare_many(frames)
            todo = self._release_sequences({sid: v for sid, v in results.items() if not isinstance(v, Exception)},
                                           results)
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

    def _release_sequences(self, todo: Mapping[Hashable, dict], results: dict) -> dict[Hashable, dict]:
        """Ends the Triton sequence of each stream that moves on to multi-stream requests (a ``release``
        control with END; the server keeps its state): an open sequence would hold a Triton slot and make a
        stopping server wait for it. Returns ``todo`` less the streams whose release failed (their error
        goes to ``results``). The stream locks are held."""
        kept = {}
        for sid, arrays in todo.items():
            if sid in self._sequences:
                try:
                    self._control(self._where[sid], sid, RELEASE, end=True)
                except RnnrtError as err:
                    results[sid] = err
                    continue
                self._sequences.discard(sid)
                self._carried.add(sid)
            kept[sid] = arrays
        return kept

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
                (rid, sequence_id(sid), self.layout().inputs(arrays), self.layout().requested_outputs(), sid not in self._started, False))
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
            self._sequences.add(sid)
            results[sid] = self.layout().unpack(reply, n)
        return results

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
            servers = self._ring.servers
            if address not in servers:
                raise ConfigError(fmt(f"Server {address!r}", "Is not a server of this client", f"Servers: {servers}"))
            if len(servers) == 1:
                raise ConfigError(fmt(f"Server {address!r}", "Is the only server", "Add another server first."))
            self._ring.remove(address)
            moving = [s for s, a in self._where.items() if a == address]
        moved = []
        for sid in moving:
            with self._stream_lock(sid):
                target = self._route(sid)
                if sid in self._started and sid in self._carried:
                    reply = self._carry_one(address, sid, FLAG_DETACH)
                    state = np.ascontiguousarray(reply.as_numpy(STATE_TENSOR), np.uint8)
                    try:
                        self._carry_one(target, sid, FLAG_RESTORE, state=state)
                    except RnnrtError as err:
                        self._carry_one(address, sid, FLAG_RESTORE, state=state)
                        raise type(err)(f"{err}\nNote: stream {sid!r} stays on {address}; {len(moved)} moved.") from err
                elif sid in self._started:
                    reply = self._control(address, sid, DETACH, end=True)
                    state = np.ascontiguousarray(reply.as_numpy(STATE_TENSOR), np.uint8)
                    try:
                        self._control(target, sid, RESTORE, start=True, state=state)
                    except RnnrtError as err:
                        # Put it back where it was so that nothing is lost, then report.
                        self._control(address, sid, RESTORE, start=True, state=state)
                        raise type(err)(f"{err}\nNote: stream {sid!r} stays on {address}; {len(moved)} moved.") from err
                self._where[sid] = target
                moved.append(sid)
        return moved

    def _control(self, address: str, stream_id: Hashable, command: int, *, start: bool = False, end: bool = False,
                 state: Optional[np.ndarray] = None) -> Any:
        import tritonclient.grpc as grpcclient

        inputs = [infer_input(CONTROL_INPUT, np.array([[command]], np.int32), "INT32")]
        if state is not None:
            inputs.append(infer_input(STATE_TENSOR, state.reshape(1, -1), "UINT8"))
        outputs = [grpcclient.InferRequestedOutput(STATE_TENSOR)] if command == DETACH else None
        try:
            return self._conn(address).infer(self.model, inputs, outputs=outputs, request_id=f"c{next(self._ids)}",
                                              sequence_id=sequence_id(stream_id), sequence_start=start,
                                              sequence_end=end, client_timeout=self.timeout)
        except Exception as err:  # noqa: BLE001
            raise reply_error(err, f"Stream {stream_id!r} on {address}") from None

    # -- packing ----------------------------------------------------------------------------------------------
    def _pack(self, stream_id: Hashable, frames: Sequence[Any]) -> tuple[list, list]:
        layout = self.layout()
        return layout.inputs(layout.pack(stream_id, frames)), layout.requested_outputs()

    def _arrays(self, stream_id: Hashable, frames: Sequence[Any]) -> dict[str, np.ndarray]:
        return self.layout().pack(stream_id, frames)

    # -- gRPC streaming ---------------------------------------------------------------------------------------
    def _stream(self, address: str) -> "GrpcStream":
        with self._lock:
            stream = self._streams.get(address)
            if stream is None or stream.broken:
                import tritonclient.grpc as grpcclient

                if stream is not None:
                    stream.close()
                stream = self._streams[address] = GrpcStream(grpcclient.InferenceServerClient(address))
            return stream

    def _stream_post(self, address: str, requests: list,
                     stream: Optional[GrpcStream] = None) -> tuple[GrpcStream, list, Optional[Exception]]:
        """Sends requests on the server's gRPC stream; returns what :meth:`_stream_wait` needs.
        ``stream``: that stream, whose send lock the caller holds."""
        locked = stream is not None
        stream = stream or self._stream(address)
        return (stream, *stream.post(self.model, address, requests, locked))

    @staticmethod
    def _stream_wait(address: str, stream: GrpcStream, rids: list, failed: Optional[Exception],
                     deadline: Optional[float]) -> dict[str, Any]:
        return stream.wait(address, rids, failed, deadline)

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
        return f"StreamClient(model={self.model!r}, servers={self._ring.servers}, streams={len(self._where)})"


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
