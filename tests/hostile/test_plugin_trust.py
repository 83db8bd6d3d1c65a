"""Plugins run arbitrary code: loaded only when asked for, and a plugin cannot end the process that loads it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rnnrt.importers.options import load_import_config
from rnnrt.errors import PluginError, RnnrtError
from rnnrt.importers.caffe.plugins import load_plugins
from tests.hostile.helpers import cli, input_layer, tree

NET = input_layer("data", 1, 4) + 'layer { name: "r" type: "ReLU" bottom: "data" top: "y" }\n'


@pytest.mark.parametrize(
    "body, kind",
    [
        ("raise SystemExit(7)\n", "SystemExit"),
        ("import sys\nsys.exit('bye')\n", "SystemExit"),
        ("class Odd(BaseException):\n    pass\nraise Odd('not an Exception')\n", "Odd"),
        ("raise GeneratorExit()\n", "GeneratorExit"),
    ],
)
def test_a_plugin_raising_base_exceptions_is_a_plugin_error(tmp_path, body, kind):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "evil.py").write_text(body)
    with pytest.raises(PluginError, match=rf"Plugin 'evil' \(.*evil\.py\) \| Failed to import: {kind}") as info:
        load_plugins([tmp_path / "p"])
    assert isinstance(info.value, RnnrtError)


def test_convert_survives_a_plugin_calling_sys_exit(tmp_path):
    # Before: `rnnrt convert --plugins` ended with the plugin's exit code 7 and no message.
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "evil.py").write_text("raise SystemExit(7)\n")
    (tmp_path / "net.prototxt").write_text(NET)
    proc = cli("convert", "net.prototxt", "-o", "out", "--plugins", "p", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Plugin 'evil'" in proc.stderr and "SystemExit" in proc.stderr
    assert not (tmp_path / "out").exists()


def _site_with_entry_point(tmp_path: Path, marker: Path) -> Path:
    site = tmp_path / "site"
    (site / "sneaky_pkg").mkdir(parents=True)
    (site / "sneaky_pkg" / "__init__.py").write_text("")
    (site / "sneaky_pkg" / "layers.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "from rnnrt.importers.caffe.registry import add_converter\n"
        "@add_converter('caffe', 'Sneaky')\n"
        "def _(layer, ctx):\n    return ctx.bottoms(layer, 1)\n"
    )
    dist = site / "sneaky_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sneaky-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rnnrt.caffe_layers]\nsneaky = sneaky_pkg.layers\n")
    return site


def test_entry_points_are_not_imported_unless_named(tmp_path):
    # Before: every installed rnnrt.caffe_layers entry point was imported on every convert.
    marker = tmp_path / "imported.txt"
    site = _site_with_entry_point(tmp_path, marker)
    (tmp_path / "net.prototxt").write_text(NET)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(site) + os.pathsep + env_path
    try:
        proc = cli("convert", "net.prototxt", "-o", "out", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        proc = cli("convert", "--list-layers", cwd=tmp_path)
        assert proc.returncode == 0 and "Sneaky" not in proc.stdout, proc.stderr
        assert not marker.exists()
        proc = cli("convert", "--list-layers", "--plugins", "entry:sneaky", cwd=tmp_path)
        assert proc.returncode == 0 and "Sneaky" in proc.stdout and marker.exists(), proc.stderr
        proc = cli("convert", "--list-layers", "--plugins", "entry:nope", cwd=tmp_path)
        assert proc.returncode == 2 and "No installed entry point of group 'rnnrt.caffe_layers' is named 'nope'" in proc.stderr
    finally:
        os.environ["PYTHONPATH"] = env_path


def test_import_yaml_names_entry_points_verbatim(tmp_path):
    (tmp_path / "import.yaml").write_text("model: net.prototxt\nplugins: [entry:crnn, plugins/]\n")
    cfg = load_import_config(tmp_path / "import.yaml")
    assert cfg.plugins[0] == "entry:crnn"
    assert cfg.plugins[1] == str((tmp_path / "plugins").resolve())


def test_failed_plugin_load_writes_nothing(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "evil.py").write_text("raise RuntimeError('boom')\n")
    before = tree(tmp_path)
    with pytest.raises(PluginError):
        load_plugins([tmp_path / "p"])
    assert tree(tmp_path) == before
