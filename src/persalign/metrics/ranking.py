"""Ranking metrics: how often a scorer puts the user's chosen response above the rejected one.

    result = rm_accuracy(rm, bench.query)        # Eq. 2, per user then mean over users
    result["mean"], result["per_user"]["user-7"]

The ``rm_accuracy`` cell metric is the model job's ``rm_accuracy.json`` (``ctx.model_results``),
or, without it, ``rm_accuracy(ctx.reward_model, bench.query)``; a method whose class says
``has_rm_accuracy = False`` (P-DPO, "-" in the paper's tables) has none.

A reward model scores each pair as one row, its prompt once and both responses after it
(``pair_eval.pair_prefix_rewards_shared``: the same rewards as two ``sequence_rewards`` calls,
in batches of ``eval_batch_size`` pairs); a method that cannot share the prompt (P-DPO,
``shared_prompt`` off) and any other scorer with a ``sequence_rewards`` get two calls, one per
side, as before.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.rewards.engine.pair_eval import eval_mode, pair_prefix_rewards_shared
from persalign.types import Preference


def pairwise_hits(chosen: torch.Tensor, rejected: torch.Tensor) -> list[bool]:
    """Strictly better counts as a hit; a tie counts as a miss (Eq. 2's indicator)."""
    return (chosen > rejected).tolist()


NO_PAIRS = "no pairs"


def per_user_accuracy(prefs: Sequence[Preference], hits: Sequence[bool]) -> dict[str, Any]:
    """Accuracy per user, the mean over users (the paper's figure) and the pooled accuracy.

    No pairs at all: no number, ``mean`` and ``pooled`` both None and ``status`` "no pairs"
    (the report shows and counts it; 0.0 or NaN would read as a result)."""
    if not hits:
        return {"mean": None, "pooled": None, "per_user": {}, "pairs": 0, "users": 0,
                "status": NO_PAIRS}  # fmt: skip
    by_user: dict[str, list[bool]] = {}
    for pref, hit in zip(prefs, hits, strict=True):
        by_user.setdefault(pref.user, []).append(bool(hit))
    per_user = {user: sum(h) / len(h) for user, h in sorted(by_user.items())}
    return {
        "mean": statistics.fmean(per_user.values()),
        "pooled": sum(map(sum, by_user.values())) / len(hits),
        "per_user": per_user,
        "pairs": len(hits),
        "users": len(per_user),
    }


def rm_accuracy(rm, prefs: Sequence[Preference]) -> dict[str, Any]:
    """Eq. 2: the fraction of pairs where r(chosen) > r(rejected), per user, then averaged."""
    prefs = list(prefs)
    if prefs and eval_mode(rm) is not None:  # one shared-prompt row per pair
        chosen_prefix, rejected_prefix = pair_prefix_rewards_shared(rm, prefs)
        hits = pairwise_hits(chosen_prefix.last(), rejected_prefix.last())
        return per_user_accuracy(prefs, hits)
    return per_user_accuracy(prefs, pairwise_hits(*two_call_rewards(rm, prefs)))


def two_call_rewards(rm, prefs: Sequence[Preference]) -> tuple[torch.Tensor, torch.Tensor]:
    """r(chosen) and r(rejected) [N] each from two ``sequence_rewards`` calls (no shared row)."""
    prompts, users = [p.prompt for p in prefs], [p.user for p in prefs]
    chosen = rm.sequence_rewards(prompts, [p.chosen for p in prefs], users)
    return chosen, rm.sequence_rewards(prompts, [p.rejected for p in prefs], users)


@register_metric(
    "rm_accuracy", summary="Eq. 2: r(chosen) > r(rejected) on the query pairs, per user then mean"
)
class RMAccuracy(CellMetric):
    """RM accuracy of the method's reward model (shared by every policy of a seed)."""

    needs = frozenset({"reward_model"})
    kinds = frozenset({"method"})
    order = 10
    columns = (Column("rm_accuracy", ("rm_accuracy",), "RM Acc", True, "fraction", ("method",)),)

    def applies(self, ctx: CellContext) -> bool:
        """Not for a method without RM accuracy (``has_rm_accuracy`` False: P-DPO, "-")."""
        has = getattr(ctx.reward_model, "has_rm_accuracy", True)
        return super().applies(ctx) and bool(has)

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        if "rm_accuracy" in ctx.model_results:
            return ctx.model_results["rm_accuracy"]
        return rm_accuracy(ctx.reward_model, ctx.benchmark.query)
