"""ONNX importer: find or expose the recurrent state of an ONNX model and pair it for the step graph."""
