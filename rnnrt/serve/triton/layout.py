"""What the Triton model looks like: each tensor's shape as Triton sees it (batch first, folded rows as one
sequence's entries), the max batch, the START control, and whether the step graph must be wrapped."""

from __future__ import annotations

import logging
from typing import Optional

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.config import ModelConfig
from rnnrt.ir.manifest import EngineManifest
from rnnrt.ir.streams import fold_entries

G_LOGGER = logging.getLogger("rnnrt")


# START control value per continuation dtype: (field, [value when not START, value when START]).
_START_FIELDS = {"float32": ("fp32_false_true", "[ 1, 0 ]"), "int32": ("int32_false_true", "[ 1, 0 ]")}

DEFAULT_MAX_BATCH = 64
"""max_batch_size for a dynamic-batch model without a built profile."""


def _perm_to_first(rank: int, axis: int) -> list[int]:
    return [axis] + [i for i in range(rank) if i != axis]


def _perm_from_first(rank: int, axis: int) -> list[int]:
    # Inverse of _perm_to_first: original axis i is taken from batch-first axis perm[i].
    return [0 if i == axis else (i + 1 if i < axis else i) for i in range(rank)]


def _batch_first(shape: list, axis: Optional[int], fold: Optional[tuple] = None) -> list:
    if axis is None:
        return list(shape)
    if fold is not None:
        # A folded batch axis (outer*N*inner entries, see the config's batch_fold): one sequence's
        # request holds its outer*inner entries there.
        return ["batch"] + [fold_entries(fold) if i == axis else d for i, d in enumerate(shape)]
    return [shape[axis]] + [d for i, d in enumerate(shape) if i != axis]


class _TritonShapes:
    """What the Triton model looks like: tensor shapes as Triton sees them and whether to wrap."""

    def __init__(self, cfg: ModelConfig, max_batch_size: Optional[int],
                 manifest: Optional[EngineManifest] = None) -> None:
        entries = [(t.shape, t.batch_axis) for t in cfg.inputs + cfg.outputs] + [(s.shape, s.batch_axis) for s in cfg.state]
        dynamic = [isinstance(shape[axis], str) for shape, axis in entries if axis is not None]
        self.batched = bool(dynamic) and all(dynamic) and all(axis is not None for _, axis in entries)
        if self.batched:
            profile_max = manifest.max_batch if manifest is not None else None
            if max_batch_size is not None:
                self.max_batch = int(max_batch_size)
            else:
                self.max_batch = profile_max if profile_max is not None else DEFAULT_MAX_BATCH
            if profile_max is not None and self.max_batch > profile_max:
                raise ConfigError(
                    fmt("export-triton", f"max_batch_size={self.max_batch} exceeds the plan's profile max "
                        f"{profile_max}", "Rebuild with a larger --batch-profile or lower --max-batch-size.")
                )
        else:
            self.max_batch = 0
            G_LOGGER.warning("export-triton | The model has no dynamic batch dim on every binding; exporting with "
                             "max_batch_size 0 (one sequence per model instance at a time).")
        self.cont = cfg.continuation
        cont_spec = next((t for t in cfg.inputs if self.cont and t.name == self.cont.input), None)
        if cont_spec is not None and cont_spec.dtype not in _START_FIELDS:
            raise ConfigError(
                fmt(f"Continuation input {cont_spec.name!r}", f"Has dtype {cont_spec.dtype!r}, which Triton's START "
                    "control cannot drive", f"Use one of {sorted(_START_FIELDS)}.")
            )
        self.cont_spec = cont_spec
        control_shape = ["batch", 1] if self.batched else [1]
        if cont_spec is None:
            self.wrap_cont = False
        elif self.batched:
            self.wrap_cont = not (cont_spec.batch_axis == 0 and list(cont_spec.shape[1:]) == [1])
        else:
            self.wrap_cont = list(cont_spec.shape) != [1]
        time_major = cont_spec is not None and cont_spec.batch_fold is not None and self.cont.time_axis == cont_spec.batch_axis
        if self.wrap_cont and not time_major and self.cont.time_axis is not None \
                and isinstance(cont_spec.shape[self.cont.time_axis], str):
            raise ConfigError(
                fmt(f"Continuation input {cont_spec.name!r}", "Has a dynamic time dim, so START cannot be expanded to "
                    "'0 at t=0, 1 later' inside the graph", "Export a step graph with a fixed time dim.")
            )
        self.transpose = {}
        self.folds = {t.name: tuple(t.batch_fold) for t in cfg.inputs + cfg.outputs if t.batch_fold is not None}
        if self.folds and not self.batched:
            raise ConfigError(fmt("export-triton", f"Bindings {sorted(self.folds)} fold the streams with other dims "
                                  "but the model has no dynamic batch on every binding", "Convert with --batch dynamic."))
        if cont_spec is not None and cont_spec.name in self.folds and self.cont.time_axis != cont_spec.batch_axis:
            raise ConfigError(
                fmt(f"Continuation input {cont_spec.name!r}", f"Folds the streams with other dims {list(self.folds[cont_spec.name])} "
                    "but not as T*N time-major rows", "START can drive only a plain or a time-major continuation input.")
            )
        if self.batched:
            for t in cfg.inputs + cfg.outputs:
                if (t.batch_axis != 0 or t.name in self.folds) and not (cont_spec is not None and t.name == cont_spec.name):
                    self.transpose[t.name] = (len(t.shape), t.batch_axis)
            for s in cfg.state:
                if s.batch_axis != 0:
                    self.transpose[s.input] = (len(s.shape), s.batch_axis)
                    self.transpose[s.output] = (len(s.shape), s.batch_axis)
        self.control_shape = control_shape
        self.wrap = bool(self.transpose) or self.wrap_cont

    def dims(self, shape: list, axis: Optional[int], fold: Optional[tuple] = None) -> list[int]:
        full = _batch_first(shape, axis, fold) if self.batched else list(shape)
        rest = full[1:] if self.batched else full
        return [-1 if isinstance(d, str) else int(d) for d in rest]
