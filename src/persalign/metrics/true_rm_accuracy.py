"""True RM accuracy: does the learned reward order query pairs as the simulated user's own does?

    result = true_rm_accuracy(rm, bench)
    result["mean"], result["eq2"], result["true_ties"]
    result["spread"]["per_user"]["sim-007"], result["spread"]["collapsed"]

Eq. 2 (``rm_accuracy``) scores the learned reward against the sampled labels, which carry the
simulation's Bradley-Terry noise (BETA). Here the reference is noise-free: a query pair is a hit
when the learned reward orders its two responses as r_u does (a tie of the learned reward is a
miss; a pair r_u itself ties is left out and counted in ``true_ties``). Per user, then the mean
over users; ``eq2`` is the model job's Eq. 2 figure beside it.

``spread``: per user, the standard deviation of the learned reward over that user's candidates
(both responses of each of its query pairs), and ``pooled_std`` over every user's candidates.
A user whose spread is at most ``COLLAPSE`` (1%) of the pooled one is "collapsed": its reward is
nearly constant, so it cannot guide decoding; they are counted and listed.

The ``true_rm_accuracy`` cell metric covers method cells on sim benchmarks whose method has an
RM accuracy (not P-DPO). Cost: one scoring pass of the query pairs (two sequence_rewards calls).
"""

from __future__ import annotations

import statistics
from typing import Any

from persalign.errors import ConfigError
from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.ranking import per_user_accuracy, two_call_rewards
from persalign.types import Benchmark

COLLAPSE = 0.01  # a user's spread at most this share of the pooled spread: collapsed


def reward_spread(users: list[str], rewards: list[float]) -> dict[str, Any]:
    """Per-user standard deviation of ``rewards`` (population), the pooled one and the
    collapsed users (spread <= COLLAPSE x pooled)."""
    by_user: dict[str, list[float]] = {}
    for user, value in zip(users, rewards, strict=True):
        by_user.setdefault(user, []).append(value)
    per_user = {u: statistics.pstdev(v) for u, v in sorted(by_user.items())}
    pooled = statistics.pstdev(rewards) if rewards else 0.0
    collapsed = [u for u, s in per_user.items() if s <= COLLAPSE * pooled]
    return {
        "per_user": per_user,
        "pooled_std": pooled,
        "collapsed": collapsed,
        "collapsed_count": len(collapsed),
        "threshold": COLLAPSE,
    }


def true_rm_accuracy(rm: Any, bench: Benchmark) -> dict[str, Any]:
    """per_user_accuracy's fields against r_u's order, plus ``true_ties`` and ``spread``."""
    truth = bench.true_reward
    if truth is None:
        raise ConfigError(f"benchmark {bench.name!r} has no true reward (not a sim benchmark)")
    prefs = list(bench.query)
    users = [p.user for p in prefs]
    prompts = [p.prompt for p in prefs]
    true_c = truth.rewards(prompts, [p.chosen for p in prefs], users)
    true_r = truth.rewards(prompts, [p.rejected for p in prefs], users)
    learned_c, learned_r = (t.tolist() for t in two_call_rewards(rm, prefs)) if prefs else ([], [])
    kept, hits = [], []
    for i, pref in enumerate(prefs):
        if true_c[i] == true_r[i]:
            continue
        kept.append(pref)
        order = learned_c[i] - learned_r[i]
        hits.append(order != 0 and (order > 0) == (true_c[i] > true_r[i]))
    return {
        **per_user_accuracy(kept, hits),
        "true_ties": len(prefs) - len(kept),
        "spread": reward_spread(users + users, [float(x) for x in learned_c + learned_r]),
    }


@register_metric(
    "true_rm_accuracy",
    summary="Sim benchmarks: the learned reward orders query pairs as r_u does (noise-free)",
)
class TrueRMAccuracy(CellMetric):
    """RM accuracy against the simulated users' noise-free order, and each user's spread."""

    needs = frozenset({"reward_model", "true_reward"})
    kinds = frozenset({"method"})
    order = 63
    columns = (Column("true_rm_accuracy", ("true_rm_accuracy",), "True RM Acc", True, "fraction"),)

    def applies(self, ctx: CellContext) -> bool:
        judge = bool(getattr(ctx.reward_model, "has_rm_accuracy", True))
        return super().applies(ctx) and judge

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        out = true_rm_accuracy(ctx.reward_model, ctx.benchmark)
        eq2 = ctx.model_results.get("rm_accuracy")
        return {**out, "eq2": eq2.get("mean") if isinstance(eq2, dict) else None}
