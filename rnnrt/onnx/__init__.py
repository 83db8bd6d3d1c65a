"""ONNX-side passes on the step graph: state exposure, precision casts."""
