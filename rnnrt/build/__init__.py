"""Build: ONNX step graph -> TensorRT plan (tensorrt or tensorrt_rtx), profiles, the precision pass.

:func:`rnnrt.build.api.build` is the checked entry point (``rnnrt.build``, ``rnnrt build``). The builder's
names below load the builder (and onnx) on first use, so importing this package stays cheap.
"""

from __future__ import annotations

# `typing` is imported for type checkers only: `import rnnrt` stays light.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rnnrt.build.builder import BuildOptions, inspect_plan, parse_range, plan_from_config, plan_from_onnx

__all__ = ["BuildOptions", "inspect_plan", "parse_range", "plan_from_config", "plan_from_onnx"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rnnrt.build import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'rnnrt.build' has no attribute {name!r}")
