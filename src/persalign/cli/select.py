"""``persalign select RUN_DIR [--metric NAME]``: which model (method, seed, lambda) a finished run
would deploy per benchmark and policy, chosen by any report column.

    persalign select runs/demo --metric gt_mrr                 # a table
    persalign select runs/demo --metric rm_accuracy --json     # the paper's practice, as JSON
    persalign select runs/demo --out runs/demo/selection.json  # report.selection_metric

After the table, one ready-to-paste line per pick: the chosen model's folder and lambda as a
``persalign serve`` command (from the chosen cell's ``spec.json``), e.g.

    persalign serve --policy bundled:smollm2-135m-instruct \
        --reward runs/demo/models/pref-acl__lore__bundled-smollm2-135m-instruct__s0 --lam 2 --k 5

Reads only the run's cells (``persalign.report.reading``); ``persalign.metrics.selection`` picks.
Without ``--metric`` the run config's ``report.selection_metric`` is used. An unknown name is an
error that lists the valid ones.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from persalign.cli.checks import check_out_file
from persalign.cli.output import emit, stdout
from persalign.errors import DataError
from persalign.io import read_json
from persalign.metrics.selection import select_best, selection_column
from persalign.report.reading import load_run
from persalign.runs.sections import ReportConfig


def _default_metric(manifest: dict[str, Any] | None) -> str:
    report = ((manifest or {}).get("config") or {}).get("report") or {}
    return str(report.get("selection_metric") or ReportConfig().selection_metric)


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def select(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (runs/<name>) from persalign run.")],
    metric: Annotated[
        str | None,
        typer.Option(
            help="Report column to select by (e.g. rm_accuracy, policy_accuracy, gt_mrr, "
            "steering_accuracy, prefix_accuracy, rouge1); default: report.selection_metric."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the selection as JSON.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    all_cells: Annotated[
        bool, typer.Option("--all-cells", help="Also consider cells the current plan dropped.")
    ] = False,
) -> None:
    """Pick the model to deploy (method, seed and its lambda) by any metric, per benchmark and
    policy."""
    if out is not None:
        check_out_file(out, "a JSON file")
    results = load_run(run_dir, all_cells=all_cells)  # loads the run's metric plugins first
    column = selection_column(metric or _default_metric(results.manifest))
    records = [
        {
            "benchmark": c.benchmark,
            "policy": c.policy,
            "row": c.row,
            "method": c.method,
            "seed": c.seed,
            "lambda": c.values.get("lambda"),
            "values": c.values,
        }
        for c in results.cells
    ]
    picks = select_best(records, column)
    if not picks:
        raise DataError(f"no finished cell has a value for {column.key!r}", path=run_dir)
    cell_ids = {(c.benchmark, c.policy, c.row, c.seed): c.cell for c in results.cells}
    for pick in picks:
        best = pick["best"]
        cell = cell_ids[(pick["benchmark"], pick["policy"], best["row"], best["seed"])]
        best["model_dir"], pick["serve"] = deployment(run_dir, cell, best["lambda"])
    if emit({"metric": column.key, "selections": picks}, as_json, out):
        return
    table = Table(title=f"Selected by {column.label} ({column.key})", title_justify="left")
    for name in ("benchmark", "policy", "deploy", "seed", "lambda", "value", "best row (mean)"):
        table.add_column(name, justify="right" if name in ("seed", "lambda", "value") else "left")
    for pick in picks:
        best, top = pick["best"], pick["rows"][0]
        table.add_row(
            pick["benchmark"],
            pick["policy"],
            best["row"],
            str(best["seed"]),
            _value(best["lambda"]),
            _value(best["value"]),
            f"{top['row']} {_value(top['mean'])} ({len(top['seeds'])} seeds)",
        )
    stdout.print(table)
    for pick in picks:
        if pick["serve"]:
            stdout.print(f"{pick['benchmark']} / {pick['policy']}:", markup=False)
            stdout.print(f"  {pick['serve']}", markup=False, soft_wrap=True)  # one line to paste


def deployment(run_dir: Path, cell: str, lam: float | None) -> tuple[str | None, str | None]:
    """The chosen cell's reward-model folder (None for a baseline) and the ``persalign serve``
    command that deploys it: its policy, its decoder, its lambda and k (both None when the cell
    has no ``spec.json``)."""
    path = run_dir / "cells" / cell / "spec.json"
    if not path.is_file():
        return None, None
    spec = read_json(path)["spec"]
    argv = ["persalign", "serve", "--policy", str(spec["policy"]["spec"])]
    model = spec.get("model")
    model_dir = str(run_dir / "models" / model["id"]) if model else None
    if spec["decoder"] != "args":
        argv += ["--decoder", str(spec["decoder"])]
    if model_dir:
        argv += ["--reward", model_dir]
    if lam is not None:
        argv += ["--lam", f"{lam:g}"]
    settings = spec.get("decoder_settings") or {}
    for key in ("k", "shots"):
        if key in settings:
            argv += [f"--{key}", str(settings[key])]
    return model_dir, " ".join(shlex.quote(arg) for arg in argv)
