"""Where a stream goes: a consistent hash of stream ids over servers (the client's routing).

Each server owns 64 points (virtual nodes) on a ring of 64-bit BLAKE2b hashes; a stream goes to the
owner of the first point at or after its own hash. Adding a server moves only the streams whose
points it takes; removing one moves only its own streams.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Hashable

from rnnrt.serve.wire import sequence_id

__all__ = ["HashRing"]

VNODES = 64


def _point(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class HashRing:
    """Servers on a consistent-hash ring. Not locked: the caller serializes :meth:`add` and :meth:`remove`;
    :meth:`route` reads the ring without a lock (each change makes a new list)."""

    def __init__(self) -> None:
        self._points: list[tuple[int, str]] = []
        self.servers: list[str] = []

    def add(self, address: str) -> bool:
        """Adds a server; returns False when it is there already."""
        if address in self.servers:
            return False
        self.servers = self.servers + [address]
        self._points = sorted(self._points + [(_point(f"{address}#{i}"), address) for i in range(VNODES)])
        return True

    def remove(self, address: str) -> None:
        self.servers = [s for s in self.servers if s != address]
        self._points = [p for p in self._points if p[1] != address]

    def route(self, stream_id: Hashable) -> str:
        """The server a stream id goes to."""
        points = self._points
        point = _point(str(sequence_id(stream_id)))
        return points[bisect.bisect(points, (point, "")) % len(points)][1]
