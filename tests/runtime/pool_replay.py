"""Random interleavings of StreamPool calls from many threads, checked against solo Sessions.

Each worker thread owns the streams it opens (ids are never reused) and steps, resets, snapshots,
moves (snapshot -> bytes -> close -> restore under a new id) and closes them in random order; a chaos
thread closes other workers' streams and calls ``expire``; streams left idle are released by the idle
timeout through a slow, sometimes failing ``on_expire``; the Session's step, reset and write_state fail
at random (injected ``EngineError``) and some frames are malformed. A stream closed by someone else
just ends (its owner gets a ``StateError``). Afterwards every stream's history (frames since its
last reset, inherited through moves) is replayed through a batch-1 Session and each output recorded
during the run must be bit-identical. Any exception that is not an ``RnnrtError`` is a raw error.

Used by tests/runtime/test_pool_concurrency.py (seconds) and tests/hostile/test_fuzz.py (``make fuzz``).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from typing import Any

import numpy as np

import rnnrt
from rnnrt.errors import EngineError, RnnrtError, StateError
from rnnrt.runtime.pool import StreamPool, StreamState


@dataclasses.dataclass
class Report:
    steps: int = 0            # successful pool.step calls
    checked: int = 0          # stream outputs compared with a solo replay
    failures: int = 0         # typed errors raised to the workers (injected or by contract)
    injected: int = 0         # injected Session failures
    expired: int = 0
    moves: int = 0
    raw_errors: list = dataclasses.field(default_factory=list)
    mismatches: list = dataclasses.field(default_factory=list)


class _Flaky:
    """Makes a Session's step/reset/write_state fail at random (before touching anything)."""

    def __init__(self, session: Any, rng: random.Random, rate: float, report: Report) -> None:
        self.lock = threading.Lock()
        self.rng, self.rate, self.report = rng, rate, report
        for name in ("step", "reset", "write_state"):
            setattr(session, name, self.wrap(getattr(session, name), name))

    def wrap(self, fn: Any, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                fail = self.rng.random() < self.rate
                pause = self.rng.random() < 0.05
                if fail:
                    self.report.injected += 1
            if pause:
                time.sleep(0.002)  # widen the window between a step's plan and its commit
            if fail:
                raise EngineError(f"injected failure of Session.{name}")
            return fn(*args, **kwargs)

        return call


def replay_interleavings(path: Any, seed: int, seconds: float, workers: int = 4, capacity: int = 6,
                         fail_rate: float = 0.08) -> Report:
    report = Report()
    rng = random.Random(seed)
    histories: dict[str, list] = {}   # stream id -> [("reset",) | ("step", frame, output)], kept after close
    live: set[str] = set()             # the streams their owner believes open
    lock = threading.Lock()
    counter = iter(range(10**9))

    def new_id(owner: int) -> str:
        with lock:
            return f"w{owner}-{next(counter)}"

    def on_expire(_sid: Any) -> None:
        with lock:
            report.expired += 1
            r = rng.random()
        time.sleep(r * 0.004)
        if r < 0.2:
            raise RuntimeError("on_expire failed (injected)")

    session = rnnrt.load(path, backend="onnxruntime", batch_size=capacity, threads=1)
    _Flaky(session, random.Random(seed + 1), fail_rate, report)
    pool = StreamPool(session, idle_timeout=0.05, on_expire=on_expire)
    deadline = time.monotonic() + seconds
    stop = threading.Event()

    def raw(err: BaseException) -> None:
        with lock:
            report.raw_errors.append(f"{type(err).__name__}: {err}")

    def worker(k: int) -> None:
        wr = random.Random(seed * 100 + k)
        mine: list[str] = []
        try:
            while time.monotonic() < deadline and not stop.is_set():
                mine = [sid for sid in mine if sid in live]
                action = wr.choice(["open", "step", "step", "step", "step", "reset", "move", "snapshot", "close",
                                    "idle", "bad"])
                try:
                    if action == "open" or not mine:
                        sid = new_id(k)
                        pool.open(sid)
                        histories[sid] = [("reset",)]
                        live.add(sid)
                        mine.append(sid)
                    elif action in ("step", "bad"):
                        some = wr.sample(mine, wr.randint(1, len(mine)))
                        frames = {sid: np.float32(wr.uniform(-1, 1)) * np.ones((1, 1, 5), np.float32)
                                  + np.arange(5, dtype=np.float32) * np.float32(wr.random()) for sid in some}
                        if action == "bad":
                            frames[some[0]] = np.zeros((1, 1, 4), np.float32)
                        outs = pool.step(frames)
                        with lock:
                            report.steps += 1
                        for sid in some:
                            histories[sid].append(("step", frames[sid], outs[sid]["lstm1"].copy()))
                    elif action == "reset":
                        sid = wr.choice(mine)
                        pool.reset(sid)
                        histories[sid].append(("reset",))
                    elif action == "snapshot":
                        sid = wr.choice(mine)
                        state = pool.snapshot(sid)
                        steps = sum(1 for e in _since_reset(histories[sid]) if e[0] == "step")
                        if state.steps != steps or state.at_start != (steps == 0):
                            with lock:
                                report.mismatches.append(f"{sid}: snapshot steps={state.steps} "
                                                         f"at_start={state.at_start}, history has {steps} steps")
                    elif action == "move":
                        sid = wr.choice(mine)
                        blob = pool.snapshot(sid).to_bytes()
                        pool.close(sid)
                        live.discard(sid)
                        new = new_id(k)
                        pool.restore(new, StreamState.from_bytes(blob))
                        histories[new] = list(histories[sid])
                        live.add(new)
                        mine.append(new)
                        with lock:
                            report.moves += 1
                    elif action == "close":
                        sid = wr.choice(mine)
                        pool.close(sid)
                        live.discard(sid)
                    else:
                        time.sleep(wr.random() * 0.08)  # long enough, at times, for the idle timeout
                except RnnrtError as err:
                    with lock:
                        report.failures += 1
                    if isinstance(err, StateError):
                        for sid in list(mine):
                            if sid not in pool:
                                live.discard(sid)  # closed by chaos, expired, or a failed restore
        except BaseException as err:  # noqa: BLE001 - the point of the harness
            raw(err)

    def chaos() -> None:
        cr = random.Random(seed * 7)
        try:
            while time.monotonic() < deadline and not stop.is_set():
                time.sleep(cr.random() * 0.01)
                if cr.random() < 0.5:
                    pool.expire()
                else:
                    ids = list(pool)
                    if ids:
                        pool.close(cr.choice(ids), missing_ok=True)
        except BaseException as err:  # noqa: BLE001
            raw(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)] + [threading.Thread(target=chaos)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
            if t.is_alive():
                stop.set()
                raw(TimeoutError(f"{t.name} still running: a deadlock?"))
    finally:
        stop.set()
        session.close()
    _check(path, histories, report)
    return report


def _since_reset(history: list) -> list:
    last = max(i for i, e in enumerate(history) if e[0] == "reset")
    return history[last:]


def _check(path: Any, histories: dict, report: Report) -> None:
    """Replays every recorded history, also of the streams closed since."""
    with rnnrt.load(path, backend="onnxruntime", batch_size=1, threads=1) as solo:
        for sid, history in histories.items():
            for i, event in enumerate(history):
                if event[0] == "reset":
                    solo.reset()
                    continue
                got = solo.step(event[1])["lstm1"]
                report.checked += 1
                if got.tobytes() != event[2].tobytes():
                    report.mismatches.append(f"{sid} event {i}: {np.abs(got - event[2]).max()}")
                    break
