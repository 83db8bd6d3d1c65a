"""The step graph (stepgraph.py), the one description of its bindings (bindings.py: tensor specs, state pairs,
continuation, the dtype map, the ONNX dims reader) and bounded reads of YAML and model files (files.py)."""
