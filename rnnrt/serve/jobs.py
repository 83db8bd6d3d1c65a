"""A request as the served model handles it: each stream's part (:class:`Job`), a multi-stream request
(:class:`Carrier`) and where the outputs of a request go (:class:`Sink`). See :mod:`rnnrt.serve.backend`."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["Carrier", "Job", "Sink"]


class Sink:
    """Where the outputs of a request go: one ``[frames, *binding shape with batch 1]`` array per output."""

    __slots__ = ("total", "buffers", "zero", "rows_views")

    def __init__(self, total: int, zero: bool) -> None:
        self.total = total
        self.buffers: Optional[dict[str, np.ndarray]] = None
        self.zero = zero
        self.rows_views: Optional[list] = None  # per output: (name, batch axis, the buffer without its 1 there)

    def put_chunk(self, jobs: list, outs: dict, axes: dict) -> None:
        """A chunk's outputs ``[K, *output shape with one row per job]``: row i's K frames go to
        ``jobs[i].offset ...`` (the jobs whose sink this is, in their row order ``jobs[i].row``)."""
        views = self.rows_views
        if views is None:  # the first write allocates: one [frames, *binding shape with batch 1] array per output
            alloc = np.zeros if self.zero else np.empty
            self.buffers = {n: alloc((self.total,) + v.shape[1:1 + axes[n]] + (1,) + v.shape[2 + axes[n]:], v.dtype)
                            for n, v in outs.items()}
            # [frames, *shape without the batch axis]: frame k of row i goes to index offset_i + k.
            views = self.rows_views = [(n, axes[n], b.reshape((self.total,) + b.shape[1:1 + axes[n]] + b.shape[2 + axes[n]:]))
                                       for n, b in self.buffers.items()]
        count = len(next(iter(outs.values())))
        first = jobs[0].offset
        # Rows in order at offsets first, first + K, ...: one assignment of [n, K, ...] per output.
        runs = all(job.offset == first + i * count and job.row == jobs[0].row + i for i, job in enumerate(jobs))
        for name, axis, view in views:
            per_row = np.moveaxis(outs[name], 1 + axis, 0)  # [n rows, K, *shape without the batch axis]
            if runs:
                rows = per_row[jobs[0].row:jobs[0].row + len(jobs)]
                view[first:first + len(jobs) * count] = rows.reshape((-1,) + rows.shape[2:])
            else:
                for job in jobs:
                    view[job.offset:job.offset + count] = per_row[job.row]


class Job:
    """One stream's part of a request as the model handles it."""

    __slots__ = ("index", "request", "rid", "cid", "start", "end", "command", "state", "arrays", "count", "error",
                 "key", "sink", "offset", "row", "carrier")

    def __init__(self, index: int, request: Any, rid: str) -> None:
        self.index = index
        self.request = request
        self.rid = rid
        self.cid: Any = None
        self.start = self.end = False
        self.command: Optional[str] = None
        self.state: Optional[bytes] = None
        self.arrays: dict[str, np.ndarray] = {}  # per data input: [K, *binding shape with batch 1] (views)
        self.count = 0  # K: the frames of this stream in the request
        self.error: Optional[BaseException] = None
        self.key: tuple = ()  # K and the frames' inputs, shapes and dtypes (jobs with the same key step together)
        self.sink: Optional[Sink] = None
        self.offset = 0
        self.row = 0  # its row in the chunk it stepped in
        self.carrier: Optional[Carrier] = None


class Carrier:
    """A multi-stream request: its streams' jobs and one sink for all of their outputs."""

    __slots__ = ("index", "rid", "jobs", "sink")

    def __init__(self, index: int, rid: str, jobs: list, sink: Sink) -> None:
        self.index = index
        self.rid = rid
        self.jobs = jobs
        self.sink = sink
