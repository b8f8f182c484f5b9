"""Captured: the share of the oracle's true gain a method reaches (sim benchmarks).

    captured_share(method_gain=0.12, oracle_gain=0.40)     # {"share": 0.3, ...}

The oracle (reward method ``oracle``: r_u itself guiding the same decoder) is the ceiling of
reward-guided decoding. ``captured`` divides a method cell's true gain over zero-shot (mean over
users, ``true_gain``) by the oracle cell's (same benchmark, policy and seed): 1 is the ceiling,
0 is zero-shot, a negative share makes generations worse. With an oracle gain of at most 0 the
share is undefined (null, ``reason`` says why): the setup cannot show a gain, whatever the method.
The ``captured`` cell metric covers method cells (the oracle's own aside) of a run whose methods
include the oracle.
"""

from __future__ import annotations

from typing import Any

from persalign.metrics.base import CellContext, CellMetric, Column, register_metric


def captured_share(method_gain: float | None, oracle_gain: float | None) -> dict[str, Any]:
    """``{"share", "true_gain", "oracle_true_gain", "reason"}``."""
    out: dict[str, Any] = {"true_gain": method_gain, "oracle_true_gain": oracle_gain}
    if method_gain is None or oracle_gain is None:
        return {**out, "share": None, "reason": "no true gain (method or oracle)"}
    if oracle_gain <= 0:
        return {**out, "share": None, "reason": "the oracle gains nothing over zero-shot"}
    return {**out, "share": method_gain / oracle_gain, "reason": None}


def _gain(metrics: dict[str, Any] | None) -> float | None:
    value = (metrics or {}).get("true_gain")
    mean = value.get("mean") if isinstance(value, dict) else None
    return float(mean) if isinstance(mean, int | float) else None


@register_metric("captured", summary="Sim benchmarks: true gain / the oracle's true gain")
class Captured(CellMetric):
    """The method's true gain as a share of the oracle cell's."""

    needs = frozenset({"true_reward", "oracle"})
    kinds = frozenset({"method"})
    order = 64  # after true_gain (61)
    columns = (Column("captured", ("captured", "share"), "Captured", True, "fraction", ()),)

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        oracle = ctx.oracle.metrics if ctx.oracle is not None else None
        return captured_share(_gain(ctx.results), _gain(oracle))
