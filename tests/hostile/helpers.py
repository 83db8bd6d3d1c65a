"""Helpers of the bad-input suite: run a snippet in a child process under a memory cap, snapshot a folder tree."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The address-space cap of capped children. Importing rnnrt with numpy, onnx and ONNX Runtime maps
# well under 2 GiB; a reader that allocates what a hostile file claims would blow through it.
MEMORY_CAP = 3 << 30

# Run in the child: the snippet's error (if any) is reported as JSON on the last stdout line.
_WRAPPER = """
import json, sys, traceback
sys.path.insert(0, {root!r})
def _report(**kw):
    print(json.dumps(kw))
try:
    exec(compile({code!r}, "<snippet>", "exec"), {{"__name__": "__snippet__"}})
except BaseException as err:
    from rnnrt.errors import RnnrtError
    _report(ok=False, type=type(err).__name__, rnnrt=isinstance(err, RnnrtError), message=str(err),
            mro=[c.__name__ for c in type(err).__mro__])
else:
    _report(ok=True)
"""


def run_capped(code: str, *, cap: int = MEMORY_CAP, timeout: float = 120, cwd: Path | None = None) -> dict:
    """Runs ``code`` in a child Python with RLIMIT_AS = ``cap``; returns its JSON report.

    The report is ``{"ok": True}`` or ``{"ok": False, "type", "rnnrt", "message", "mro"}``; a child
    killed by the limit (or timing out) raises AssertionError with its stderr.
    """

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER.format(root=str(ROOT), code=code)],
        capture_output=True, text=True, timeout=timeout, preexec_fn=limit, cwd=str(cwd or ROOT),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"child failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size (what a command wrote)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m rnnrt.cli ARGS`` with this checkout's rnnrt first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rnnrt.cli", *args], capture_output=True, text=True, cwd=str(cwd),
                          timeout=timeout, env=env)


def input_layer(name: str, *shape: int) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


# Hypothesis profiles of the fuzzing harnesses (tests/hostile/test_fuzz.py): "ci" keeps `make test`
# at seconds per harness and is derandomized (the same examples every run); `make fuzz` selects "fuzz".
def register_fuzz_profiles() -> None:
    from hypothesis import HealthCheck, settings

    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                        HealthCheck.function_scoped_fixture])
    settings.register_profile("ci", max_examples=60, derandomize=True, **common)
    settings.register_profile("fuzz", max_examples=100_000, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
