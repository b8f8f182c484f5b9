"""Metrics: ranking (RM and policy accuracy), behavioural alignment, win rate, perplexity, and
the correlations across methods that the report computes.

    from persalign.metrics import METRICS, CellContext, compute_cell_metrics
    METRICS.names()                 # the metrics.json keys a run computes per cell
    compute_cell_metrics(ctx)       # {key: value} for one cell (see persalign.metrics.base)
    metric_settings({"batch_size": 16, "win_rate": {"ties": "half"}})  # a run's metrics section

Each per-cell metric is a CellMetric class registered with ``@register_metric(key)`` in the module
of the computation it wraps, with its options in its ``settings_class`` (a MetricSettings);
``persalign ls metrics`` lists them and their options. The schema of a cell's
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
    metric_settings,
    register_metric,
    settings_json,
)
from persalign.metrics.settings import SHARED_OPTIONS, MetricSettings, ScoringSettings

__all__ = [
    "METRICS",
    "SHARED_OPTIONS",
    "CellContext",
    "CellMetric",
    "Column",
    "MetricSettings",
    "ScoringSettings",
    "ZeroShot",
    "compute_cell_metrics",
    "metric_settings",
    "register_metric",
    "settings_json",
]
