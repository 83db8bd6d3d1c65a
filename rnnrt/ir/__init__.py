"""The step graph: an ONNX graph whose recurrent state is explicit inputs and outputs, and its bindings."""
