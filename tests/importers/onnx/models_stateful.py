"""Small torch models with explicit state, exported to ONNX with the legacy exporter (``dynamo=False``).

Not a test module. ``torch`` is imported lazily. Each ``export_*`` returns the file and the module.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

H = 8
I = 5


def _export(module: Any, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=17, dynamo=False)
    return path


def silero_like(out_dir: Path) -> tuple[Path, Any]:
    """``input (B, S)``, ``state (2, B, H)``, ``sr`` int64 scalar: an ``If`` on the rate picks the front end;
    an LSTMCell carries ``state -> stateN``; output ``(B, 1)`` (Silero's structure)."""
    import torch
    from torch import nn

    class Front(nn.Module):
        def __init__(self, stride: int) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, I, kernel_size=8, stride=stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(x.unsqueeze(1))).mean(dim=2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f16 = Front(4)
            self.f8 = Front(2)
            self.cell = nn.LSTMCell(I, H)
            self.head = nn.Linear(H, 1)

        def forward(self, x: torch.Tensor, state: torch.Tensor, sr: torch.Tensor):
            if bool(sr == 16000):
                f = self.f16(x)
            else:
                f = self.f8(x)
            h, c = self.cell(f, (state[0], state[1]))
            return torch.sigmoid(self.head(h)), torch.stack([h, c])

    torch.manual_seed(0)
    net = Net().eval()
    scripted = torch.jit.script(net)
    path = _export(scripted, (torch.zeros(2, 96), torch.zeros(2, 2, H), torch.tensor(16000)), out_dir / "silero_like.onnx",
                   ["input", "state", "sr"], ["output", "stateN"],
                   {"input": {0: "batch", 1: "samples"}, "state": {1: "batch"}, "output": {0: "batch"}, "stateN": {1: "batch"}})
    return path, net


def cell_loop(out_dir: Path, kind: str = "LSTM") -> tuple[Path, Any]:
    """An ``LSTMCell``/``GRUCell`` looped over the frames of ``x (T, B, I)`` inside the model, with
    ``h_in``(/``c_in``) inputs and ``h_out``(/``c_out``) outputs and a Linear head ``y (T, B, 3)``."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.LSTMCell(I, H) if kind == "LSTM" else nn.GRUCell(I, H)
            self.head = nn.Linear(H, 3)

        def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
            ys = []
            for t in range(x.shape[0]):
                if c is not None:
                    h, c = self.cell(x[t], (h, c))
                else:
                    h = self.cell(x[t], h)
                ys.append(self.head(h))
            y = torch.stack(ys)
            return (y, h, c) if c is not None else (y, h)

    torch.manual_seed(1)
    net = Net().eval()
    args = (torch.zeros(1, 2, I), torch.zeros(2, H)) + ((torch.zeros(2, H),) if kind == "LSTM" else ())
    names = ["x", "h_in"] + (["c_in"] if kind == "LSTM" else [])
    outs = ["y", "h_out"] + (["c_out"] if kind == "LSTM" else [])
    dyn = {n: {0: "batch"} for n in names[1:] + outs[1:]}
    dyn.update({"x": {1: "batch"}, "y": {1: "batch"}})
    # Traced with one frame: one call is one frame (the loop body appears once).
    return _export(net, args, out_dir / f"cell_{kind}.onnx", names, outs, dyn), net


def two_groups(out_dir: Path) -> tuple[Path, Any]:
    """Two independent GRUCells: ``a (B, I) + a_state -> a_state_out``, ``b (B, I) + b_state -> b_state_out``."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ca = nn.GRUCell(I, H)
            self.cb = nn.GRUCell(I, H + 2)
            self.head = nn.Linear(2 * H + 2, 2)

        def forward(self, a, a_state, b, b_state):
            ha = self.ca(a, a_state)
            hb = self.cb(b, b_state)
            return self.head(torch.cat([ha, hb], dim=1)), ha, hb

    torch.manual_seed(2)
    net = Net().eval()
    args = (torch.zeros(2, I), torch.zeros(2, H), torch.zeros(2, I), torch.zeros(2, H + 2))
    names = ["a", "a_state", "b", "b_state"]
    outs = ["y", "a_state_out", "b_state_out"]
    return _export(net, args, out_dir / "two_groups.onnx", names, outs, {n: {0: "batch"} for n in names + outs}), net


def fixed_t(out_dir: Path, steps: int = 6) -> tuple[Path, Any]:
    """``nn.LSTM`` + Linear exported with a fixed time axis of ``steps`` (dynamic batch)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(I, H)
            self.head = nn.Linear(H, 3)

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.head(y)

    torch.manual_seed(3)
    net = Net().eval()
    return _export(net, (torch.zeros(steps, 2, I),), out_dir / "fixed_t.onnx", ["x"], ["y"],
                   {"x": {1: "batch"}, "y": {1: "batch"}}), net


def time_mixing(out_dir: Path) -> tuple[Path, Any]:
    """``nn.GRU`` then a Conv1d with kernel 3 along time: streaming cannot equal the whole sequence."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(I, H)
            self.conv = nn.Conv1d(H, 3, kernel_size=3, padding=1)

        def forward(self, x):
            y, _ = self.rnn(x)                   # (T, B, H)
            return self.conv(y.permute(1, 2, 0)).permute(2, 0, 1)

    torch.manual_seed(4)
    net = Net().eval()
    return _export(net, (torch.zeros(5, 2, I),), out_dir / "time_mixing.onnx", ["x"], ["y"],
                   {"x": {0: "time", 1: "batch"}, "y": {0: "time", 1: "batch"}}), net


def state_is_output(out_dir: Path) -> tuple[Path, Any]:
    """A GRU encoder whose only output is its final state ``hn`` (``h0`` in): the state is the result."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(I, H)

        def forward(self, x, h0):
            _, hn = self.rnn(x, h0)
            return hn

    torch.manual_seed(5)
    net = Net().eval()
    return _export(net, (torch.zeros(3, 2, I), torch.zeros(1, 2, H)), out_dir / "state_out.onnx", ["x", "h0"], ["hn"],
                   {"x": {0: "time", 1: "batch"}, "h0": {1: "batch"}, "hn": {1: "batch"}}), net


def scripted_loop(out_dir: Path) -> tuple[Path, Any]:
    """A scripted loop over the frames of ``x (T, B, I)`` with ``nn.LSTM`` steps inside: the export is an
    ONNX ``Loop`` whose body holds the LSTM node; ``h_in/c_in -> h_out/c_out`` carry its state."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(I, H)
            self.head = nn.Linear(H, 3)

        def forward(self, x: torch.Tensor, h_in: torch.Tensor, c_in: torch.Tensor):
            h, c = h_in, c_in
            ys = []
            for t in range(x.shape[0]):
                y, (h, c) = self.rnn(x[t:t + 1], (h, c))
                ys.append(self.head(y))
            return torch.cat(ys, 0), h, c

    torch.manual_seed(6)
    net = Net().eval()
    scripted = torch.jit.script(net)
    args = (torch.zeros(2, 2, I), torch.zeros(1, 2, H), torch.zeros(1, 2, H))
    dyn = {"x": {0: "time", 1: "batch"}, "y": {0: "time", 1: "batch"}, "h_in": {1: "batch"}, "c_in": {1: "batch"},
           "h_out": {1: "batch"}, "c_out": {1: "batch"}}
    return _export(scripted, args, out_dir / "scripted_loop.onnx", ["x", "h_in", "c_in"], ["y", "h_out", "c_out"], dyn), net
