"""``persalign run``: one experiment config in, a run folder (and its report) out.

    persalign run configs/demo.yaml                               # runs/demo/
    persalign run configs/paper/pref_lamp.yaml --set seeds=[0,1,2] --set decoding.k=5
    persalign run CONFIG --backend ray --address auto             # on a Ray cluster
    persalign run CONFIG --force                                  # redo finished models/cells

A bad config (unknown key, wrong type, unknown method) stops before anything runs, with one line
naming the key. Rerunning a config resumes it: finished models and cells are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

stdout = Console(highlight=False)


def run(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML); see docs/runs.md.")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: a.b=value (repeatable)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Redo finished models and cells.")] = False,
    backend: Annotated[str, typer.Option(help="local (in process) or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (e.g. auto); default: a local Ray.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Parent folder of the run folder.")] = Path("runs"),
    report: Annotated[bool, typer.Option(help="Write the report at the end.")] = True,
) -> None:
    """Run the grid benchmark x method x policy x seed of CONFIG (resumable)."""
    from persalign.runs.config import load_config
    from persalign.runs.runner import run_experiment

    cfg = load_config(config, overrides or [])
    summary = run_experiment(cfg, out, force=force, backend=backend, address=address, report=report)
    print_summary(summary)


def print_summary(summary) -> None:
    outcome = summary.outcome
    stdout.print(
        f"{len(outcome.done)} jobs run, {len(outcome.reused)} reused; results in {summary.run_dir}",
        markup=False,
    )
    if summary.report is not None:
        stdout.print(f"report: {summary.report}", markup=False)
