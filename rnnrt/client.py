"""``rnnrt.client``: the client for rnnrt models served on Triton (see :mod:`rnnrt.serve.client`).

Example::

    import rnnrt.client

    client = rnnrt.client.StreamClient(["127.0.0.1:8001"], model="lm")
    client.open("s1")
    out = client.step("s1", {"data": x})
    client.close("s1")
"""

from rnnrt.serve.client import StreamClient, sequence_id

__all__ = ["StreamClient", "sequence_id"]
