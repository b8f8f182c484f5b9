"""``persalign run`` and ``persalign demo``: one experiment config in, a run folder (and its
report) out.

    persalign run configs/demo.yaml                               # runs/demo/
    persalign run configs/paper/pref_lamp.yaml --set seeds=[0,1,2] --set decoding.k=5
    persalign run CONFIG --backend ray --address auto             # on a Ray cluster
    persalign run CONFIG --force                                  # redo finished models/cells
    persalign run CONFIG --no-verify                              # folders edited by hand
    persalign demo [--out runs/demo]                              # configs/demo.yaml, end to end

A bad config (unknown key, wrong type, unknown method) stops before anything runs, with one line
naming the key. Rerunning a config resumes it: finished models and cells are kept.

The demo is a small Pref-ACL (ACL Anthology abstracts and titles from ``PERSALIGN_ACL_DIR``,
downloaded into the cache on a connected machine when unset), the bundled SmolLM2-135M-Instruct
as policy and reward backbone, five reward methods against zero-shot, ICL and ICL-RAG, two seeds:
everything ``persalign run`` does, sized to finish within minutes on a laptop CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persalign.cli.checks import check_writable
from persalign.cli.output import stdout
from persalign.report.writer import report_html
from persalign.runs.config import load_config
from persalign.runs.runner import RunSummary, run_experiment

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"


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
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help="Check every benchmark file against its manifest's sha256 (--no-verify: a "
            "folder edited by hand); overrides the config's verify (default: true).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the grid benchmark x method x policy x seed of CONFIG (resumable)."""
    cfg = load_config(config, overrides or [])
    if verify is not None:  # the flag, when given, overrides the config key
        cfg = cfg.model_copy(update={"verify": verify})
    check_writable(out / cfg.name)  # before anything loads
    reporter = report_html if report else None
    summary = run_experiment(
        cfg, out, force=force, backend=backend, address=address, reporter=reporter
    )
    print_summary(summary)


def demo(
    out: Annotated[Path, typer.Option(help="The demo's run folder.")] = Path("runs/demo"),
    config: Annotated[
        Path | None, typer.Option(help="Config file (default: configs/demo.yaml).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Redo finished models and cells.")] = False,
) -> None:
    """The embedded default: configs/demo.yaml through the runner; prints report.html's path."""
    summary = run_demo(out, config, force=force)
    stdout.print(str(summary.report or summary.run_dir), markup=False)


def run_demo(
    out: str | Path = "runs/demo", config: str | Path | None = None, *, force: bool = False
) -> RunSummary:
    """Run the demo config into the run folder ``out`` (its name is the folder's name)."""
    out = Path(out)
    cfg = load_config(config or DEFAULT_CONFIG, [f"name={out.name}"])
    return run_experiment(cfg, out.parent, force=force, reporter=report_html)


def print_summary(summary: RunSummary) -> None:
    outcome = summary.outcome
    stdout.print(
        f"{len(outcome.done)} jobs run, {len(outcome.reused)} reused; results in {summary.run_dir}",
        markup=False,
    )
    if summary.report is not None:
        stdout.print(f"report: {summary.report}", markup=False)
