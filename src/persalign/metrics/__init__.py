"""Metrics: ranking (RM and policy accuracy), behavioural alignment, win rate, perplexity, and
the correlations across methods that the report computes.

    from persalign.metrics import METRICS, CellContext, compute_cell_metrics
    METRICS.names()                 # the metrics.json keys a run computes per cell
    compute_cell_metrics(ctx)       # {key: value} for one cell (see persalign.metrics.base)

Each per-cell metric is a CellMetric class registered with ``@register_metric(key)`` in the module
of the computation it wraps; ``persalign ls metrics`` lists them. The schema of a cell's
metrics.json (its fixed fields and the report's columns) is in ``persalign.metrics.schema``.
"""

from __future__ import annotations

from persalign.metrics.base import (
    METRICS,
    CellContext,
    CellMetric,
    Column,
    ZeroShot,
    compute_cell_metrics,
    register_metric,
)

__all__ = [
    "METRICS",
    "CellContext",
    "CellMetric",
    "Column",
    "ZeroShot",
    "compute_cell_metrics",
    "register_metric",
]
