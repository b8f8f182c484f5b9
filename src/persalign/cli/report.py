"""``persalign report RUN_DIR [--out DIR] [--bootstrap N]``: findings, tables, figures, report.html.

    persalign report runs/demo                   # writes runs/demo/report/
    persalign report runs/demo --out /tmp/rep    # somewhere else

Reads only the run's manifest.json and cells/*/metrics.json (see persalign.report.writer). The
report opens with the findings (the paper's claims tested on the run's users: holds / does not
hold / inconclusive, docs/findings.md) and the meta-evaluation (which selection metric predicts
generation quality), then the tables, the quality-vs-cost table and the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persalign.cli.output import stdout
from persalign.report.writer import write_report


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (runs/<name>) from persalign run.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write (default: RUN_DIR/report).")
    ] = None,
    bootstrap: Annotated[
        int,
        typer.Option(
            help="Bootstrap resamples over users for the CIs of correlations and findings "
            "(0: none, and every finding inconclusive)."
        ),
    ] = 1000,
    all_cells: Annotated[
        bool,
        typer.Option(
            "--all-cells", help="Also report cells that the run's current config no longer plans."
        ),
    ] = False,
) -> None:
    """Write the findings, the meta-evaluation, the paper's tables (Markdown, LaTeX, CSV), the
    quality-vs-cost table, figures (PNG), report.md and report.html."""
    files = write_report(run_dir, out, n_boot=bootstrap, all_cells=all_cells)
    folder = files["report.html"].parent
    stdout.print(f"{len(files)} files in {folder}", markup=False)
    stdout.print(str(files["report.html"]), markup=False)
