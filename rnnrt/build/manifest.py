"""Compatibility shim: the plan manifest and its reader moved to :mod:`rnnrt.ir.manifest`.

Kept only while other branches still import ``rnnrt.build.manifest``; the integrator removes this file once
they are merged. New code imports from :mod:`rnnrt.ir.manifest`.
"""

from rnnrt.ir.manifest import *  # noqa: F403
from rnnrt.ir.manifest import (  # noqa: F401 (the module has no __all__)
    MANIFEST_SUFFIX,
    MANIFEST_VERSION,
    MAX_MANIFEST_BYTES,
    EngineManifest,
    beside,
    config_for_plan,
    default_plan_path,
    find_engine,
    manifest_path,
    read_manifest,
    sha256_file,
)
