"""How the subcommands print: tables, shapes, and the ``--json`` report (printed or written atomically)."""

from __future__ import annotations

from typing import Any

from rnnrt.errors import ConfigError, fmt


def dims_text(shape) -> str:
    """A shape as the YAML writes it: ``[8, batch, 5]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def table(headers: list[str], rows: list[list]) -> str:
    """Columns padded to their widest cell, a dashed line under the headers."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def binding_json(b) -> dict[str, Any]:
    """A plan's binding (:class:`rnnrt.build.builder.BindingInfo`) in a ``--json`` report."""
    return {"name": b.name, "mode": b.mode, "dtype": b.dtype, "shape": list(b.shape),
            "profile": [list(s) for s in b.profile] if b.profile is not None else None}


def check_json_target(dest: str | None) -> None:
    """Fails before any work when ``--json PATH`` cannot be written (``-`` prints)."""
    if dest is not None and dest != "-":
        from rnnrt.paths import check_output_file

        check_output_file(dest, "--json", example="report.json")


def report(text: str, data: dict[str, Any], dest: str | None) -> None:
    """Prints ``text``, or with ``--json -`` the JSON instead; ``--json PATH`` also writes the JSON there."""
    import json

    if dest == "-":
        print(json.dumps(data, indent=1))
        return
    print(text)
    if dest is None:
        return
    from rnnrt.safe_write import write_file

    try:
        write_file(dest, lambda f: json.dump(data, f, indent=1), "w", what="--json")
    except OSError as err:
        raise ConfigError(fmt(f"--json {dest!r}", f"Cannot be written: {err.strerror}")) from err
