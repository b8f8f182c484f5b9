"""Policy accuracy (paper Eq. 3): does the scoring function used at generation time rank the
user's chosen response above the rejected one?

    policy = Policy.load("bundled:smollm2-135m-instruct")
    policy_accuracy(policy, bench.query, scorer="base")                       # Eq. 4
    policy_accuracy(policy, bench.query, scorer="personal-rgd", reward_model=rm, lam=1.0)
    policy_accuracy(policy, bench.query, scorer="icl", support=support_by_user, shots=4)
    policy_accuracy(None, bench.query, scorer="personalized-policy", reward_model=pdpo)
    curve = policy_accuracy_curve(policy, heldout, rm, [0.0, 0.5, 1.0, 2.0])  # {lam: result}

Scorers, with |y| the response length in policy tokens:

- ``base`` (Eq. 4): (1/|y|) sum_t log pi(y_t | x, y_<t).
- ``global-rgd`` / ``personal-rgd`` (Eqs. 5, 6): sum_t [log pi(y_t | x, y_<t) + lam * r(y_t | x,
  y_<t)], the quantity ARGS maximizes token by token. The token reward is the reward model's
  prefix reward r(x, y_<=t) (``RewardModel.prefix_rewards``, what ARGS compares at step t), or,
  for a ``cumulative`` method (GenARM, P-DPO: the prefix reward is a running sum), the
  difference of consecutive prefix rewards (``scoring.token_rewards``). ``global-rgd`` passes
  the users through too (a global model ignores them); ``personal-rgd`` requires them. A method
  without RGD (``supports_rgd`` False: PAL) has no RGD score.
- ``personalized-policy`` (P-DPO, which writes with its own policy): (1/|y|) sum_t
  log pi_theta(y_t | e_u, x, y_<t), the user's soft tokens e_u in front, normalised as Eq. 4;
  ``personalized-policy-sum``: the plain sum. No base policy and no lambda.
- ``icl`` (Eq. 7): ``base`` with the user's demonstrations prepended, built by
  :func:`persalign.decoding.icl.icl_prompt_ids` exactly as the ``icl`` decoder builds its prompts.

Cost (:mod:`persalign.metrics.scoring`): ONE policy forward pass over each prompt with both
responses of its pair on one row (``candidate_scoring``'s shared row: the prompt, often an ICL
prompt of hundreds of tokens, is encoded once, not twice) gives every log pi(y_t | ...), and ONE
reward-model pass gives every prefix reward. The two
sums are kept apart (:class:`ScoreParts`), so any lambda grid is a cheap recombination. The policy
and the reward model may have different tokenizers: the log pi sum runs over the policy's tokens
(policy chat template, ``policy.formatter``) and the reward sum over the reward model's own
tokens (its own ``formatter``), so the two sums need not have the same number of terms. Both
formatters cut over-long prompts in the middle and responses at ``max_response_tokens``.
Per-token log-probabilities are computed and summed in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from persalign.decoding import DECODERS
from persalign.errors import ConfigError
from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.preference_scores import (
    check_inputs,
    icl_prompts,
    policy_scores,
    preference_parts,
)
from persalign.metrics.ranking import pairwise_hits, per_user_accuracy
from persalign.metrics.scoring import (
    POLICY_MODEL_SCORERS,
    RGD_SCORERS,
    SCORERS,
    ScoreParts,
    method_scorer,
    score_parts,
)
from persalign.metrics.settings import ScoringSettings
from persalign.metrics.text_scores import TextScores
from persalign.types import Preference

__all__ = [
    "SCORERS",
    "ScoreParts",
    "method_scorer",
    "policy_accuracy",
    "policy_accuracy_curve",
    "policy_scores",
    "score_parts",
]


def accuracy_from_parts(
    prefs: Sequence[Preference], parts: ScoreParts, scorer: str, lam: float = 1.0
) -> dict[str, Any]:
    """Eq. 3 per user, then the mean over users, from precomputed :class:`ScoreParts`."""
    scores = parts.scores(scorer, lam)  # [2N]
    n = len(prefs)
    result = per_user_accuracy(prefs, pairwise_hits(scores[:n], scores[n:]))
    return {**result, "scorer": scorer, "lam": lam if scorer in RGD_SCORERS else None}


def policy_accuracy(
    policy,
    prefs: Sequence[Preference],
    *,
    scorer: str,
    reward_model=None,
    lam: float = 1.0,
    support: Mapping[str, Sequence[Preference]] | None = None,
    shots: int = 4,
    seed: int = 0,
    batch_size: int = 8,
    padding_side: str = "right",
    icl_decoder: str = "icl",
    icl_settings: Mapping[str, Any] | None = None,
    progress: bool = True,
    memo: TextScores | None = None,
) -> dict[str, Any]:
    """Policy accuracy (Eq. 3) of ``scorer``: per user, then the mean over users.

    ``personalized-policy``: ``reward_model``'s own policy scores (``policy`` is not used).
    ``icl``: demonstrations come from ``support`` (user -> preferences) exactly as the
    ``icl_decoder`` ("icl" or "icl-rag") picks them for generation, with ``shots`` and ``seed``.
    ``memo``: where the base policy scores, its per-text sums are recorded there (the cell's
    ``text_scores``, which the ground-truth rank reads).
    """
    prefs = list(prefs)
    check_inputs(scorer, reward_model, [p.user for p in prefs])
    prompt_ids = None
    if scorer == "icl":
        if support is None:
            raise ConfigError("the icl scorer needs the users' support sets")
        settings = dict(icl_settings or {})
        prompt_ids = icl_prompts(
            policy, prefs, support, shots=shots, seed=seed, decoder=icl_decoder, **settings
        )
    own = scorer in POLICY_MODEL_SCORERS  # the method's own policy scores, not ``policy``
    parts = preference_parts(
        None if own else policy,
        prefs,
        reward_model=reward_model if scorer in (*RGD_SCORERS, *POLICY_MODEL_SCORERS) else None,
        prompt_ids=prompt_ids,
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
        memo=memo,
    )
    return accuracy_from_parts(prefs, parts, scorer, lam)


def policy_accuracy_curve(
    policy,
    prefs: Sequence[Preference],
    reward_model,
    lams: Sequence[float],
    *,
    scorer: str = "personal-rgd",
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
) -> dict[float, dict[str, Any]]:
    """{lam: policy accuracy of the RGD ``scorer``}: the policy and reward passes run once."""
    if scorer not in RGD_SCORERS:
        raise ConfigError(f"a lambda curve needs an RGD scorer ({', '.join(RGD_SCORERS)})")
    prefs = list(prefs)
    check_inputs(scorer, reward_model, [p.user for p in prefs])
    parts = preference_parts(
        policy,
        prefs,
        reward_model=reward_model,
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
    )
    return {float(lam): accuracy_from_parts(prefs, parts, scorer, float(lam)) for lam in lams}


def _fraction(key: str, label: str, expected: tuple[str, ...]) -> Column:
    return Column(key, (key,), label, True, "fraction", expected)


class PolicyAccuracySettings(ScoringSettings):
    """Options of policy accuracy (``metrics.policy_accuracy``; lambda selection uses them too)."""

    personalized_policy_score: Literal["mean", "sum"] = Field(
        "mean",
        description="Policy accuracy of a method that writes with its own policy (P-DPO): its "
        "mean token log-likelihood (Eq. 4's normalisation) or the plain sum.",
    )


def cell_scorer(ctx: CellContext) -> str | None:
    """A method cell's scorer (``scoring.method_scorer`` of its reward model and decoder)."""
    score = ctx.options("policy_accuracy").personalized_policy_score
    return method_scorer(type(ctx.reward_model), DECODERS.get(ctx.decoder), score)


