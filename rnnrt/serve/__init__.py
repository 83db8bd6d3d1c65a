"""Serving on Triton Inference Server.

- :mod:`rnnrt.serve.triton`: ``rnnrt export-triton`` (model repositories: python, onnx, plan engines).
- :mod:`rnnrt.serve.backend`: the python-backend model (a StreamPool behind the sequence batcher).
- :mod:`rnnrt.serve.server`: ``rnnrt serve`` (a real ``tritonserver`` process).
- :mod:`rnnrt.serve.install`: unpacks the embedded ``tritonserver`` from the nvidia-pytriton wheel.
- :mod:`rnnrt.serve.client`: ``StreamClient`` (public path: ``rnnrt.client``), with :mod:`~rnnrt.serve.routing`
  (consistent hash), :mod:`~rnnrt.serve.frames` (packing), :mod:`~rnnrt.serve.grpc_stream` (gRPC streams, lanes).
- :mod:`rnnrt.serve.wire`: the protocol between the client and the backend (names, controls, flags, limits).
"""
