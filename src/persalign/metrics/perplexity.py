"""Perplexity of generations under the base policy: the coherence figure of appendix F.2.

    result = perplexity(policy, prompts, texts, users=users)
    result["mean"], result["per_user"]["user-7"], result["values"][0]

The perplexity of a text y given its prompt x is exp(-(1/|y|) sum_t log pi(y_t | x, y_<t)), with
the prompt rendered by the policy's chat template, as the text was generated. One policy forward
pass per batch gives every log pi (:mod:`persalign.metrics.scoring`). Empty texts cannot be
scored: their value is None and they are counted in ``skipped``. ``mean`` is per user, then over
users (over texts when no users are given); ``pooled`` is the token-level perplexity of all texts.

The ``perplexity`` cell metric (on unless ``metrics.perplexity.enabled`` is false; option
``batch_size``) scores the cell's generations with their query prompts; the per-text ``values``
are left out of metrics.json.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.scoring import policy_logprob_sums
from persalign.metrics.settings import ScoringSettings


def perplexity(
    policy,
    prompts: Sequence[str],
    texts: Sequence[str],
    users: Sequence[str] | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
) -> dict[str, Any]:
    """{"mean", "pooled", "per_user", "values" (None for empty texts), "n", "skipped"}."""
    prompts, texts = list(prompts), list(texts)
    if len(prompts) != len(texts) or (users is not None and len(users) != len(texts)):
        raise ValueError("prompts, texts (and users) must have the same length")
    tokenize = policy.tokenizer
    keep = [i for i, t in enumerate(texts) if tokenize(t, add_special_tokens=False)["input_ids"]]
    values: list[float | None] = [None] * len(texts)
    nan = float("nan")
    if not keep:
        empty = {"mean": nan, "pooled": nan, "per_user": {}, "values": values, "n": 0}
        return {**empty, "skipped": len(texts)}
    logp, tokens = policy_logprob_sums(
        policy,
        [policy.formatter.prompt_ids(prompts[i]) for i in keep],
        [texts[i] for i in keep],
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
    )
    per_text = torch.exp(-logp / tokens.to(torch.float64))  # [n] float64
    for i, value in zip(keep, per_text.tolist(), strict=True):
        values[i] = value
    by_user: dict[str, list[float]] = {}
    if users is not None:
        for i in keep:
            by_user.setdefault(users[i], []).append(values[i])  # type: ignore[arg-type]
    per_user = {user: statistics.fmean(v) for user, v in sorted(by_user.items())}
    mean = statistics.fmean(per_user.values()) if per_user else statistics.fmean(per_text.tolist())
    return {
        "mean": mean,
        "pooled": math.exp(-float(logp.sum()) / int(tokens.sum())),
        "per_user": per_user,
        "values": values,
        "n": len(keep),
        "skipped": len(texts) - len(keep),
    }


@register_metric(
    "perplexity", summary="Perplexity of the generations under the base policy (coherence)"
)
class Perplexity(CellMetric):
    """Perplexity of the cell's generations given their prompts (metrics.perplexity)."""

    settings_class = ScoringSettings

    needs = frozenset({"generations", "policy"})
    order = 60
    columns = (Column("perplexity", ("perplexity",), "Perplexity", False, "number"),)

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        gens, prompts = ctx.generations or [], ctx.prompts()
        result = perplexity(
            ctx.policy,
            [prompts[g["user"], g["id"]] for g in gens],
            [g["text"] for g in gens],
            users=[g["user"] for g in gens],
            batch_size=self.settings.batch_size,
            progress=False,
        )
        return {k: v for k, v in result.items() if k != "values"}
