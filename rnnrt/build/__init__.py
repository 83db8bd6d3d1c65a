"""Build: ONNX step graph -> TensorRT plan (tensorrt or tensorrt_rtx), profiles, the precision pass.

Import what you need from its modules (``rnnrt.build.builder``: ``BuildOptions``, ``plan_from_config``,
``plan_from_onnx``, ``parse_range``; ``rnnrt.build.inspect``: ``inspect_plan``). Importing this package
imports neither onnx nor the builder: the engines read a plan's manifest (:mod:`rnnrt.ir.manifest`)
without them.
"""

from typing import Any

_MOVED = {"BuildOptions": "builder", "parse_range": "builder", "plan_from_config": "builder",
          "plan_from_onnx": "builder", "inspect_plan": "inspect"}


def __getattr__(name: str) -> Any:
    # Compatibility for `from rnnrt.build import X` (rnnrt/cli.py until it imports the modules directly);
    # the builder is imported on that first use only. The integrator removes this with the other shims.
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"rnnrt.build.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'rnnrt.build' has no attribute {name!r}")
