"""How streams sit in the bindings, written once for every stage: folded batch axes and the single input.

- A binding's ``batch_fold`` ``(outer, inner)`` (see :class:`rnnrt.ir.bindings.TensorSpec`) folds the N streams
  with other dims: its batch axis holds ``outer * N * inner`` entries. :func:`fold_entries` is that count, used
  by the Session's frame checks, its executors, the StreamPool and the Triton export alike.
- A bare array (not a mapping) stands for the model's single input: the one input left once the
  continuation input (fed by the Session) and inputs held elsewhere (a pool's shared inputs) are set
  aside. :func:`single_input` names it for the Session, the StreamPool and the serving client alike.

Imports nothing (no numpy, no pydantic), so every stage may use it.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

__all__ = ["fold_entries", "single_input"]


def fold_entries(fold: Optional[Sequence[int]], rows: int = 1) -> int:
    """The size of a batch axis holding ``rows`` streams: ``outer * rows * inner`` when folded, else ``rows``.

    Args:
        fold (Sequence[int] | None): The binding's ``batch_fold`` ``(outer, inner)``, or None (not folded).
        rows (int): Number of streams. Defaults to 1 (the entries of one stream).
    """
    if not fold:
        return int(rows)
    outer, inner = fold
    return int(outer) * int(rows) * int(inner)


def single_input(inputs: Iterable[str], set_aside: Iterable[Optional[str]] = ()) -> Optional[str]:
    """The input a bare array stands for: the only one of ``inputs`` not in ``set_aside``, else None.

    Args:
        inputs (Iterable[str]): The input names, in order.
        set_aside (Iterable[str | None]): Names fed by someone else: the continuation input, shared inputs
            (None entries are ignored).
    """
    aside = {name for name in set_aside if name is not None}
    left = [name for name in inputs if name not in aside]
    return left[0] if len(left) == 1 else None
