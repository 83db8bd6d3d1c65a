"""Layer plugins: teach the Caffe importer layer types from Caffe forks without touching rnnrt.

A plugin is a Python module that

1. registers a converter per layer type with the same registry the built-in layers use
   (``@add_converter("caffe", "Permute")``), and
2. optionally declares the fork's extra ``caffe.proto`` fields in a module attribute
   ``CAFFE_PROTO`` (a :class:`~rnnrt.importers.caffe.proto.ProtoExtension` or a sequence of them), so the
   prototxt parser accepts e.g. ``permute_param { order: 2 }``.

Plugins are loaded only when asked for, in the order given (``rnnrt convert --plugins X`` or the
import YAML's ``plugins:`` list): every ``*.py`` file (not starting with ``_``) of a directory, a
single ``.py`` file, ``entry:NAME`` for the installed entry point NAME of the group
``rnnrt.caffe_layers`` (the entry point names a module), or ``entry:*`` for all of them. A plugin
is arbitrary Python run in the converting process: load only plugins you trust. A plugin's name is its entry point name or file stem; converters
it registers are attributed to that name (``rnnrt convert --list-layers`` shows it), and the YAML
config written by ``rnnrt convert`` records the plugins under ``source.plugins``.

Loading the same plugin file twice is a no-op; two plugins that register the same layer type, a
plugin whose import fails, and a plugin that registers nothing raise :class:`PluginError` naming
the plugin. See ``plugins/README.md`` for a worked example.

Example::

    from rnnrt.importers.caffe.convert import convert_caffe
    from rnnrt.importers.caffe.plugins import load_plugins

    plugins = load_plugins(["plugins/"])
    step = convert_caffe("crnn_deploy.prototxt", schema=plugins.schema)
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Sequence

from rnnrt.importers.caffe import layers as _layers  # noqa: F401 (built-ins first, so a plugin cannot claim their types)
from rnnrt.importers.caffe import registry
from rnnrt.importers.caffe.proto import CaffeSchema, ProtoExtension, default_schema
from rnnrt.errors import PluginError, fmt

G_LOGGER = logging.getLogger("rnnrt.importers.caffe.plugins")

ENTRY_POINT_GROUP = "rnnrt.caffe_layers"
"""Entry point group of installed layer plugins; each entry point names a module."""

ENTRY_POINT_PREFIX = "entry:"
"""A plugin path ``entry:NAME`` loads the installed entry point NAME; ``entry:*`` loads all of them."""

PROTO_ATTRIBUTE = "CAFFE_PROTO"
"""Module attribute holding a plugin's ProtoExtension (or a sequence of them)."""

BUILTIN = "rnnrt"
"""The origin of the built-in converters in the registry."""

_MODULE_PREFIX = "rnnrt_plugin_"


@dataclasses.dataclass(frozen=True)
class LayerPlugin:
    """One loaded plugin.

    Args:
        name (str): The plugin name: its file stem or entry point name.
        source (str): Where it was loaded from: an absolute file path, or ``"entry point <value>"``.
        layer_types (tuple[str, ...]): The Caffe layer types it registered converters for.
        extensions (tuple[ProtoExtension, ...]): Its ``caffe.proto`` additions.
        module (ModuleType): The imported module.
    """

    name: str
    source: str
    layer_types: tuple[str, ...]
    extensions: tuple[ProtoExtension, ...]
    module: ModuleType = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class PluginSet:
    """The plugins of one conversion and the Caffe schema that includes their fields.

    Args:
        plugins (tuple[LayerPlugin, ...]): The plugins, in load order.
        schema (CaffeSchema): ``caffe.proto`` plus every plugin's extensions; pass it to
            ``convert_caffe(..., schema=...)`` or ``load_net(..., schema=...)``.
    """

    plugins: tuple[LayerPlugin, ...]
    schema: CaffeSchema

    def describe(self) -> list[dict[str, Any]]:
        """What the YAML config records under ``source.plugins``: name, source and layer types."""
        return [{"name": p.name, "source": p.source, "layers": list(p.layer_types)} for p in self.plugins]


# name -> loaded plugin; a plugin is imported once per process because registration is global.
_LOADED: dict[str, LayerPlugin] = {}


