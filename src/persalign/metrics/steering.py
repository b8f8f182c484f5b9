"""Steering accuracy: does the method's reward point from what the base policy writes toward
what the user writes?

    prompts = {(q.user, q.id): q.prompt for q in bench.query}
    result = steering_accuracy(rm, bench.completions, zero_shot_generations, prompts)
    result["mean"], result["per_user"]["user-7"], result["pairs"], result["unpaired"]

For every query prompt x of user u that has both the user's own completion y_u (the benchmark's
``completions``) and the base policy's zero-shot output y_0 (the zero-shot cell's
generations), it checks whether r_u(x, y_u) > r_u(x, y_0). The reward is the method's
reward for that user, and a tie counts as a miss. This is Eq. 2 with the user's own
text as the chosen response and zero-shot's as the rejected one: per user, then the mean over
users (``pooled``: over all prompts). It asks whether guidance moves away from the base policy
toward the user.

Nothing is dropped without being counted. A completion without a zero-shot output is counted
in ``unpaired``, and a pair with an empty text, which a reward model cannot score, is counted in
``empty``. When the zero-shot output is the user's text itself, the rewards are equal and the
pair is a miss. Cost: one ``sequence_rewards`` call over the 2N texts.

The ``steering_accuracy`` cell metric covers method cells with a reward model that has RM
accuracy (P-DPO, "-" in the paper's tables, does not) and a zero-shot cell with generations.
It is turned on and off by ``metrics.steering_accuracy.enabled`` (on by default).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.ranking import pairwise_hits, per_user_accuracy
from persalign.types import Completion, Preference

log = logging.getLogger(__name__)


def steering_accuracy(
    reward_model: Any,
    completions: Sequence[Completion],
    zero_shot_generations: Sequence[Mapping[str, Any]],
    prompts_by_key: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    """Eq. 2 with (user's completion, zero-shot output) as (chosen, rejected); see module doc.

    ``prompts_by_key``: (user, id) -> the prompt (a completion's own prompt is used without one).
    Returns per_user_accuracy's ``{"mean", "pooled", "per_user", "pairs", "users"}`` plus
    ``unpaired`` and ``empty``.
    """
    zero = {(str(g["user"]), str(g["id"])): str(g["text"]) for g in zero_shot_generations}
    pairs: list[Preference] = []
    unpaired = empty = 0
    for c in sorted(completions, key=lambda c: (c.user, c.id)):
        key = (c.user, c.id)
        if key not in zero:
            unpaired += 1
        elif not c.reference.strip() or not zero[key].strip():
            empty += 1
        else:
            prompt = prompts_by_key.get(key, c.prompt)
            pairs.append(Preference(c.id, c.user, prompt, c.reference, zero[key]))
    if unpaired or empty:
        log.warning("steering accuracy: %d unpaired, %d empty texts not scored", unpaired, empty)
    hits: list[bool] = []
    if pairs:
        users = [p.user for p in pairs]
        prompts = [p.prompt for p in pairs]
        texts = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        rewards = reward_model.sequence_rewards(prompts + prompts, texts, users + users)  # [2N]
        n = len(pairs)
        hits = pairwise_hits(rewards[:n], rewards[n:])  # the same text: a tie (float noise aside)
        hits = [hit and p.chosen != p.rejected for hit, p in zip(hits, pairs, strict=True)]
    return {**per_user_accuracy(pairs, hits), "unpaired": unpaired, "empty": empty}


@register_metric(
    "steering_accuracy",
    summary="r_u(x, user's own text) > r_u(x, zero-shot output), per user then mean (Eq. 2 form)",
)
class SteeringAccuracy(CellMetric):
    """Steering accuracy of the method's reward model against the zero-shot cell's outputs."""

    needs = frozenset({"reward_model", "references", "zero_shot"})
    kinds = frozenset({"method"})
    order = 45
    columns = (
        Column("steering_accuracy", ("steering_accuracy",), "Steering Acc", True, "fraction", ()),
    )

    def applies(self, ctx: CellContext) -> bool:
        return super().applies(ctx) and ctx.judges_zero_shot()

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        zero_shot = ctx.zero_shot.generations if ctx.zero_shot is not None else None
        return steering_accuracy(
            ctx.reward_model, ctx.benchmark.completions, zero_shot or [], ctx.prompts()
        )
