"""Plants each bug of issue 23 in a copy of the project, runs the CPU tests that guard it, and reports which fail.

Every planted bug must fail at least one test; the table it prints is the one in docs/testing.md. The
source tree is never touched: each bug goes into a fresh copy (rnnrt/, tests/, pyproject.toml) in a
temporary folder, next to a link to ../shared.

Usage::

    python scripts/plant_bugs.py            # every bug
    python scripts/plant_bugs.py 3 7        # bugs 3 and 7
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The CPU tests that guard the state code: what CI runs on every change.
GUARDS = ["tests/runtime", "tests/engines/test_onnxruntime.py", "tests/test_cuda.py", "tests/test_cudasim.py"]

# (description, file, the exact text, its buggy replacement)
BUGS = [
    ("HostArena.zero_rows zeroes only the first listed slot", "rnnrt/runtime/host.py",
     "view[rows[name].index(slots)] = 0", "view[rows[name].index(slots[:1])] = 0"),
    ("the device executor's finish() does not synchronise", "rnnrt/runtime/device.py",
     "        try:\n            self._stream.synchronize()\n        finally:\n            if self._pending is handle:",
     "        try:\n            pass\n        finally:\n            if self._pending is handle:"),
    ("no wait_event on a device input's producer stream", "rnnrt/runtime/device.py",
     "                stream.wait_event(self._event)", "                pass"),
    ("a new DeviceArena is not zeroed", "rnnrt/runtime/device.py",
     "        self._blocks: dict[tuple, tuple] = {}  # (id(slots), id(source arena)) -> (slots, source, prepared copies)\n"
     "        self.zero()",
     "        self._blocks: dict[tuple, tuple] = {}  # (id(slots), id(source arena)) -> (slots, source, prepared copies)"),
    ("DeviceArena.zero_rows zeroes only the first run of slots", "rnnrt/runtime/device.py",
     "            for a, b in spans:", "            for a, b in spans[:1]:"),
    ("H2D and D2H copy kinds swapped", "rnnrt/runtime/device.py",
     'cuda.memcpy_async(*io.h2d, "h2d", stream)', 'cuda.memcpy_async(*io.h2d, "d2h", stream)'),
    ("off-by-one in the row copies (RowCopies: destination row + 1)", "rnnrt/runtime/device.py",
     "self.dsts.append((dst + o * dpitch + d0 * inner).ravel())",
     "self.dsts.append((dst + o * dpitch + (d0 + 1) * inner).ravel())"),
    ("off-by-one in the arena row copies (one row too many per run)", "rnnrt/runtime/device.py",
     "            sizes = (lengths * inner).ravel()", "            sizes = ((lengths + 1) * inner).ravel()"),
    ("a copy 64 bytes past a buffer (state download)", "rnnrt/runtime/device.py",
     'self._cuda.memcpy_async(self._mirror.ptr, self.buffer.ptr, self.nbytes, "d2h", self.stream)',
     'self._cuda.memcpy_async(self._mirror.ptr, self.buffer.ptr, self.nbytes + 64, "d2h", self.stream)'),
    ("the ORT engine returns the previous step's outputs", "rnnrt/engines/onnxruntime.py",
     "            values = run(self._output_names, feeds)",
     "            now = run(self._output_names, feeds)\n"
     "            values, self._prev = getattr(self, '_prev', None) or now, now"),
    ("the pool skips one slot's reset", "rnnrt/runtime/pool.py",
     "        self.session.reset(slots=pending)", "        self.session.reset(slots=pending[1:])"),
]


def _copy(dst: Path) -> Path:
    repo = dst / "repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("rnnrt", "tests", "benchmarks"):  # a test may read a benchmark (batcher_profile)
        shutil.copytree(REPO / name, repo / name, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", repo / "pyproject.toml")
    if (REPO.parent / "shared").exists():
        (dst / "shared").symlink_to(REPO.parent / "shared")
    return repo


def plant(index: int, tests: list[str]) -> tuple[list[str], int, float]:
    """Plants bug ``index`` in a copy, runs ``tests``; returns (failing test ids, pytest exit code, seconds)."""
    _, path, old, new = BUGS[index]
    with tempfile.TemporaryDirectory(prefix=f"plant{index + 1}-") as tmp:
        repo = _copy(Path(tmp))
        target = repo / path
        text = target.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"bug {index + 1}: the text to replace occurs {text.count(old)} times in {path}")
        target.write_text(text.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(repo), PYTEST_DEBUG_TEMPROOT=tmp)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "--maxfail=3",
                               *tests], cwd=repo, env=env, capture_output=True, text=True)
        failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
        return failed, proc.returncode, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bugs", nargs="*", type=int, help="1-based bug numbers (default: all)")
    ap.add_argument("--tests", nargs="+", default=GUARDS, help="test paths to run (default: %(default)s)")
    args = ap.parse_args()
    chosen = [b - 1 for b in args.bugs] or list(range(len(BUGS)))
    print("| # | planted bug | caught by (first failing tests) |")
    print("|---|---|---|")
    missed = []
    for i in chosen:
        failed, rc, secs = plant(i, args.tests)
        if rc not in (0, 1):  # not a failing test: pytest could not run them (collection error, usage)
            print(f"| {i + 1} | {BUGS[i][0]} | **pytest exit code {rc}: the tests did not run** |", flush=True)
            missed.append(i + 1)
            continue
        if not failed:
            missed.append(i + 1)
        shown = ", ".join(f"`{f}`" for f in failed) if failed else "**nothing failed**"
        print(f"| {i + 1} | {BUGS[i][0]} | {shown} |", flush=True)
    if missed:
        raise SystemExit(f"bugs {missed} passed every test")


if __name__ == "__main__":
    main()
