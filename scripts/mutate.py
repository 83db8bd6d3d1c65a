"""Mutation testing of the state-handling code with mutmut, module by module, each with its fast tests.

For each module a fresh copy of the project (rnnrt/, tests/, pyproject.toml and a link to ../shared) is made
under ``--work`` (default: build/mutate/, ignored by git), with a ``setup.cfg`` that tells mutmut to mutate
only that module and to run only that module's test selection. mutmut maps every test to the functions it
calls, so each mutant runs only the tests that reach it (seconds per mutant). At the end the score per
module and every surviving mutant are printed (``mutmut show NAME`` in ``WORK/MODULE`` shows its diff).

Usage (``make mutate`` runs the first form; ``MUTATE_JOBS``/``MUTATE_MODULES`` pass ``--jobs``/modules)::

    python scripts/mutate.py [--jobs N] [MODULE ...]
    python scripts/mutate.py --list

The score is killed / (killed + survived): mutants that time out count as killed (the test run noticed),
mutants no selected test reaches count as survivors. docs/testing.md says which survivors are equivalent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]

# module name -> (file to mutate, fast test selection: pytest arguments)
MODULES: dict[str, tuple[str, list[str]]] = {
    "memory": ("rnnrt/runtime/memory.py", ["tests/runtime/test_session.py", "tests/runtime/test_state_rules.py",
                                           "tests/runtime/test_session_gpu.py", "-m", "not gpu"]),
    "host": ("rnnrt/runtime/host.py", ["tests/runtime/test_state_rules.py", "tests/runtime/test_slots.py",
                                       "tests/runtime/test_session.py", "tests/runtime/test_chunk.py",
                                       "tests/runtime/test_host_executor.py", "tests/runtime/test_misuse.py"]),
    "device": ("rnnrt/runtime/device.py", ["tests/runtime/test_session_gpu.py", "tests/runtime/test_state_rules.py",
                                           "tests/test_cudasim.py", "tests/runtime/test_device_rows.py",
                                           "tests/runtime/test_device_checks.py", "-m", "not gpu"]),
    "session": ("rnnrt/runtime/session.py", ["tests/runtime/test_session.py", "tests/runtime/test_slots.py",
                                             "tests/runtime/test_misuse.py", "tests/runtime/test_chunk.py",
                                             "tests/runtime/test_state_rules.py", "tests/runtime/test_pool.py",
                                             "tests/runtime/test_pool_checks.py", "tests/runtime/test_host_executor.py",
                                             "tests/runtime/test_host_fast.py", "tests/runtime/test_device_rows.py",
                                             "tests/runtime/test_snapshot_identity.py",
                                             "tests/runtime/test_snapshot_limits.py", "tests/runtime/test_verify.py",
                                             "tests/runtime/test_session_gpu.py",
                                             "tests/runtime/test_session_checks.py", "-m", "not gpu"]),
    "pool": ("rnnrt/runtime/pool.py", ["tests/runtime/test_pool.py", "tests/runtime/test_pool_shared.py",
                                       "tests/runtime/test_pool_checks.py", "tests/runtime/test_state_rules.py",
                                       "tests/runtime/test_misuse.py", "tests/runtime/test_snapshot_identity.py",
                                       "tests/runtime/test_slots.py", "tests/runtime/test_chunk.py",
                                       "tests/runtime/test_batcher_blocks.py",
                                       "tests/runtime/test_session_gpu.py::test_step_slots_on_folded_rows",
                                       "-m", "not gpu"]),
    "snapshot": ("rnnrt/runtime/snapshot.py", ["tests/runtime/test_snapshot_identity.py", "tests/runtime/test_pool.py",
                                               "tests/runtime/test_state_rules.py", "tests/runtime/test_misuse.py",
                                               "tests/hostile/test_fuzz.py::test_fuzz_stream_state_bytes",
                                               "tests/runtime/test_snapshot_integrity.py",
                                               "tests/runtime/test_snapshot_limits.py"]),
    "recurrent": ("rnnrt/importers/caffe/layers/recurrent.py", ["tests/importers/caffe/test_recurrent.py",
                                                                "tests/importers/caffe/test_recurrent_checks.py",
                                                                "tests/importers/caffe/test_golden.py"]),
}


def _prepare(work: Path, name: str) -> Path:
    """A fresh copy of the project for one module, with its mutmut configuration."""
    path, selection = MODULES[name]
    root = work / name
    if root.exists():
        shutil.rmtree(root)
    proj = root / "project"
    proj.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for sub in ("rnnrt", "tests"):
        shutil.copytree(REPO / sub, proj / sub, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", proj / "pyproject.toml")
    if (REPO.parent / "shared").exists():
        (root / "shared").symlink_to(REPO.parent / "shared")  # tests find ../shared next to the project
        (proj / "shared").symlink_to(REPO.parent / "shared")  # and next to mutants/
    cfg = ["[mutmut]", "source_paths=rnnrt", f"only_mutate={path}", "also_copy=", "    tests", "    pyproject.toml",
           "pytest_add_cli_args=", "    -p", "    no:cacheprovider", "    -q",
           "pytest_add_cli_args_test_selection="] + [f"    {a}" for a in selection]
    (proj / "setup.cfg").write_text("\n".join(cfg) + "\n")
    # pyproject's [tool.pytest.ini_options] stays; a [tool.mutmut] section there would win over setup.cfg.
    return proj


def _results(proj: Path) -> dict[str, str]:
    """mutant name -> status, from ``mutmut results --all true``."""
    proc = subprocess.run(MUTMUT + ["results", "--all", "true"], cwd=proj, capture_output=True, text=True)
    out = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*(\S+):\s*(.+)$", line)
        if m and "__mutmut_" in m.group(1):
            out[m.group(1)] = m.group(2).strip()
    return out


def run(name: str, work: Path, jobs: int, max_seconds: float | None = None, diffs: Path | None = None) -> dict:
    proj = _prepare(work, name)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the tests must import the mutated copy, never the source tree
    env["PYTEST_DEBUG_TEMPROOT"] = str(work / name / "tmp")
    (work / name / "tmp").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(MUTMUT + ["run", "--max-children", str(jobs)], cwd=proj, env=env,
                              capture_output=True, text=True, timeout=max_seconds)
        log, returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:  # what ran so far is in mutmut's records; the rest is "not checked"
        log = f"{err.stdout or ''}{err.stderr or ''}\nstopped after {max_seconds} s (--max-seconds)\n"
        log, returncode = (log.decode(errors="replace") if isinstance(log, bytes) else log), None
    secs = time.perf_counter() - t0
    (work / name / "mutmut.log").write_text(log)
    results = _results(proj)
    counts: dict[str, int] = {}
    for status in results.values():
        counts[status] = counts.get(status, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    survived = sorted(m for m, s in results.items() if s in ("survived", "no tests"))
    total = killed + len(survived)
    if diffs is not None:
        diffs.mkdir(parents=True, exist_ok=True)
        shown = [subprocess.run(MUTMUT + ["show", m], cwd=proj, capture_output=True, text=True).stdout
                 for m in survived]
        (diffs / f"{name}.diff").write_text("\n".join(shown))
    return {"module": name, "file": MODULES[name][0], "seconds": round(secs), "counts": counts,
            "killed": killed, "survived": survived, "score": (killed / total if total else None),
            "returncode": returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help=f"modules (default: all): {', '.join(MODULES)}")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATE_JOBS", "0") or 0) or os.cpu_count(),
                    help="mutants run in parallel (default: $MUTATE_JOBS, else the CPU count)")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "mutate", help="work folder (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--max-seconds", type=float, help="stop each module's run after this long (partial score)")
    ap.add_argument("--diffs", type=Path, help="write each module's surviving mutants' diffs to DIR/MODULE.diff")
    ap.add_argument("--list", action="store_true", help="list the modules and their test selections")
    args = ap.parse_args()
    if args.list:
        for name, (path, sel) in MODULES.items():
            print(f"{name:10s} {path}  <- {' '.join(sel)}")
        return
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        raise SystemExit(f"unknown modules {unknown}; known: {', '.join(MODULES)}")
    args.work = args.work.resolve()  # mutmut runs the tests from inside mutants/: every path must be absolute
    args.work.mkdir(parents=True, exist_ok=True)
    reports = []
    for name in args.modules or list(MODULES):
        rep = run(name, args.work, args.jobs, args.max_seconds, args.diffs)
        reports.append(rep)
        score = "n/a" if rep["score"] is None else f"{100 * rep['score']:.1f} %"
        print(f"{name}: {rep['file']}: {score} killed ({rep['killed']} of {rep['killed'] + len(rep['survived'])}; "
              f"{rep['counts']}) in {rep['seconds']} s", flush=True)
        if rep["returncode"] not in (0, None) and not rep["counts"]:
            print(f"  mutmut failed (exit {rep['returncode']}): see {args.work / name / 'mutmut.log'}")
        if rep["survived"]:
            print(f"  survivors (diff: cd {args.work / name / 'project'} && python -m mutmut show NAME):")
        for m in rep["survived"]:
            print(f"    {m}")
        if args.json:  # after every module: a stopped run keeps what finished
            args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
