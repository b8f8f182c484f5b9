"""Prefix accuracy: RM accuracy on every prefix length, which is what ARGS compares.

    result = prefix_accuracy(rm, bench.query)
    result["mean"], result["per_user"]["user-7"], result["pooled"]
    rm_acc, prefix_acc = accuracies(rm, bench.query)   # Eq. 2 and this, from one pass per side

ARGS never scores whole responses: at step t it compares the rewards of prefixes. For a pair
(x, y_w, y_l) let T = min(|y_w|, |y_l|), counted in the reward model's own tokens after its
``max_response_tokens`` cut, so T is the length of the shorter response, and let d be the
number of leading tokens the two responses share. The pair's score is

    1/(T - d) sum_{t=d+1..T} 1[r(x, y_w[:t]) > r(x, y_l[:t])]

where a tie counts as a miss (Eq. 2's indicator). Positions past T are left out because one of
the two responses has already ended there. Positions up to d are left out because there the two
prefixes are the same text, so no reward model can prefer one of them (counting them as misses
would keep a perfect model below 1, and comparing the two passes' floats there would be noise).
A pair with T = d (one response is the start of the other) has no prefix to compare and is
counted in ``no_prefix``. Each user's score is the mean over their pairs, and the reported
score is the mean over users (Eq. 2's shape). ``pooled`` is the mean over all pairs.

Cost: ``RewardModel.prefix_rewards`` gives r(x, y[:t]) for every t in ONE forward pass per batch;
``pair_eval.pair_prefix_rewards_shared`` gives both sides' from one pass over one row per pair
(the prompt once, both responses after it), and falls back to one ``prefix_rewards`` pass per
side for a method that cannot share the prompt (P-DPO, ``shared_prompt`` off). Eq. 2's RM
accuracy comes from the same pass (the last prefix), which is how the model job writes both
files.

The ``prefix_accuracy`` cell metric uses the model job's ``prefix_accuracy.json``
(``ctx.model_results``) when there is one, and computes it otherwise. It is turned on and off by
``metrics.prefix_accuracy.enabled`` (on by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.generation import per_user_mean
from persalign.metrics.ranking import pairwise_hits, per_user_accuracy
from persalign.rewards.base import PrefixRewards
from persalign.rewards.engine.pair_eval import pair_prefix_rewards_shared
from persalign.types import Preference


def pair_prefix_rewards(rm, prefs: Sequence[Preference]) -> tuple[PrefixRewards, PrefixRewards]:
    """The prefix rewards of every chosen response and every rejected one: one shared-prompt
    row per pair where the method allows it, else one pass each side (``ranking.rm_accuracy``
    scores the same way)."""
    return pair_prefix_rewards_shared(rm, prefs)


def shared_tokens(rm, prefs: Sequence[Preference]) -> torch.Tensor:
    """[N] how many leading tokens (the reward model's) each pair's two responses share."""
    out = []
    for p in prefs:
        a, b = rm.formatter.response_ids(p.chosen), rm.formatter.response_ids(p.rejected)
        same = 0
        while same < min(len(a), len(b)) and a[same] == b[same]:
            same += 1
        out.append(same)
    return torch.tensor(out, dtype=torch.long)


def prefix_hits(
    chosen: PrefixRewards, rejected: PrefixRewards, shared: torch.Tensor | None = None
) -> list[float | None]:
    """[N] the fraction of prefix lengths t = d+1..T (T: the shorter response, d: ``shared``
    leading tokens, default 0) at which r(x, y_w[:t]) > r(x, y_l[:t]); None where T = d."""
    shorter = torch.minimum(chosen.lengths, rejected.lengths)  # [N]
    shared = torch.zeros_like(shorter) if shared is None else shared
    width = int(shorter.max()) if len(shorter) else 0
    wins = chosen.rewards[:, :width] > rejected.rewards[:, :width]  # [N, width]
    steps = torch.arange(width)[None, :]  # [1, width]: t - 1
    valid = (steps >= shared[:, None]) & (steps < shorter[:, None])  # [N, width]
    counts, n = (wins & valid).sum(dim=1).tolist(), valid.sum(dim=1).tolist()
    return [c / k if k else None for c, k in zip(counts, n, strict=True)]


def prefix_summary(
    prefs: Sequence[Preference],
    chosen: PrefixRewards,
    rejected: PrefixRewards,
    shared: torch.Tensor | None = None,
) -> dict[str, Any]:
    """``{"mean", "pooled", "per_user", "pairs", "users", "no_prefix", "mean_prefixes"}``."""
    hits = prefix_hits(chosen, rejected, shared)
    kept = [(p.user, h) for p, h in zip(prefs, hits, strict=True) if h is not None]
    result = per_user_mean([u for u, _ in kept], [h for _, h in kept])
    shorter = torch.minimum(chosen.lengths, rejected.lengths)
    compared = (shorter - (0 if shared is None else shared)).clamp(min=0).double()
    result.update(
        pairs=len(kept),
        users=len(result["per_user"]),
        no_prefix=len(hits) - len(kept),
        mean_prefixes=float(compared.mean()) if len(compared) else None,
    )
    return result


def accuracies(rm, prefs: Sequence[Preference]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Eq. 2's RM accuracy, prefix accuracy) of ``prefs`` from one prefix-reward pass per side."""
    prefs = list(prefs)
    chosen, rejected = pair_prefix_rewards(rm, prefs)
    rm_acc = per_user_accuracy(prefs, pairwise_hits(chosen.last(), rejected.last()))
    return rm_acc, prefix_summary(prefs, chosen, rejected, shared_tokens(rm, prefs))


def prefix_accuracy(rm, prefs: Sequence[Preference]) -> dict[str, Any]:
    """Prefix accuracy of ``rm`` on ``prefs``, per user, then the mean over users."""
    return accuracies(rm, prefs)[1]


@register_metric(
    "prefix_accuracy",
    summary="RM accuracy on every prefix y[:t], t up to the shorter response (what ARGS compares)",
)
class PrefixAccuracy(CellMetric):
    """Prefix accuracy of the method's reward model on the query pairs (metrics.prefix_accuracy)."""

    needs = frozenset({"reward_model"})
    kinds = frozenset({"method"})
    order = 15
    columns = (Column("prefix_accuracy", ("prefix_accuracy",), "Prefix Acc", True, "fraction", ()),)

    def applies(self, ctx: CellContext) -> bool:
        """Not for a method without RM accuracy (``has_rm_accuracy`` False: P-DPO)."""
        has = getattr(ctx.reward_model, "has_rm_accuracy", True)
        return super().applies(ctx) and bool(has)

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        if "prefix_accuracy" in ctx.model_results:
            return ctx.model_results["prefix_accuracy"]
        return prefix_accuracy(ctx.reward_model, ctx.benchmark.query)