@register_metric(
    "policy_accuracy",
    summary="Eq. 3 with the cell's own scorer: RGD or the method's policy (methods), base or ICL",
)
class PolicyAccuracy(CellMetric):
    """Policy accuracy of the scorer the cell generates with (at the chosen lambda for RGD).

    Method cells: none for a method without RGD under an RGD decoder (PAL under ARGS).
    """

    settings_class = PolicyAccuracySettings
    needs = frozenset({"policy"})
    order = 20
    columns = (_fraction("policy_accuracy", "Policy Acc", ("method",)),)

    def applies(self, ctx: CellContext) -> bool:
        if ctx.kind == "method" and ctx.reward_model is not None and cell_scorer(ctx) is None:
            return False
        return super().applies(ctx)

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        query, batch = ctx.benchmark.query, self.settings.batch_size
        if ctx.kind == "method":
            if ctx.reward_model is None:
                raise ConfigError(f"policy accuracy of {ctx.method}: no reward model")
            scorer = cell_scorer(ctx)
            if scorer in POLICY_MODEL_SCORERS:
                return policy_accuracy(
                    None, query, scorer=scorer, reward_model=ctx.reward_model, batch_size=batch
                )
            if ctx.lam is None:
                raise ConfigError(f"policy accuracy of {ctx.method}: no lambda")
            return policy_accuracy(
                ctx.policy,
                query,
                scorer=scorer,
                reward_model=ctx.reward_model,
                lam=ctx.lam,
                batch_size=batch,
                memo=ctx.text_scores,
            )
        if not DECODERS.get(ctx.decoder).needs_support:  # the policy alone: Eq. 4
            return policy_accuracy(
                ctx.policy, query, scorer="base", batch_size=batch, memo=ctx.text_scores
            )
        return policy_accuracy(  # demonstrations from the support set: Eq. 7
            ctx.policy,
            query,
            scorer="icl",
            support=ctx.support(),
            shots=ctx.shots,
            seed=ctx.seed,
            batch_size=batch,
            icl_decoder=ctx.decoder,
            # the cell decoder's own settings: the scorer renders what generation rendered
            icl_settings={k: v for k, v in (ctx.icl or {}).items() if k not in ("shots", "seed")},
            memo=ctx.text_scores,
        )


@register_metric(
    "base_policy_accuracy",
    summary="Eq. 4: the base policy's own accuracy (the zero-shot cell's), the methods' reference",
)
class BasePolicyAccuracy(CellMetric):
    """The base scorer's policy accuracy: the zero-shot cell's, copied into method cells."""

    settings_class = ScoringSettings
    needs = frozenset({"policy"})
    order = 30
    columns = (_fraction("base_policy_accuracy", "Base Policy Acc", ()),)

    def applies(self, ctx: CellContext) -> bool:
        return super().applies(ctx) and (ctx.kind == "method" or ctx.method == "zero-shot")

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        if ctx.kind == "baseline" and "policy_accuracy" in ctx.results:
            return ctx.results["policy_accuracy"]
        if ctx.kind == "method" and ctx.zero_shot is not None:
            return ctx.zero_shot.metrics["policy_accuracy"]
        return policy_accuracy(
            ctx.policy, ctx.benchmark.query, scorer="base", batch_size=self.settings.batch_size
        )
