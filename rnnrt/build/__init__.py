"""Build: ONNX step graph -> TensorRT plan (tensorrt or tensorrt_rtx), profiles, the precision pass."""

from rnnrt.build.builder import (
    BuildOptions,
    inspect_plan,
    parse_range,
    plan_from_config,
    plan_from_onnx,
)

__all__ = ["BuildOptions", "inspect_plan", "parse_range", "plan_from_config", "plan_from_onnx"]