def load_plugins(
    paths: Iterable[str | os.PathLike] = (), *, entry_points: bool = False
) -> PluginSet:
    """Loads layer plugins and builds the Caffe schema that includes their fields.

    Args:
        paths (Iterable[str | os.PathLike]): Plugin directories (every ``*.py`` not starting with
            ``_``, in name order), single plugin files, ``entry:NAME`` (the installed entry point
            NAME of group ``rnnrt.caffe_layers``) or ``entry:*`` (all of them). Defaults to none.
        entry_points (bool): Also load every installed entry point (as ``entry:*``). Defaults to
            False: plugins run arbitrary code, so nothing is imported unless asked for.

    Returns:
        PluginSet: The loaded plugins (already loaded ones included) and the schema.

    Raises:
        PluginError: A path does not exist or holds no plugin, a plugin fails to import, registers
            nothing, registers a layer type that another plugin or rnnrt already handles, declares
            ``CAFFE_PROTO`` wrongly, or its fields clash with caffe.proto or another plugin.

    Example::

        plugins = load_plugins(["plugins/", "~/my_layers/tile2.py"])
        print([p.name for p in plugins.plugins])
    """
    plugins: list[LayerPlugin] = []
    paths = list(paths)
    if entry_points:
        paths.insert(0, ENTRY_POINT_PREFIX + "*")
    for path in paths:
        text = os.fspath(path)
        if isinstance(text, str) and text.startswith(ENTRY_POINT_PREFIX):
            plugins += [load_plugin_entry_point(ep) for ep in _entry_points(text[len(ENTRY_POINT_PREFIX):])]
            continue
        for file in _plugin_files(Path(os.path.expanduser(text))):
            plugins.append(load_plugin_file(file))
    unique = list({p.name: p for p in plugins}.values())
    extensions = [ext for p in unique for ext in p.extensions]
    schema = CaffeSchema(extensions) if extensions else default_schema()
    return PluginSet(tuple(unique), schema)


def _entry_points(name: str) -> list[importlib.metadata.EntryPoint]:
    available = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    if name == "*":
        return available
    chosen = [ep for ep in available if ep.name == name]
    if not chosen:
        raise PluginError(
            fmt(f"Plugin {ENTRY_POINT_PREFIX}{name}", f"No installed entry point of group {ENTRY_POINT_GROUP!r} is named {name!r}",
                f"Installed: {[ep.name for ep in available]}.")
        )
    return chosen


def _plugin_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".py":
            raise PluginError(fmt(f"Plugin path {str(path)!r}", "Is not a .py file", "Give a plugin directory or a .py file."))
        return [path]
    if not path.is_dir():
        raise PluginError(fmt(f"Plugin path {str(path)!r}", "Does not exist", "Give a plugin directory or a .py file."))
    files = sorted(f for f in path.glob("*.py") if not f.name.startswith("_"))
    if not files:
        raise PluginError(
            fmt(f"Plugin directory {str(path)!r}", "Holds no plugin modules", "Expected *.py files (names starting with '_' are skipped).")
        )
    return files


def load_plugin_file(path: str | os.PathLike) -> LayerPlugin:
    """Imports one plugin file; its name is the file stem.

    Args:
        path (str | os.PathLike): The ``.py`` file.

    Returns:
        LayerPlugin: The plugin (the cached one if this file was loaded before).

    Raises:
        PluginError: See :func:`load_plugins`; also a stem that is not a Python identifier, or a
            second plugin file with the same stem.
    """
    file = Path(path).resolve()
    name = file.stem
    if not name.isidentifier():
        raise PluginError(fmt(f"Plugin file {str(file)!r}", f"Its name {name!r} is not a Python identifier", "Rename the file, e.g. to my_layers.py."))
    source = str(file)
    cached = _cached(name, source)
    if cached is not None:
        return cached
    spec = importlib.util.spec_from_file_location(_MODULE_PREFIX + name, file)
    if spec is None or spec.loader is None:
        raise PluginError(fmt(f"Plugin {name!r} ({source})", "Cannot be imported as a Python module"))
    module = importlib.util.module_from_spec(spec)

    def run() -> ModuleType:
        sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        return module

    return _register(name, source, run, module_name=spec.name)


def load_plugin_entry_point(ep: importlib.metadata.EntryPoint) -> LayerPlugin:
    """Imports the module an ``rnnrt.caffe_layers`` entry point names; the plugin is named ``ep.name``.

    Args:
        ep (importlib.metadata.EntryPoint): The entry point, e.g. ``crnn = my_pkg.crnn_layers``.

    Returns:
        LayerPlugin: The plugin (the cached one if it was loaded before).

    Raises:
        PluginError: See :func:`load_plugins`; also an entry point that names something else than
            a module.
    """
    source = f"entry point {ep.value}"
    cached = _cached(ep.name, source)
    if cached is not None:
        return cached

    def run() -> ModuleType:
        obj = ep.load()
        if not isinstance(obj, ModuleType):
            raise PluginError(
                fmt(f"Plugin {ep.name!r} ({source})", f"Names a {type(obj).__name__}, not a module",
                    f"Entry points of group {ENTRY_POINT_GROUP!r} name the plugin module, e.g. 'my_pkg.layers'.")
            )
        return obj

    return _register(ep.name, source, run, module_name=None)


