"""Compatibility shim: the frame checks and slot rows moved to :mod:`rnnrt.runtime.frames` (``Rows`` is now
``RowLayout``), the Session's view of its config to :mod:`rnnrt.runtime.step_io`.

Kept only while other branches still import ``rnnrt.runtime.bindings``; the integrator removes this file once
they are merged. New code imports from :mod:`rnnrt.runtime.frames`.
"""

from rnnrt.runtime.frames import *  # noqa: F403
from rnnrt.runtime.frames import BATCH, RowLayout  # noqa: F401

Rows = RowLayout
