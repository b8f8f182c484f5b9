"""The ``persalign`` command line.

    persalign ls [datasets|...]                   what is registered
    persalign data build pref-acl --source DIR --out DIR [--seed S] [--min-items N] ...
    persalign data stats DIR [--json]
    persalign demo [--out DIR]                    the embedded default (configs/demo.yaml)
    persalign run CONFIG [--set a.b=v] [--force] [--backend local|ray] [--address auto]

Errors the user can fix (bad files, unknown names, bad options) print one line and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from persalign.errors import ConfigError, PersalignError
from persalign.logs import setup_logging, stderr

app = typer.Typer(
    help="persalign: personalized alignment, evaluated against what users actually write.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stdout = Console(highlight=False)

# kind -> (module, attribute) of its registry; imported only when listed.
REGISTRIES = {
    "datasets": ("persalign.data", "BUILDERS"),
    "methods": ("persalign.rewards", "METHODS"),
    "decoders": ("persalign.decoding", "DECODERS"),
    "metrics": ("persalign.metrics", "METRICS"),
}


@app.callback()
def _global(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    setup_logging(0 if quiet else 1 + verbose)


@app.command("ls")
def list_registered(
    kind: Annotated[
        str | None, typer.Argument(help="datasets | methods | decoders | metrics")
    ] = None,
) -> None:
    """List what is registered (datasets, reward methods) with a one-line summary."""
    import importlib

    kinds = [kind] if kind else list(REGISTRIES)
    for name in kinds:
        if name not in REGISTRIES:
            raise ConfigError(f"unknown kind {name!r}; choose from {', '.join(REGISTRIES)}")
        module, attr = REGISTRIES[name]
        registry = getattr(importlib.import_module(module), attr)
        table = Table(title=name, show_header=False, box=None, title_justify="left")
        for entry in registry.entries():
            table.add_row(entry.name, entry.summary)
        stdout.print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="The demo's run folder.")] = Path("runs/demo"),
    config: Annotated[
        Path | None, typer.Option(help="Config file (default: configs/demo.yaml).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Redo finished models and cells.")] = False,
) -> None:
    """The embedded default: configs/demo.yaml through the runner; prints report.html's path."""
    from persalign.runs.demo import run_demo

    summary = run_demo(out, config, force=force)
    target = summary.report or summary.run_dir
    stdout.print(str(target), markup=False)


def _add_command_groups() -> None:
    from persalign.cli import evaluate_generation  # noqa: F401 (evaluate generation, winrate)
    from persalign.cli.data import data_app
    from persalign.cli.evaluate_policy import evaluate_policy, select_lambda_command
    from persalign.cli.generate import generate
    from persalign.cli.report import report
    from persalign.cli.run import run
    from persalign.cli.train import evaluate_app, train

    app.add_typer(data_app, name="data")
    app.add_typer(evaluate_app, name="evaluate")
    app.command("train")(train)
    app.command("generate")(generate)
    app.command("run")(run)
    app.command("report")(report)
    evaluate_app.command("policy")(evaluate_policy)
    app.command("select-lambda")(select_lambda_command)


_add_command_groups()


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv, prog_name="persalign")
    except PersalignError as exc:
        stderr.print(f"error: {exc}", markup=False)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        stderr.print("interrupted", markup=False)
        raise SystemExit(130) from None


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
