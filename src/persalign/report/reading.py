"""Reading a run folder for the report: manifest.json and cells/*/metrics.json, nothing else.

    results = load_run("runs/demo")
    results.issues          # what was missing: unfinished cells, unreadable files, null metrics
    results.columns         # what was read from each metrics.json (schema.report_columns())

Every number read is a report column of ``persalign.metrics.schema``: each registered cell
metric's columns and the fixed ones (lambda), so a new metric plugin is read with no change here.

A metric's per-user values (for the bootstrap over users) are the ``per_user`` of the block a
column reads, or of its parent block when the column reads a number inside it (the win rate's
``rate``). The BERTScore scale is the ``generation`` block's ``bertscore_rescaled``; cells from
before it existed were raw. A ``win_rate`` block from before the pooled rate (``mean`` but no
``rate``: per-user mean, ties as losses) is not shown ("--") and is reported: rerun those cells.

The ``cost`` block (wall clock per token, forward passes, peak memory; results.COST_KEYS) is read
into ``Cell.cost`` for the cost table and figure only; the cell's total ``seconds`` into
``Cell.seconds`` for the sizing table's projected cell time only (no number of a finding).
A null metric that the method's class says does not apply (``supports_rgd`` False: PAL has no
ARGS, so no policy accuracy, generation or win rate; ``has_rm_accuracy`` False: P-DPO has no RM
accuracy, so no win rate, prefix or steering accuracy) is "not applicable" (``Cell.not_applicable``,
shown as "n/a (...)", listed apart from what is missing); a metric computed on no pairs (``pairs``
0, ``status`` "no pairs") is ``Cell.no_pairs``, shown as "no pairs" and counted, never as a number.
Anything missing (a cell without metrics.json, an unreadable file, a null metric) is logged and
collected in ``results.issues``; it never raises. Only a run folder without any finished cell is
an error (DataError naming the folder).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from persalign.decoding import seed_free
from persalign.errors import ConfigError, DataError
from persalign.metrics.schema import METRICS_FILE, report_columns
from persalign.registry import load_plugins
from persalign.report.cell_parsing import expected, parse_cell
from persalign.report.results import Cell, RunResults

log = logging.getLogger(__name__)


def _planned_once(folder: Path) -> bool:
    """Whether the cell's spec.json names a seed-free baseline (``decoding.seed_free``: a run
    plans it once for every seed); False where the spec cannot be read."""
    try:
        spec = json.loads((folder / "spec.json").read_text(encoding="utf-8"))["spec"]
        return seed_free(str(spec["decoder"]), spec.get("decoder_settings") or {})
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return False


def old_win_rate(data: dict[str, Any]) -> bool:
    """Whether a metrics.json has a win rate from before the pooled rate (no ``rate`` key)."""
    block = data.get("win_rate")
    return isinstance(block, dict) and "rate" not in block and "mean" in block


def _names(names: list[str], limit: int = 12) -> str:
    """A readable list of cell names: the first ``limit`` and how many more."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _report(issues: list[str], message: str) -> None:
    log.warning("%s", message)
    issues.append(message)


