"""Tiny torch recurrent models exported to ONNX (legacy exporter), with a torch reference.

``torch`` is imported lazily so that collecting the tests works without it (they skip).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

INPUT = 5
HIDDEN = 8
OUT = 3


@dataclasses.dataclass
class TorchRnn:
    """An exported model and the torch module it came from."""

    path: Path
    module: Any
    kind: str
    layers: int
    batch_first: bool
    state_inputs: bool
    bidirectional: bool = False

    @property
    def time_axis(self) -> int:
        return 1 if self.batch_first else 0

    def reference(self, x: np.ndarray, state: Optional[tuple] = None) -> np.ndarray:
        """Torch's full-sequence output of the head for ``x`` (zero initial state unless given)."""
        import torch

        with torch.no_grad():
            args = [torch.from_numpy(x)] + ([torch.from_numpy(s) for s in state] if state else [])
            if self.state_inputs and not state:
                args += [torch.zeros(z) for z in self.state_shapes(x)]
            y = self.module(*args)
            y = y[0] if isinstance(y, tuple) else y
            return y.numpy()

    def state_shapes(self, x: np.ndarray) -> list[tuple[int, ...]]:
        batch = x.shape[0] if self.batch_first else x.shape[1]
        d = 2 if self.bidirectional else 1
        shape = (self.layers * d, batch, HIDDEN)
        return [shape, shape] if self.kind == "LSTM" else [shape]

    def frames(self, x: np.ndarray) -> list[np.ndarray]:
        """``x`` cut into single time steps, keeping the time axis (size 1)."""
        return [np.take(x, [t], axis=self.time_axis) for t in range(x.shape[self.time_axis])]

    def sequence(self, batch: int, steps: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        shape = (batch, steps, INPUT) if self.batch_first else (steps, batch, INPUT)
        return rng.standard_normal(shape).astype(np.float32)


def _module(kind: str, layers: int, batch_first: bool, state_inputs: bool, bidirectional: bool) -> Any:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(nn, kind)(INPUT, HIDDEN, layers, batch_first=batch_first, bidirectional=bidirectional)
            self.head = nn.Linear(HIDDEN * (2 if bidirectional else 1), OUT)

        def forward(self, x: "torch.Tensor", *state: "torch.Tensor") -> Any:
            if state:
                y, st = self.rnn(x, (state[0], state[1]) if kind == "LSTM" else state[0])
                st = st if kind == "LSTM" else (st,)
                return (self.head(y),) + tuple(st)
            y, _ = self.rnn(x)
            return self.head(y)

    return Net().eval()


def export_rnn(
    out_dir: Path,
    kind: str,
    layers: int = 1,
    batch_first: bool = False,
    state_inputs: bool = False,
    bidirectional: bool = False,
    seed: int = 0,
) -> TorchRnn:
    """Exports ``nn.<kind>`` + a Linear head with dynamic time and batch axes (``dynamo=False``).

    Args:
        out_dir (Path): Where the ``.onnx`` file goes.
        kind (str): ``"LSTM"``, ``"GRU"`` or ``"RNN"``.
        layers (int): Stacked layers. Defaults to 1.
        batch_first (bool): torch's batch_first. Defaults to False.
        state_inputs (bool): Export ``h0``(``c0``) inputs and ``hn``(``cn``) outputs. Defaults to False.
        bidirectional (bool): A bidirectional layer. Defaults to False.
        seed (int): torch seed of the weights. Defaults to 0.

    Returns:
        TorchRnn: The file and the module.
    """
    import torch

    torch.manual_seed(seed)
    module = _module(kind, layers, batch_first, state_inputs, bidirectional)
    model = TorchRnn(Path(out_dir) / f"{kind}_{layers}_{int(batch_first)}_{int(state_inputs)}_{int(bidirectional)}.onnx",
                     module, kind, layers, batch_first, state_inputs, bidirectional)
    x = model.sequence(2, 4)
    names = ["x"]
    out_names = ["y"]
    args = [torch.from_numpy(x)]
    time_ax, batch_ax = (1, 0) if batch_first else (0, 1)
    dynamic = {"x": {time_ax: "time", batch_ax: "batch"}, "y": {time_ax: "time", batch_ax: "batch"}}
    if state_inputs:
        st_names = ["h0", "c0"] if kind == "LSTM" else ["h0"]
        st_out = ["hn", "cn"] if kind == "LSTM" else ["hn"]
        names += st_names
        out_names += st_out
        args += [torch.zeros(s) for s in model.state_shapes(x)]
        dynamic.update({n: {1: "batch"} for n in st_names + st_out})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), str(model.path), input_names=names, output_names=out_names,
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return model
