"""Tiny hand-built ONNX step graphs, registered by name.

``MODELS[name](**params)`` returns a :class:`TinyModel`: the :class:`StepGraph`, its weights and a
float64 numpy reference. ``TinyModel.save(dir)`` writes ``model.onnx`` + ``model.yaml`` and returns
the YAML path.
"""

from tests.models.registry import MODELS, TinyModel, register  # noqa: F401
from tests.models import lstm, stateless  # noqa: F401 (registers)
