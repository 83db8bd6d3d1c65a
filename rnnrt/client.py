"""``rnnrt.client``: the client for rnnrt models served on Triton: the public, canonical path.

:mod:`rnnrt.serve.client` implements it (the same :class:`StreamClient`); import from here.

Example::

    import rnnrt.client

    client = rnnrt.client.StreamClient(["127.0.0.1:8001"], model="lm")
    client.open("s1")
    out = client.step("s1", {"data": x})
    client.close("s1")
"""

from rnnrt.serve.client import StreamClient, sequence_id

__all__ = ["StreamClient", "sequence_id"]
