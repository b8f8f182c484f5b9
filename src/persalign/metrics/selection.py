"""Model selection by any report column: which (method, seed, lambda) a run would deploy.

    column = selection_column("gt_mrr")      # ConfigError naming the valid names otherwise
    picks = select_best(records, column)     # one pick per (benchmark, policy)
    picks[0]["best"]     # {"row": "lore", "method": "lore", "seed": 1, "lambda": 2.0, "value": ...}
    picks[0]["rows"]     # every row (method or baseline) by its mean over seeds, best first

A record is one finished cell as a plain mapping with ``benchmark``, ``policy``, ``row`` (the
method, or the baseline with its shots, e.g. ``icl-rag-4``), ``method``, ``seed``, ``lambda``
and ``values`` (report column key -> number), which is what ``persalign.report.reading`` reads.
Cells without a value for the column (RM accuracy of a baseline) take no part. The best cell
is the highest value (the lowest for a lower-is-better column); ties go to the first row, then
the first seed, in name order, so the pick is deterministic. The selectable names are every
report column that has a direction (``persalign.metrics.schema.report_columns``): RM accuracy,
policy accuracy, win rate, ROUGE, BERTScore, the steering, ground-truth-rank and prefix
accuracies, and any plugin's columns.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from persalign.errors import ConfigError
from persalign.metrics.base import Column
from persalign.metrics.schema import report_columns


def selectable_columns() -> dict[str, Column]:
    """Report column key -> Column, for every column with a direction (not lambda)."""
    return {c.key: c for c in report_columns() if c.higher_is_better is not None}


def selection_column(name: str) -> Column:
    """The column named ``name``; ConfigError listing the valid names otherwise."""
    columns = selectable_columns()
    if name not in columns:
        raise ConfigError(
            f"unknown selection metric {name!r}; choose one of {', '.join(sorted(columns))}"
        )
    return columns[name]


def _order(column: Column, value: float) -> float:
    return -value if column.higher_is_better else value


def select_best(records: Sequence[Mapping[str, Any]], column: Column) -> list[dict[str, Any]]:
    """Per (benchmark, policy), in name order: the best cell and every row by its seed mean.

    Each pick: ``{"benchmark", "policy", "metric", "higher_is_better", "best", "rows",
    "cells"}``; ``best`` is ``{"row", "method", "seed", "lambda", "value"}``, ``rows`` a list of
    ``{"row", "method", "mean", "seeds", "best_seed", "best_value"}``.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        value = (record.get("values") or {}).get(column.key)
        if value is not None:
            key = (str(record["benchmark"]), str(record["policy"]))
            groups.setdefault(key, []).append(record)
    picks = []
    for (benchmark, policy), cells in sorted(groups.items()):
        cells = sorted(
            cells,
            key=lambda r: (_order(column, r["values"][column.key]), str(r["row"]), r["seed"]),
        )
        by_row: dict[str, list[Mapping[str, Any]]] = {}
        for record in cells:
            by_row.setdefault(str(record["row"]), []).append(record)
        rows = [
            {
                "row": row,
                "method": str(members[0]["method"]),
                "mean": statistics.fmean(m["values"][column.key] for m in members),
                "seeds": sorted(int(m["seed"]) for m in members),
                "best_seed": int(members[0]["seed"]),
                "best_value": members[0]["values"][column.key],
            }
            for row, members in by_row.items()
        ]
        rows.sort(key=lambda r: (_order(column, r["mean"]), r["row"]))
        top = cells[0]
        picks.append(
            {
                "benchmark": benchmark,
                "policy": policy,
                "metric": column.key,
                "higher_is_better": column.higher_is_better,
                "best": {
                    "row": str(top["row"]),
                    "method": str(top["method"]),
                    "seed": int(top["seed"]),
                    "lambda": top.get("lambda"),
                    "value": top["values"][column.key],
                },
                "rows": rows,
                "cells": len(cells),
            }
        )
    return picks
