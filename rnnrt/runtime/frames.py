"""Frames and slot rows: the one frame check, the continuation fill and the slot/row arithmetic of the runtime.

Used by :class:`rnnrt.runtime.session.Session` (through its executors) and by
:class:`rnnrt.runtime.pool.StreamPool`, which checks each stream's frame with :func:`check_host` as it packs
the frames into one batch (so a bad frame names its stream); no other code checks a frame.

- :class:`InputSpec`: a user input as the runtime checks it: dtype, shape with the batch dims as a
  symbol (a step of ``n`` slots takes ``n`` rows), other dynamic dims by name.
- :func:`check_host` / :func:`check_device`: one value against its spec (dtype with safe casts only,
  shape, zero-length dims refused, placement); :func:`check_placement`: the ``input_memory`` policy.
- :class:`ContinuationFill`: the auto-filled continuation input for the stepped slots.
- :func:`slot_array`: validates a ``slots`` argument; :class:`RowLayout`: where a slot's rows are along a
  tensor's batch axis (the one place that maps slots to rows: numpy indices for the host, runs of
  consecutive slots for 2-D device copies).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import numpy as np

from rnnrt.errors import BindingError, ConfigError, fmt
from rnnrt.ir.streams import fold_entries

__all__ = ["ContinuationFill", "InputSpec", "RowLayout", "check_device", "check_host", "check_out", "check_placement", "np_dtype",
           "put_rows", "runs", "slot_array", "stack_frame", "stream_shape", "take_rows"]

BATCH = -1
"""Marks a batch dim in :attr:`InputSpec.shape` (its size is the number of stepped slots)."""


def np_dtype(name: str) -> np.dtype:
    """The numpy dtype of a config dtype name (bfloat16 has none on the host)."""
    if name == "bfloat16":
        raise ConfigError(fmt("dtype 'bfloat16'", "Has no numpy equivalent on the host", "Use float32 or float16 bindings."))
    return np.dtype(name)


class InputSpec:
    """A user input as the runtime checks it.

    Attributes:
        name (str): The input name.
        dtype (np.dtype): Its dtype.
        shape (tuple): Per dim: an int (fixed), :data:`BATCH` (the batch: as many rows as slots
            stepped), or None (another dynamic dim, named in :attr:`symbols`).
        symbols (tuple): Per dim, the name of a non-batch dynamic dim, else None.
        batch_axis (int | None): The slot axis, None when the input is shared by every slot.
        fold (tuple[int, int] | None): The config's ``batch_fold``: the batch axis holds
            ``outer * n * inner`` entries for ``n`` rows (e.g. T*N time-major frame rows), entry
            ``(o*n + k)*inner + i`` belonging to row ``k``; None when it holds the rows alone.
    """

    __slots__ = ("name", "dtype", "shape", "symbols", "batch_axis", "fold", "per_row")

    def __init__(self, name: str, dtype: np.dtype, shape: list, batch_symbols: set, batch_axis: Optional[int],
                 fixed_batch: Optional[int] = None, fold: Optional[tuple] = None) -> None:
        self.name = name
        self.dtype = dtype
        self.batch_axis = batch_axis
        self.fold = tuple(fold) if fold else None
        # Entries per row on the batch axis (1 unless folded).
        self.per_row = fold_entries(self.fold)
        dims: list = []
        symbols: list = []
        for i, d in enumerate(shape):
            if (isinstance(d, str) and d in batch_symbols) or (i == batch_axis and d == fixed_batch):
                dims.append(BATCH)
                symbols.append(None)
            elif isinstance(d, str):
                dims.append(None)
                symbols.append(d)
            else:
                dims.append(int(d))
                symbols.append(None)
        self.shape = tuple(dims)
        self.symbols = tuple(symbols)

    def batch_dim(self, axis: int, n: int) -> int:
        """The size of batch dim ``axis`` for ``n`` rows (``outer * n * inner`` on a folded batch axis)."""
        return n * self.per_row if axis == self.batch_axis else n

    def display(self, n: int) -> list:
        return [self.batch_dim(i, n) if d == BATCH else (s if d is None else d)
                for i, (d, s) in enumerate(zip(self.shape, self.symbols))]

    def full_shape(self, n: int, sizes: Mapping[str, int]) -> Optional[tuple]:
        """The shape for ``n`` rows with the dynamic dims in ``sizes``; None when a dim is unknown."""
        out = []
        for i, (d, s) in enumerate(zip(self.shape, self.symbols)):
            if d == BATCH:
                out.append(self.batch_dim(i, n))
            elif d is None:
                if s not in sizes:
                    return None
                out.append(sizes[s])
            else:
                out.append(d)
        return tuple(out)


def check_shape(spec: InputSpec, shape: tuple, sizes: dict, n: int, chunk: bool = False) -> None:
    """Checks a shape against the spec for ``n`` rows; records dynamic dims in ``sizes``. With ``chunk``
    the shape has a leading frame axis (``Session.step_chunk``) and the rest is checked."""
    step_shape = shape[1:] if chunk else shape
    ok = len(step_shape) == len(spec.shape)
    if ok:
        for i, (got, want, sym) in enumerate(zip(step_shape, spec.shape, spec.symbols)):
            if want is None:
                seen = sizes.setdefault(sym, got)
                if seen != got:
                    ok = False
                    break
            elif got != (spec.batch_dim(i, n) if want == BATCH else want):
                ok = False
                break
    if not ok:
        expected = ([shape[0]] if chunk else []) + spec.display(n)
        fixed = [i for i, (got, want) in enumerate(zip(step_shape, spec.shape))
                 if len(step_shape) == len(spec.shape) and want is not None and want != BATCH and got != want]
        raise BindingError(
            fmt(f"Input {spec.name!r}", f"Received shape {tuple(shape)}"
                + (f": dim {fixed[0]} is {step_shape[fixed[0]]}, not {spec.shape[fixed[0]]}" if fixed else ""),
                f"Expected shape {expected} (" + ("frames along axis 0, " if chunk else "") + f"batch size {n})"
                + (f", dynamic dims so far {sizes}" if sizes else "") + ".")
        )
    if 0 in shape:
        raise BindingError(
            fmt(f"Input {spec.name!r}", f"Received shape {tuple(shape)} with a zero-length dim",
                "A step needs at least one element per dim (an empty chunk would advance nothing but the "
                "state); skip the step instead.")
        )


def check_host(spec: InputSpec, value: Any, sizes: dict, n: int, check_finite: bool = False,
               chunk: bool = False) -> np.ndarray:
    """One host value: dtype (safe casts only), shape, no zero-length dims; returns a C-contiguous array.
    With ``chunk`` the value has a leading frame axis (see :func:`check_shape`)."""
    if isinstance(value, np.ma.MaskedArray):
        raise BindingError(
            fmt(f"Input {spec.name!r}", "Received a masked array; its mask would be ignored",
                "Pass plain values, e.g. x.filled(0).")
        )
    if isinstance(value, np.ndarray):
        arr = value
        if arr.dtype != spec.dtype:
            if arr.dtype.kind in "iu" and spec.dtype.kind == "f":
                raise BindingError(fmt(f"Input {spec.name!r}", f"Received dtype {arr.dtype.name} (integers) for a "
                                       f"{spec.dtype.name} input", _unscaled_hint(arr.dtype, spec.dtype)))
            if not np.can_cast(arr.dtype, spec.dtype, casting="safe"):
                raise BindingError(
                    fmt(f"Input {spec.name!r}", f"Received dtype {arr.dtype.name}",
                        f"Expected dtype {spec.dtype.name} (or one that casts to it safely); cast it explicitly, "
                        f"e.g. x.astype(np.{spec.dtype.name}).")
                )
            arr = arr.astype(spec.dtype)
    else:
        try:
            arr = np.asarray(value, dtype=spec.dtype)
        except (TypeError, ValueError, OverflowError) as err:
            raise BindingError(
                fmt(f"Input {spec.name!r}", f"Cannot be converted to {spec.dtype.name}: {err}")
            ) from err
    check_shape(spec, arr.shape, sizes, n, chunk)
    if check_finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise BindingError(
            fmt(f"Input {spec.name!r}", "Holds NaN or infinite values",
                "check_finite=True refuses them; pass finite frames or load without check_finite.")
        )
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


# Full scale of integer PCM: x / scale maps it to [-1, 1).
_PCM_SCALE = {"int8": "128", "int16": "32768", "int32": "2147483648"}


def _unscaled_hint(got: np.dtype, want: np.dtype) -> str:
    """How to pass integer samples to a float input: scaled (PCM) or cast, said explicitly."""
    cast = f"x.astype(np.{want.name})"
    scale = _PCM_SCALE.get(got.name)
    if got.name == "uint8":
        scaled = f"({cast} - 128) / 128"
    elif scale is not None:
        scaled = f"{cast} / {scale}"
    else:
        return f"{got.name} is not cast silently: pass {cast}, scaled to the range the model expects."
    return (f"{got.name} is not scaled: pass {scaled} (integer PCM to [-1, 1)), or {cast} if the integers are "
            "already the values the model expects.")


def check_device(spec: InputSpec, fa: Any, sizes: dict, n: int, device_id: int) -> Any:
    """One device array (a :class:`rnnrt.cuda.ForeignArray`): exact dtype, shape, contiguity, device."""
    if fa.dtype != spec.dtype:
        raise BindingError(
            fmt(f"Input {spec.name!r}", f"Received a device array of dtype {fa.dtype.name}",
                f"Expected dtype {spec.dtype.name} exactly (device arrays are not cast).")
        )
    check_shape(spec, fa.shape, sizes, n)
    if not fa.contiguous:
        raise BindingError(
            fmt(f"Input {spec.name!r}", "Received a non-contiguous device array",
                "Pass a C-contiguous array (e.g. x.contiguous() or cupy.ascontiguousarray(x)).")
        )
    if fa.device != device_id:
        where = "host memory" if fa.device is None else f"device {fa.device}"
        raise BindingError(
            fmt(f"Input {spec.name!r}", f"Received an array in {where}",
                f"Expected an array on device {device_id}, the session's device.")
        )
    return fa


def check_placement(name: str, value: Any, on_device: bool, policy: str) -> None:
    """The ``input_memory`` policy of one input: ``"auto"``, ``"host"`` or ``"device"``."""
    if on_device and policy == "host":
        raise BindingError(
            fmt(f"Input {name!r}", f"Received a device array ({type(value).__name__})",
                "This binding takes host (numpy) arrays only (input_memory='host').")
        )
    if not on_device and policy == "device":
        raise BindingError(
            fmt(f"Input {name!r}", f"Received a host {type(value).__name__}",
                "This binding takes device arrays only (input_memory='device'): pass a CuPy/torch CUDA array.")
        )


def slot_array(slots: Any, batch_size: int, what: str, unique: bool = False) -> np.ndarray:
    """Validates a ``slots`` argument (an iterable of ints in ``[0, batch_size)``); returns an intp array.

    Raises:
        BindingError: ``slots`` is not an iterable of integers (a bare int, a 0-d array, a string ...),
            a slot is out of range, or (``unique``) a slot is listed twice.
    """
    if isinstance(slots, (str, bytes, Mapping)) or (isinstance(slots, np.ndarray) and slots.ndim != 1) or \
            not isinstance(slots, Iterable):
        raise BindingError(
            fmt(f"{what}(slots={slots!r})", f"Got a {type(slots).__name__}, not a list of slots",
                f"Pass a list of slot numbers in [0, {batch_size}), e.g. slots=[{min(1, batch_size - 1)}].")
        )
    if isinstance(slots, np.ndarray) and slots.dtype.kind in "iu":
        arr = slots.astype(np.intp, copy=False)
        bad = (arr < 0) | (arr >= batch_size)
        if bad.any():
            slot = int(arr[np.argmax(bad)])
            raise BindingError(
                fmt(f"Slot {slot!r}", f"Is not a valid slot of a session with batch size {batch_size}",
                    f"Slots are integers in [0, {batch_size}).")
            )
    else:
        index = []
        for slot in slots:
            if isinstance(slot, (bool, np.bool_)) or not isinstance(slot, (int, np.integer)) or \
                    not 0 <= slot < batch_size:
                raise BindingError(
                    fmt(f"Slot {slot!r}", f"Is not a valid slot of a session with batch size {batch_size}",
                        f"Slots are integers in [0, {batch_size}).")
                )
            index.append(int(slot))
        arr = np.asarray(index, dtype=np.intp)
    if unique and len(arr) > 1 and np.count_nonzero(np.bincount(arr, minlength=batch_size)) != len(arr):
        values, counts = np.unique(arr, return_counts=True)
        raise BindingError(
            fmt(f"{what}(slots=...)", f"Slot {int(values[np.argmax(counts > 1)])} is listed twice",
                "Each slot takes one batch row per step.")
        )
    return arr


def runs(slots: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted runs ``[a, b)`` of consecutive slots (duplicates merged)."""
    out: list[tuple[int, int]] = []
    for slot in np.unique(np.asarray(list(slots) if not isinstance(slots, np.ndarray) else slots, dtype=np.intp)):
        slot = int(slot)
        if out and out[-1][1] == slot:
            out[-1] = (out[-1][0], slot + 1)
        else:
            out.append((slot, slot + 1))
    return out


