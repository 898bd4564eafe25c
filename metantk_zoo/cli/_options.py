"""Options shared by every command: ``--config FILE`` (a saved config whose values flags override) and ``--json``.

``--config`` is eager: its callback reads the JSON file before any other option is parsed and installs it as the
command's ``default_map``, so every option not given on the command line takes the file's value, and flags given
on the command line win. Keys are option names with underscores (the config dataclass field names), so the
``config.json`` a run directory holds can be fed straight back. Unknown keys are an error, not silently ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..utils.device import device_help

__all__ = ["ConfigOption", "DeviceOption", "JsonOption", "load_config_file"]


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON config; a ``{"config": {...}}`` wrapper (as run directories write) is unwrapped."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise typer.BadParameter(f"config file not found: {path}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise typer.BadParameter(f"config file {path} is not valid JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise typer.BadParameter(f"config file {path} must hold a JSON object, found {type(data).__name__}")
    return data


def _install_config(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    if value is None or ctx.resilient_parsing:
        return value
    data = load_config_file(value)
    known = {p.name for p in ctx.command.params if p.name}
    unknown = sorted(k for k in data if k.replace("-", "_") not in known)
    if unknown:
        raise typer.BadParameter(
            f"{value}: unknown key(s) {', '.join(unknown)}; this command takes {', '.join(sorted(known - {'config'}))}"
        )
    ctx.default_map = {**(ctx.default_map or {}), **{k.replace("-", "_"): v for k, v in data.items()}}
    return value


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        is_eager=True,
        callback=_install_config,
        help="JSON file of option values (e.g. a run's config.json); options given on the command line override it.",
        show_default=False,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]

#: ``--device auto|cpu|cuda|cuda:N``, resolved by :func:`metantk_zoo.utils.device.resolve_device` (one rule for every
#: command; a device that is not there is one error line before anything is written)
DeviceOption = Annotated[str, typer.Option("--device", help=device_help())]
