"""Metrics: ranking (RM and policy accuracy), behavioural alignment, win rate, correlations.

    >>> from persalign.metrics import METRICS
    >>> METRICS.names()          # every registered metric, listed by ``persalign ls metrics``

Each metric lives in its own module and registers a function with ``@METRICS.register(name)``.
"""

from __future__ import annotations

from persalign.registry import Registry

METRICS: Registry = Registry(
    "metric",
    autoload=(
        "persalign.metrics.ranking",
        "persalign.metrics.policy",
        "persalign.metrics.generation",
        "persalign.metrics.perplexity",
        "persalign.metrics.winrate",
        "persalign.metrics.correlation",
    ),
)

__all__ = ["METRICS"]