def stream_shape(shape: tuple, axis: int, fold: Optional[tuple]) -> tuple[tuple, int]:
    """``shape`` with a folded batch axis (``batch_fold`` ``(outer, inner)``) split into ``(outer, rows,
    inner)``, and the axis that then holds one index per row; ``(shape, axis)`` when not folded.

    Reshaping an array to it (a view for C-contiguous arrays) turns slot scatter/gather on a folded axis
    into plain indexing along the returned axis, on the host (numpy) and the device (:class:`RowLayout`) alike.
    """
    if fold is None:
        return tuple(shape), axis
    outer, inner = fold
    return tuple(shape[:axis]) + (outer, int(shape[axis]) // fold_entries(fold), inner) + tuple(shape[axis + 1:]), axis + 1


def take_rows(array: np.ndarray, rows: np.ndarray, axis: int, fold: Optional[tuple] = None,
              out: Optional[np.ndarray] = None) -> np.ndarray:
    """The listed rows of ``array`` along its batch ``axis`` (folded or not), as a new array (or into ``out``)."""
    if fold is None:
        return np.take(array, rows, axis=axis, out=out)
    shape, ax = stream_shape(array.shape, axis, fold)
    picked = np.take(array.reshape(shape), rows, axis=ax)
    picked = picked.reshape(picked.shape[:axis] + (-1,) + picked.shape[ax + 2:])
    if out is None:
        return picked
    np.copyto(out, picked, casting="no")
    return out


def put_rows(array: np.ndarray, rows: np.ndarray, axis: int, fold: Optional[tuple], values: np.ndarray) -> None:
    """Writes ``values`` (one row per listed slot, in order) into ``array`` at ``rows`` along ``axis``."""
    if fold is None:
        array[(slice(None),) * axis + (rows,)] = values
        return
    if not array.flags.c_contiguous:
        raise ValueError("put_rows on a folded axis needs a C-contiguous array (a reshape must be a view)")
    shape, ax = stream_shape(array.shape, axis, fold)
    view = array.reshape(shape)
    view[(slice(None),) * ax + (rows,)] = values.reshape(stream_shape(values.shape, axis, fold)[0])


class RowLayout:
    """Where slots' rows lie in one tensor (the one place that maps slots to rows).

    Row ``i`` of slot ``s`` is index ``s`` along :attr:`axis`. Host code indexes with :meth:`index`;
    device code copies with :meth:`geometry` (per run of consecutive slots, one 2-D copy of ``outer``
    rows of ``run * inner`` bytes, ``pitch`` bytes apart).
    """

    __slots__ = ("axis", "shape", "itemsize", "_geometry")

    def __init__(self, axis: int, shape: tuple, itemsize: int) -> None:
        self.axis, self.shape, self.itemsize = axis, tuple(int(d) for d in shape), int(itemsize)
        outer = 1
        for d in self.shape[:axis]:
            outer *= d
        inner = self.itemsize
        for d in self.shape[axis + 1:]:
            inner *= d
        self._geometry = (outer, inner, self.shape[axis] * inner)

    def index(self, slots: Any) -> tuple:
        """A numpy index selecting ``slots`` (an int array or a slice) along the batch axis."""
        return (slice(None),) * self.axis + (slots,)

    def take(self, array: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return np.take(array, slots, axis=self.axis)

    def put(self, array: np.ndarray, slots: Any, values: np.ndarray) -> None:
        array[self.index(slots)] = values

    def geometry(self) -> tuple[int, int, int]:
        """``(outer, inner_bytes, pitch_bytes)``: dims before the axis, bytes per row, bytes per outer step."""
        return self._geometry


class ContinuationFill:
    """The auto-filled continuation input: 1, and 0 at t=0 of each stepped slot marked as a sequence start.

    Args:
        spec (InputSpec): The continuation input.
        batch_axis (int): Its slot axis.
        time_axis (int | None): Its time axis (the 0 goes at t=0 only), or None (the whole row).
    """

    def __init__(self, spec: InputSpec, batch_axis: int, time_axis: Optional[int]) -> None:
        self.spec = spec
        self.batch_axis = batch_axis
        self.time_axis = time_axis
        self._ones: dict[tuple, np.ndarray] = {}

    def shape(self, n: int, sizes: Mapping[str, int]) -> tuple:
        shape = self.spec.full_shape(n, sizes)
        if shape is None:
            missing = next(s for d, s in zip(self.spec.shape, self.spec.symbols) if d is None and s not in sizes)
            raise BindingError(
                fmt(f"Input {self.spec.name!r}", f"Cannot be filled: its dim {missing!r} is not set by any fed input",
                    "Feed the continuation input yourself.")
            )
        return shape

    def ones(self, shape: tuple) -> np.ndarray:
        """A read-only array of ones (cached per shape)."""
        ones = self._ones.get(shape)
        if ones is None:
            ones = np.ones(shape, dtype=self.spec.dtype)
            ones.flags.writeable = False
            self._ones[shape] = ones
        return ones

    def make(self, n: int, sizes: Mapping[str, int], starts: Optional[np.ndarray]) -> np.ndarray:
        """The fill for ``n`` rows; ``starts`` (bool per row, or None) marks rows at a sequence start."""
        shape = self.shape(n, sizes)
        if starts is None or not starts.any():
            return self.ones(shape)
        cont = np.ones(shape, dtype=self.spec.dtype)
        self.zero_starts(cont, starts)
        return cont

    def zero_starts(self, cont: np.ndarray, starts: np.ndarray) -> None:
        """Writes 0 at t=0 of the rows ``starts`` marks (in place)."""
        fold = self.spec.fold
        if fold is not None and self.time_axis == self.batch_axis:
            # T*N time-major rows: t=0 of row k is entries k*inner + i, the first n*inner entries.
            shape, rows_axis = stream_shape(cont.shape, self.batch_axis, fold)
            cont.reshape(shape)[(slice(None),) * (rows_axis - 1) + (0, np.flatnonzero(starts))] = 0
            return
        index: list[Any] = [slice(None)] * cont.ndim
        index[self.batch_axis] = np.flatnonzero(starts)
        if self.time_axis is not None:
            index[self.time_axis] = 0
        cont[tuple(index)] = 0


def stack_frame(stacked: dict, k: int, count: int, outputs: Mapping[str, np.ndarray]) -> None:
    """Writes frame ``k``'s outputs of a chunk into ``stacked``: one ``[count, *shape]`` array per output,
    allocated at frame 0 (``Session.step_chunk``)."""
    for name, value in outputs.items():
        if k == 0:
            stacked[name] = np.empty((count,) + value.shape, dtype=value.dtype)
        stacked[name][k] = value


def check_out(out: Mapping[str, Any], like: Mapping[str, Any]) -> None:
    """Checks ``out=`` destinations against the outputs (name, numpy, dtype, shape, writable)."""
    for name, dst in out.items():
        ref = like.get(name)
        if ref is None:
            raise BindingError(fmt(f"out[{name!r}]", "Is not an output of the model", f"Outputs: {sorted(like)}."))
        if not isinstance(dst, np.ndarray) or dst.dtype != ref.dtype or tuple(dst.shape) != tuple(ref.shape) \
                or not dst.flags.writeable:
            got = (dst.dtype.name, dst.shape) if isinstance(dst, np.ndarray) else type(dst).__name__
            raise BindingError(fmt(f"out[{name!r}]", f"Is {got}",
                                   f"Expected a writable {np.dtype(ref.dtype).name} array of shape {tuple(ref.shape)}."))