def _cached(name: str, source: str) -> LayerPlugin | None:
    prev = _LOADED.get(name)
    if prev is None:
        return None
    if prev.source != source:
        raise PluginError(
            fmt(f"Plugin {name!r} ({source})", f"A plugin of the same name is already loaded from {prev.source}",
                "Plugin names (file stems, entry point names) must be unique; rename one of them.")
        )
    return prev


def _register(name: str, source: str, run: Callable[[], ModuleType], *, module_name: str | None) -> LayerPlugin:
    subject = f"Plugin {name!r} ({source})"
    if name == BUILTIN:
        raise PluginError(fmt(subject, f"Is named {BUILTIN!r}, the origin of the built-in layers", "Rename the plugin."))
    before = set(registry.registered_types("caffe"))
    try:
        with registry.registering_as(name):
            module = run()
        extensions = _extensions(module, name, subject)
    except PluginError:
        _forget(name, module_name)  # leave nothing half-registered: a fixed plugin can be loaded again
        raise
    except KeyboardInterrupt:
        _forget(name, module_name)
        raise
    except BaseException as err:  # SystemExit too: a plugin must not end the process that loads it
        _forget(name, module_name)
        raise PluginError(
            fmt(subject, f"Failed to import: {type(err).__name__}: {err}", "Fix the plugin module; the chained traceback shows where.")
        ) from err
    types = tuple(sorted(op for op, origin in registry.registered_types("caffe").items() if origin == name))
    if not types:
        _forget(name, module_name)
        stray = sorted(set(registry.registered_types("caffe")) - before)
        hint = (
            f"It registered {stray} outside rnnrt's loader (was the module imported before?)."
            if stray
            else "Register a converter with @add_converter('caffe', '<LayerType>') at module level."
        )
        raise PluginError(fmt(subject, "Registers no Caffe layer converter", hint))
    plugin = LayerPlugin(name, source, types, extensions, module)
    _LOADED[name] = plugin
    G_LOGGER.info("Loaded layer plugin %r from %s: %s", name, source, ", ".join(types))
    return plugin


def _forget(name: str, module_name: str | None) -> None:
    registry.unregister(name)
    if module_name is not None:
        sys.modules.pop(module_name, None)


def _extensions(module: ModuleType, name: str, subject: str) -> tuple[ProtoExtension, ...]:
    value = getattr(module, PROTO_ATTRIBUTE, None)
    if value is None:
        return ()
    items: Sequence[Any] = (value,) if isinstance(value, ProtoExtension) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(e, ProtoExtension) for e in items):
        raise PluginError(
            fmt(subject, f"{PROTO_ATTRIBUTE} is a {type(value).__name__}",
                "Expected a rnnrt.importers.caffe.proto.ProtoExtension or a list/tuple of them.")
        )
    # Unnamed extensions take the plugin's name, so schema clashes name the plugin.
    return tuple(e if e.origin else dataclasses.replace(e, origin=name) for e in items)


def unload_plugin(name: str) -> None:
    """Forgets a loaded plugin and removes its converters (tests, or reloading an edited plugin).

    Args:
        name (str): The plugin name.

    Raises:
        PluginError: No plugin of that name is loaded.
    """
    plugin = _LOADED.pop(name, None)
    if plugin is None:
        raise PluginError(fmt(f"Plugin {name!r}", "Is not loaded", f"Loaded: {sorted(_LOADED)}."))
    registry.unregister(name)
    # Also an entry point's module: importing it again must run its registrations again.
    sys.modules.pop(plugin.module.__name__, None)


def loaded_plugins() -> tuple[LayerPlugin, ...]:
    """The plugins loaded in this process, in load order."""
    return tuple(_LOADED.values())


def layer_table(frontend: str = "caffe") -> list[tuple[str, str, str]]:
    """Every registered layer type with its origin and where that comes from.

    Args:
        frontend (str): The registry frontend. Defaults to ``"caffe"``.

    Returns:
        list[tuple[str, str, str]]: ``(layer type, origin, source)`` sorted by type; origin is
        ``"rnnrt"`` (source ``"built-in"``) or a plugin name (source its file or entry point).
    """
    rows = []
    for op, origin in registry.registered_types(frontend).items():
        plugin = _LOADED.get(origin)
        source = "built-in" if origin == BUILTIN else (plugin.source if plugin else "?")
        rows.append((op, origin, source))
    return sorted(rows, key=lambda r: r[0].lower())


__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "ENTRY_POINT_PREFIX",
    "LayerPlugin",
    "PROTO_ATTRIBUTE",
    "PluginSet",
    "layer_table",
    "load_plugin_entry_point",
    "load_plugin_file",
    "load_plugins",
    "loaded_plugins",
    "unload_plugin",
]
