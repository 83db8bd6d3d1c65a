"""Build: ONNX step graph -> TensorRT plan (tensorrt or tensorrt_rtx), profiles, the precision pass.

Import what you need from its modules (``rnnrt.build.builder``: ``BuildOptions``, ``plan_from_config``,
``plan_from_onnx``, ``parse_range``; ``rnnrt.build.inspect``: ``inspect_plan``; ``rnnrt.build.api``:
:func:`~rnnrt.build.api.build`, also ``rnnrt.build`` once ``rnnrt`` is imported). Importing this package
imports neither onnx nor the builder: the engines read a plan's manifest (:mod:`rnnrt.ir.manifest`)
without them.
"""
