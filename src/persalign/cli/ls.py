"""``persalign ls [datasets|methods|decoders|metrics]``: what is registered, one line each.

persalign ls                 # every registry
persalign ls metrics         # the metrics a run computes per cell, each with its options
                             # (metrics.<name>.<option> in a run config), defaults, descriptions
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from persalign.cli.output import stdout
from persalign.data import BUILDERS
from persalign.decoding import DECODERS
from persalign.errors import ConfigError
from persalign.metrics import METRICS
from persalign.registry import Registry, load_plugins
from persalign.rewards import METHODS

REGISTRIES: dict[str, Registry] = {
    "datasets": BUILDERS,
    "methods": METHODS,
    "decoders": DECODERS,
    "metrics": METRICS,
}


def list_registered(
    kind: Annotated[
        str | None, typer.Argument(help="datasets | methods | decoders | metrics")
    ] = None,
    plugins: Annotated[
        list[str] | None,
        typer.Option("--plugin", help="Import a plugin module first (repeatable)."),
    ] = None,
) -> None:
    """List what is registered (datasets, reward methods, decoders, metrics), one line each."""
    load_plugins(plugins or [])
    kinds = [kind] if kind else list(REGISTRIES)
    for name in kinds:
        if name not in REGISTRIES:
            raise ConfigError(f"unknown kind {name!r}; choose from {', '.join(REGISTRIES)}")
        table = Table(title=name, show_header=False, box=None, title_justify="left")
        for entry in REGISTRIES[name].entries():
            table.add_row(entry.name, entry.summary)
            if name == "metrics":  # each metric's options, set under metrics.<name> in a run
                for option, default, description in entry.obj.describe_options():
                    table.add_row("", f".{option} = {default}: {description}")
        stdout.print(table)
