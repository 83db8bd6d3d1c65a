"""The embedded server's installer unpacks only the server's files from the nvidia-pytriton wheel."""

from __future__ import annotations

import sys
import zipfile

import pytest

from rnnrt.errors import EngineError
from rnnrt.serve.install import install, installed
from rnnrt.serve.server import TritonServer, find_tritonserver

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def _wheel(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            zf.writestr(info, data)
    return path


def test_install_unpacks_only_the_server(tmp_path):
    wheel = _wheel(tmp_path / "nvidia_pytriton-0.7.0-py3-none-any.whl", {
        "pytriton/tritonserver/bin/tritonserver": b"#!/bin/sh\n",
        "pytriton/tritonserver/backends/python/libtriton_python.so": b"so",
        "pytriton/tritonserver/backends/python/triton_python_backend_utils.py": b"",
        f"pytriton/tritonserver/python_backend_stubs/{PY}/triton_python_backend_stub": b"stub",
        "nvidia_pytriton.libs/libx.so": b"lib",
        "pytriton/__init__.py": b"import numpy  # pins numpy<2: never installed",
    })
    home = tmp_path / "home"
    files = install(wheel, home)
    assert installed(home) is not None and files.binary.is_file()
    assert not (home / "pytriton" / "__init__.py").exists()
    assert (files.libs / "libx.so").is_file()
    backend = files.backend_dir()
    assert sorted(p.name for p in (backend / "python").iterdir()) == [
        "libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert install(wheel, home) .home == home  # installed: a no-op


@pytest.mark.parametrize("members,match", [
    ({"pytriton/other.py": b""}, "Has no pytriton/tritonserver/bin/tritonserver"),
    ({"pytriton/tritonserver/../../evil": b""}, "leaves the folder"),
])
def test_install_refuses_bad_wheels(tmp_path, members, match):
    wheel = _wheel(tmp_path / "w.whl", members)
    with pytest.raises(EngineError, match=match):
        install(wheel, tmp_path / "home")
    assert not (tmp_path / "home").exists() and not (tmp_path.parent / "evil").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.whl"]  # no staging folder left


def test_not_a_wheel_and_missing_binary_are_typed_errors(tmp_path):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(EngineError, match="Cannot be unpacked"):
        install(bad, tmp_path / "home")
    with pytest.raises(EngineError, match="Is not an executable file"):
        find_tritonserver(tmp_path / "nope")


def test_server_environment_and_command_bind_loopback(tritonserver_installed, tmp_path):
    server = TritonServer(tmp_path, grpc_port=1234)
    cmd = server.command()
    for key in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{key}=127.0.0.1" in cmd
    assert "--grpc-port=1234" in cmd and any(c.startswith("--backend-directory=") for c in cmd)
    env = server.environment()
    assert str(tritonserver_installed.libs) in env["LD_LIBRARY_PATH"]
    assert env["RNNRT_PYTHONPATH"] and env["PATH"].startswith(str(__import__("pathlib").Path(sys.executable).parent))


def test_find_tritonserver_order(tmp_path, monkeypatch, tritonserver_installed):
    """Given path first, then the embedded binary, then `tritonserver` on PATH (the NGC container)."""
    given = tmp_path / "given" / "tritonserver"
    given.parent.mkdir()
    given.write_text("#!/bin/sh\n")
    given.chmod(0o755)
    assert find_tritonserver(given) == (given, False)
    assert find_tritonserver() == (tritonserver_installed.binary, True)
    assert find_tritonserver(tritonserver_installed.binary)[1] is True
    monkeypatch.setenv("RNNRT_TRITON_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(given.parent))
    assert find_tritonserver() == (given, False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EngineError, match="python -m rnnrt.serve.install"):
        find_tritonserver()
    server = TritonServer(tmp_path, tritonserver=given)
    assert not any(c.startswith("--backend-directory") for c in server.command())  # its own backends
