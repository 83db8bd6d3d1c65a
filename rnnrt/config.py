"""Compatibility shim: the model YAML moved to :mod:`rnnrt.ir.config`, the import options to
:mod:`rnnrt.importers.options`.

Kept only while other branches still import ``rnnrt.config``; the integrator removes this file once they are
merged. New code imports from the modules above.
"""

from typing import Any

from rnnrt.importers.options import ImportConfig, load_import_config
from rnnrt.importers.options import json_schema as _import_schema
from rnnrt.ir.config import *  # noqa: F403
from rnnrt.ir.config import (  # noqa: F401 (names outside __all__ that callers used)
    CONFIG_VERSION,
    ModelConfig,
    _format_errors,
    save_step_graph,
)
from rnnrt.ir.config import json_schema as _model_schema


def json_schema(kind: str = "model") -> dict[str, Any]:
    """The JSON schema of the model config (``"model"``) or of the import options (``"import"``)."""
    return _import_schema() if kind == "import" else _model_schema()
