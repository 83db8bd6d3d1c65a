"""Runtime: the Session (state core) with its host and device executors, and the StreamPool over it.

- ``frames.py``: the one frame check, the continuation fill, slot validation and the slot -> row mapping
  (``RowLayout``).
- ``step_io.py``: ``StepIO``, the Session's inputs, outputs and state layout at its batch size (``session.io``).
- ``memory.py``: the arena layout and the ``Arena``/``Executor`` protocols the core and executors share.
- ``host.py``: ``HostExecutor`` and ``HostArena`` (ONNX Runtime and other numpy engines).
- ``device.py``: ``DeviceExecutor``, ``DeviceArena``, pinned staging (``IOSet``), CUDA graphs, ``StepHandle``.
- ``session.py``: ``Session`` (slots, marks, arenas, feedback, reset, read/write_state) and ``load`` (a YAML
  -> the engine the registry picks, :mod:`rnnrt.engines.select` -> a Session).
- ``pool.py``: ``StreamPool`` (id <-> slot map + frame packing over ``Session.step(feeds, slots=...)``).
- ``snapshot.py``: ``StreamState`` and its byte format.
- ``verify/``: ``rnnrt verify`` (backends side by side); ``plots.py``: its ``--plot``.

Imports go ``frames``/``memory`` <- ``step_io``/``host``/``device`` <- ``session`` <- ``pool``; ``snapshot`` is
a leaf. Importing this package imports none of them (nor onnx, pydantic or the builder).
"""
