"""Installs the Triton Inference Server binary that ``rnnrt serve`` runs by default.

The ``nvidia-pytriton`` wheel (0.7.0) bundles a real ``tritonserver`` (Triton 2.51) with the python
backend, its python-backend stubs for Python 3.8-3.13 and the shared libraries they need. Its Python
package pins numpy < 2, so rnnrt never installs it: this module downloads the wheel without
dependencies (``pip download --no-deps``) and unpacks only the server's files::

    <home>/pytriton/tritonserver/bin/tritonserver
    <home>/pytriton/tritonserver/backends/python/{libtriton_python.so, triton_python_backend_utils.py}
    <home>/pytriton/tritonserver/python_backend_stubs/<3.x>/triton_python_backend_stub
    <home>/nvidia_pytriton.libs/*.so                    (the relative layout of the wheel is kept)

``<home>`` is ``$RNNRT_TRITON_HOME`` or ``<sys.prefix>/tritonserver`` (inside the virtual environment).

Usage::

    python -m rnnrt.serve.install                    # download and unpack (no-op when installed)
    python -m rnnrt.serve.install --wheel W.whl      # from a wheel file already at hand
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union

from rnnrt.errors import EngineError, fmt

__all__ = ["PYTRITON_VERSION", "ServerFiles", "install", "server_home", "installed"]

PYTRITON_VERSION = "0.7.0"
_PREFIXES = ("pytriton/tritonserver/", "nvidia_pytriton.libs/")
_MARKER = "INSTALLED"


def server_home() -> Path:
    """Where the embedded server lives: ``$RNNRT_TRITON_HOME`` or ``<sys.prefix>/tritonserver``."""
    env = os.environ.get("RNNRT_TRITON_HOME")
    return Path(env) if env else Path(sys.prefix) / "tritonserver"


class ServerFiles:
    """Paths of an unpacked embedded server."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "pytriton" / "tritonserver"
        self.binary = self.root / "bin" / "tritonserver"
        self.python_backend = self.root / "backends" / "python"
        self.libs = home / "nvidia_pytriton.libs"

    def stub(self, version: Optional[str] = None) -> Path:
        """The python-backend stub for a Python ``major.minor`` (default: the running one)."""
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"

    def backend_dir(self, version: Optional[str] = None) -> Path:
        """A ``--backend-directory`` whose ``python/`` holds the backend and the stub for one Python version.

        Triton looks for ``<dir>/python/libtriton_python.so`` and the stub next to it; the wheel keeps the
        stubs apart, so one folder per Python version is assembled (symlinks) on first use.
        """
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.stub(version)
        if not stub.is_file():
            raise EngineError(fmt(f"Triton python backend stub {str(stub)!r}", "Does not exist",
                                  f"The bundled server has stubs for Python 3.8-3.13; this is Python {version}."))
        target = self.home / f"backends-py{version}" / "python"
        if not (target / "triton_python_backend_stub").exists():
            target.mkdir(parents=True, exist_ok=True)
            for src in [*self.python_backend.iterdir(), stub]:
                link = target / src.name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(src)
        return target.parent


def installed(home: Optional[Path] = None) -> Optional[ServerFiles]:
    """The embedded server's files when installed, else None."""
    files = ServerFiles(home or server_home())
    return files if (files.home / _MARKER).is_file() and files.binary.is_file() else None


def _download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           f"nvidia-pytriton=={PYTRITON_VERSION}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("nvidia_pytriton-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise EngineError(fmt(f"pip download nvidia-pytriton=={PYTRITON_VERSION}",
                              f"Failed ({proc.returncode}): {proc.stderr.strip()[-800:]}",
                              "The package index must be reachable, or pass --wheel with the wheel file."))
    return wheels[0]


def install(wheel: Union[str, os.PathLike, None] = None, home: Optional[Path] = None, force: bool = False) -> ServerFiles:
    """Unpacks the server's files from the ``nvidia-pytriton`` wheel (downloaded when not given).

    Args:
        wheel (str | os.PathLike | None): A local ``nvidia_pytriton-*.whl``. Defaults to downloading it.
        home (Path | None): Destination. Defaults to :func:`server_home`.
        force (bool): Unpack again even when installed. Defaults to False.

    Returns:
        ServerFiles: The installed files.

    Raises:
        EngineError: The wheel cannot be downloaded or read, or lacks the server.
    """
    home = Path(home or server_home())
    if not force and installed(home) is not None:
        return ServerFiles(home)
    with tempfile.TemporaryDirectory(prefix="rnnrt-pytriton-") as tmp:
        path = Path(wheel) if wheel is not None else _download(Path(tmp))
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_ensure_dir(home.parent)))
        try:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.infolist() if m.filename.startswith(_PREFIXES) and not m.is_dir()]
                for m in members:
                    if ".." in Path(m.filename).parts or m.filename.startswith("/"):
                        raise EngineError(fmt(f"Wheel {str(path)!r}", f"Member {m.filename!r} leaves the folder"))
                    zf.extract(m, staging)
                    mode = (m.external_attr >> 16) & 0o777
                    if mode:
                        os.chmod(staging / m.filename, mode)
        except (OSError, zipfile.BadZipFile) as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise EngineError(fmt(f"Wheel {str(path)!r}", f"Cannot be unpacked: {err}")) from err
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        files = ServerFiles(staging)
        if not files.binary.is_file():
            shutil.rmtree(staging, ignore_errors=True)
            raise EngineError(fmt(f"Wheel {str(path)!r}", "Has no pytriton/tritonserver/bin/tritonserver",
                                  f"Use nvidia-pytriton {PYTRITON_VERSION}."))
        for exe in [files.binary, *files.root.glob("python_backend_stubs/*/triton_python_backend_stub")]:
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        (staging / _MARKER).write_text(f"nvidia-pytriton {PYTRITON_VERSION} from {path.name}\n")
        if home.exists():
            shutil.rmtree(home)
        staging.rename(home)
    return ServerFiles(home)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnrt.serve.install", description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", help="A local nvidia_pytriton wheel (default: pip download it).")
    parser.add_argument("--home", type=Path, help="Destination (default: $RNNRT_TRITON_HOME or <venv>/tritonserver).")
    parser.add_argument("--force", action="store_true", help="Unpack again even when installed.")
    args = parser.parse_args(argv)
    try:
        files = install(args.wheel, args.home, args.force)
    except EngineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"tritonserver: {files.binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
