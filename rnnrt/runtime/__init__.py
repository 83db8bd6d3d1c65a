"""Runtime: the Session (state core) with its host and device executors, and the StreamPool over it.

- ``bindings.py``: the one frame check, the continuation fill, slot validation and the slot -> row mapping.
- ``memory.py``: the arena layout and the ``Arena``/``Executor`` protocols the core and executors share.
- ``host.py``: ``HostExecutor`` and ``HostArena`` (ONNX Runtime and other numpy engines).
- ``device.py``: ``DeviceExecutor``, ``DeviceArena``, pinned staging (``IOSet``), CUDA graphs, ``StepHandle``.
- ``session.py``: ``Session`` (bindings, slots, marks, arenas, feedback, reset, read/write_state) and ``load``.
- ``pool.py``: ``StreamPool`` (id <-> slot map + frame packing over ``Session.step(feeds, slots=...)``).
- ``snapshot.py``: ``StreamState`` and its byte format.

Imports go ``bindings``/``memory`` <- ``host``/``device`` <- ``session`` <- ``pool``; ``snapshot`` is a leaf.
"""
