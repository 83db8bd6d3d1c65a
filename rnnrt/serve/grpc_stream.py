"""The client's gRPC streams: one bidirectional stream per server, replies matched to requests by id,
and the lanes that keep a client's pipelined multi-stream requests in order."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any, Optional

from rnnrt.errors import EngineError, RnnrtError, fmt
from rnnrt.serve.wire import REQUEST_ID, reply_error

__all__ = ["GrpcStream", "Lane", "carrier_id"]


class GrpcStream:
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
                m = REQUEST_ID.search(text or "")
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

    def post(self, model: str, address: str, requests: list, locked: bool = False) -> tuple[list, Optional[Exception]]:
        """Sends requests ``(request id, sequence id, inputs, outputs, start, end)`` on this stream; returns
        their ids and the error that stopped the sending (what :meth:`wait` needs). ``locked``: the caller
        holds :attr:`send_lock`."""
        rids = [r[0] for r in requests]
        with self.cond:
            for rid in rids:
                self.pending[rid] = None
        try:
            with contextlib.nullcontext() if locked else self.send_lock:
                for rid, seq, inputs, outputs, start, end in requests:
                    self.conn.async_stream_infer(model, inputs, outputs=outputs, request_id=rid,
                                                 sequence_id=seq, sequence_start=start, sequence_end=end)
        except Exception as err:  # noqa: BLE001
            self.broken = True
            return rids, reply_error(err, f"Server {address}")
        return rids, None

    def wait(self, address: str, rids: list, failed: Optional[Exception],
             deadline: Optional[float]) -> dict[str, Any]:
        """The replies to posted requests (a reply, or the rnnrt error of that request), by request id."""
        with self.cond:
            if failed is None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                self.cond.wait_for(lambda: self.broken or all(self.pending[r] is not None for r in rids), left)
            replies = {r: self.pending.pop(r, None) for r in rids}
        if any(v is None for v in replies.values()):
            self.broken = True
            err = failed or self.error or EngineError(fmt(f"Server {address}", "No reply within the timeout"))
            replies = {r: (v if v is not None else err) for r, v in replies.items()}
        return {r: (v if isinstance(v, RnnrtError) else reply_error(v, f"Server {address}") if isinstance(v, Exception)
                    else v) for r, v in replies.items()}


class Lane:
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
        self.id = carrier_id()
        self.inflight = 0


def carrier_id() -> int:
    """A fresh correlation id for a multi-stream request or a lane (2**62 and up: apart from stream ids that
    are small ints)."""
    return random.getrandbits(62) | (1 << 62)
