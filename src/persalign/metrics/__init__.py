"""Metrics: ranking (RM and policy accuracy), behavioural alignment, win rate, correlations.

    from persalign.metrics import METRICS
    METRICS.names()          # every registered metric, listed by ``persalign ls metrics``

Each metric lives in its own module and registers a function with ``@METRICS.register(name)``.
"""

from __future__ import annotations

from persalign.registry import Registry

METRICS: Registry = Registry("metric", packages=("persalign.metrics",))

__all__ = ["METRICS"]
