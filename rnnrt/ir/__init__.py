"""The intermediate representation and the contracts between the stages (files other stages read or write):

- ``stepgraph.py``: the step graph an importer produces (an ONNX model plus its bindings).
- ``bindings.py``: the one description of the bindings (tensor specs, state pairs, continuation, the dtype
  map, the ONNX dims reader).
- ``streams.py``: how streams sit in a binding (folded batch axes, the single input a bare array stands for).
- ``config.py``: the model YAML, the contract between the importers and every later stage.
- ``manifest.py``: the plan manifest ``<plan>.json``, the contract between build and the engines.
- ``files.py`` / ``weights.py``: bounded reads of YAML and model files; external weights.
"""
