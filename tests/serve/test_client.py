"""StreamClient without a server: stream ids on the wire, consistent-hash routing, error mapping."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from rnnrt.errors import BindingError, ConfigError, EngineError, StateError
from rnnrt.serve.client import StreamClient, sequence_id
from rnnrt.serve.wire import reply_error as _error

SERVERS = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]


def test_sequence_ids():
    assert sequence_id(5) == 5 and sequence_id(np.int64(7)) == 7 and sequence_id(2**63 - 1) == 2**63 - 1
    a, b = sequence_id("alice"), sequence_id("alice")
    assert a == b and 0 < a < 2**63 and sequence_id("bob") != a
    assert 0 < sequence_id(0) < 2**63 and 0 < sequence_id(-3) < 2**63 and 0 < sequence_id(2**64) < 2**63
    for bad in (True, 1.5, None, ("t",)):
        with pytest.raises(StateError, match="Stream id"):
            sequence_id(bad)


def test_consistent_hash_spreads_and_moves_only_what_must_move():
    client = StreamClient(SERVERS, model="m")
    ids = [f"s{i}" for i in range(3000)]
    before = {sid: client._route(sid) for sid in ids}
    counts = collections.Counter(before.values())
    assert set(counts) == set(SERVERS) and min(counts.values()) > 600, counts
    for sid in ids[:50]:
        client.open(sid)
    client.add_server("127.0.0.1:4")
    after = {sid: client._route(sid) for sid in ids}
    moved = [sid for sid in ids if before[sid] != after[sid]]
    assert all(after[sid] == "127.0.0.1:4" for sid in moved)  # only to the new server
    assert 300 < len(moved) < 1200, len(moved)
    for sid in ids[:50]:  # open streams stay where their state is
        assert client.where(sid) == before[sid]


def test_drain_and_open_refusals():
    client = StreamClient(SERVERS[:1], model="m")
    with pytest.raises(ConfigError, match="only server"):
        client.drain(SERVERS[0])
    with pytest.raises(ConfigError, match="not a server"):
        client.drain("127.0.0.1:9")
    client.open("x")
    with pytest.raises(StateError, match="already open"):
        client.open("x")
    with pytest.raises(StateError, match="not open"):
        client.where("y")
    with pytest.raises(ConfigError, match="no server"):
        StreamClient([], model="m")


class _Err(Exception):
    def __init__(self, text, status=""):
        super().__init__(text)
        self._text, self._status = text, status

    def message(self):
        return self._text

    def status(self):
        return self._status


@pytest.mark.parametrize("text,status,cls,part", [
    ("[request id: r1] BindingError: Stream 'a' input 'data' | Has shape [1]", "", BindingError, "Has shape"),
    ("[request id: r2] StateError: Stream 5 | Is not open", "", StateError, "Is not open"),
    ("inference request for sequence 9 to model 'm' must specify the START flag on the first request", "",
     StateError, "START"),
    ("[request id: r3] unexpected shape for input 'data' for model 'm'. Expected [-1,-1,1,5], got [1,1,1,4]", "",
     BindingError, "unexpected shape"),
    ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", EngineError, "unreachable"),
    ("[request id: r4] EngineError: TypeError: boom", "", EngineError, "TypeError: boom"),
])
def test_server_errors_become_rnnrt_errors(text, status, cls, part):
    err = _error(_Err(text, status), "Stream 'a'")
    assert type(err) is cls and part in str(err)


def test_rnnrt_client_is_the_public_path_to_one_client():
    import rnnrt.client
    import rnnrt.serve.client

    assert rnnrt.client.StreamClient is rnnrt.serve.client.StreamClient
    assert rnnrt.client.sequence_id is rnnrt.serve.client.sequence_id
