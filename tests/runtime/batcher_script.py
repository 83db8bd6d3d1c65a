"""Scripted stream calls shared by the StreamBatcher tests (not a test module)."""

from __future__ import annotations

from typing import Any, Hashable


def control(batcher: Any, stream_id: Hashable, kind: str) -> bool:
    """Applies a scripted ``"reset"`` or ``"close"`` to the stream; False for any other kind (a frame)."""
    if kind == "reset":
        batcher.reset_stream(stream_id)
    elif kind == "close":
        batcher.close_stream(stream_id)
    else:
        return False
    return True