def load_run(run_dir: str | Path, *, all_cells: bool = False) -> RunResults:
    """Read manifest.json and every cells/*/metrics.json; DataError when no cell is finished.

    Cells that the manifest's current plan no longer lists (left behind when a config dropped a
    method or seed) are skipped and reported, unless ``all_cells`` is true.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError("no such run folder", path=run_dir)
    issues: list[str] = []
    manifest = None
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _report(issues, f"manifest.json unreadable or missing ({type(exc).__name__})")
    if manifest is not None and not isinstance(manifest, dict):
        _report(issues, "manifest.json is not a JSON object; ignored")
        manifest = None
    plugins = ((manifest or {}).get("config") or {}).get("plugins") or []
    try:
        load_plugins(plugins)  # the run's metric plugins add their report columns
    except ConfigError as exc:
        _report(issues, f"{exc}: its columns are not reported")
    cells_dir = run_dir / "cells"
    folders = sorted(p for p in cells_dir.iterdir() if p.is_dir()) if cells_dir.is_dir() else []
    planned = (manifest or {}).get("cells")
    if not all_cells and isinstance(planned, list):
        stale = [p.name for p in folders if p.name not in set(planned)]
        if stale:
            _report(
                issues,
                f"{len(stale)} cell(s) not in the current plan (the config dropped them) skipped: "
                f"{_names(stale)}; `persalign report --all-cells` includes them",
            )
            folders = [p for p in folders if p.name in set(planned)]
    columns = report_columns()
    cells: list[Cell] = []
    seen: dict[tuple[Any, ...], str] = {}
    unfinished, old = [], []
    for folder in folders:
        path = folder / METRICS_FILE
        if not path.is_file():
            unfinished.append(folder.name)
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            cell = parse_cell(data, folder.name, columns)
            if cell.kind == "baseline" and _planned_once(folder):
                cell = dataclasses.replace(cell, seed_free=True)
        except (OSError, ValueError, TypeError) as exc:
            _report(issues, f"cell {folder.name}: metrics.json skipped ({exc})")
            continue
        key = (cell.benchmark, cell.policy, cell.row, cell.seed)
        if key in seen:
            _report(issues, f"cell {folder.name} duplicates {seen[key]}; kept {seen[key]}")
            continue
        seen[key] = folder.name
        cells.append(cell)
        if old_win_rate(data):
            old.append(folder.name)
    if unfinished:
        _report(issues, f"{len(unfinished)} cell(s) not finished: {_names(unfinished)}")
    if old:
        _report(
            issues,
            f"{len(old)} cell(s) have a win rate from an older persalign (per-user mean, ties "
            f"as losses), shown as --: rerun them for the pooled rate: {_names(old)}",
        )
    if not cells:
        raise DataError(
            "no finished cells (no cells/*/metrics.json): has `persalign run` finished any?",
            path=run_dir,
        )
    _report_nulls(cells, expected(columns), issues)
    bare = {c.cell: n for c in cells if (n := c.left_out.get("demonstrations.prompts_without"))}
    if bare:  # an ICL row whose prompts lost their demonstrations is partly zero-shot
        _report(
            issues,
            "ICL prompts without any demonstration (dropped to fit the baselines' "
            "max_prompt_tokens; such a prompt is the zero-shot one): "
            + ", ".join(f"{name} {n}" for name, n in sorted(bare.items())),
        )
    return RunResults(
        run_dir=run_dir, manifest=manifest, cells=cells, issues=issues, columns=columns
    )


def _report_nulls(
    cells: list[Cell], expected_keys: dict[str, tuple[str, ...]], issues: list[str]
) -> None:
    missing: dict[str, list[str]] = defaultdict(list)
    inapplicable: dict[tuple[str, str], list[str]] = defaultdict(list)
    empty: dict[str, list[str]] = defaultdict(list)
    for cell in cells:
        for metric in expected_keys[cell.kind]:
            # ROUGE without a BERTScore model: BERTScore was switched off, not lost.
            off = metric == "bertscore_f1" and not cell.bertscore_model and "rouge1" in cell.values
            if metric in cell.values or off:
                continue
            if metric in cell.not_applicable:
                inapplicable[(metric, cell.not_applicable[metric])].append(cell.cell)
            elif metric in cell.no_pairs:
                empty[metric].append(cell.cell)
            else:
                missing[metric].append(cell.cell)
    for metric in sorted(missing):
        names = missing[metric]
        _report(issues, f"{metric} missing in {len(names)} cell(s): {_names(sorted(names))}")
    for metric in sorted(empty):
        names = empty[metric]
        _report(issues, f"{metric}: no pairs in {len(names)} cell(s): {_names(sorted(names))}")
    for (metric, why), names in sorted(inapplicable.items()):
        issues.append(  # by design: listed, not warned about
            f"{metric} not applicable ({why}) in {len(names)} cell(s): {_names(sorted(names))}"
        )
