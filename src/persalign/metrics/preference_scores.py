"""The scores policy accuracy compares: each text's score under a scorer (``policy_scores``),
and every preference pair's parts in one pass per prompt (``preference_parts``); the
ground-truth rank builds its ICL prompts with ``icl_prompts``. The scorers are described in
``persalign.metrics.policy_accuracy``.

    policy_scores(policy, prompts, responses, scorer="personal-rgd", reward_model=rm, users=users)
    parts = preference_parts(policy, bench.query, reward_model=rm, memo=ctx.text_scores)
    parts.scores("personal-rgd", lam=1.0)      # [2N]: every chosen response, then every rejected
    ids = icl_prompts(policy, bench.query, support_by_user, shots=1, decoder="icl-rag")

``pair_sums`` puts both responses of a pair on one row of their prompt (candidate_scoring's
shared row), so a prompt (often an ICL prompt of hundreds of tokens) is encoded once, not twice;
with a cell's ``TextScores`` memo, the ground-truth rank's announced candidates join that row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from persalign.decoding import GenerationRequest, create_decoder
from persalign.decoding.icl import icl_prompt_ids
from persalign.errors import ConfigError
from persalign.metrics.candidate_scoring import candidate_logprob_sums
from persalign.metrics.scoring import (
    POLICY_MODEL_SCORERS,
    RGD_SCORERS,
    ScoreParts,
    check_scorer,
    personalized_parts,
    score_parts,
)
from persalign.metrics.text_scores import TextScores, remembered
from persalign.models.encoding import DEFAULT_MAX_PROMPT_TOKENS
from persalign.types import Preference

log = logging.getLogger(__name__)


def check_inputs(scorer: str, reward_model, users) -> None:
    """ConfigError for a scorer without what it needs (a reward model, users, RGD support)."""
    check_scorer(scorer)
    if scorer in (*RGD_SCORERS, *POLICY_MODEL_SCORERS) and reward_model is None:
        raise ConfigError(f"the {scorer} scorer needs a reward model (--reward MODEL_DIR)")
    if scorer in ("personal-rgd", *POLICY_MODEL_SCORERS) and users is None:
        raise ConfigError(f"the {scorer} scorer needs the users of the responses")
    if scorer in RGD_SCORERS and not getattr(reward_model, "supports_rgd", True):
        name = getattr(reward_model, "name", type(reward_model).__name__)
        raise ConfigError(f"{name} does not support reward-guided decoding: no {scorer} score")
    personalized = getattr(reward_model, "personalized", None)
    if scorer in RGD_SCORERS and personalized not in (None, scorer == "personal-rgd"):
        kind = "personalized" if personalized else "global"
        log.warning("%s scorer with a %s reward model", scorer, kind)


def policy_scores(
    policy,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    scorer: str,
    reward_model=None,
    users: Sequence[str] | None = None,
    lam: float = 1.0,
    demonstrations: Sequence[Sequence[Preference]] | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    progress: bool = True,
) -> torch.Tensor:
    """[N] float64 scores s(y | x) of ``scorer`` (Eqs. 4-7).

    ``demonstrations`` (``icl``): each row's demonstrations, least relevant first, rendered as
    the ``icl`` decoder renders them (dropped from the front to fit ``max_prompt_tokens``).
    """
    check_inputs(scorer, reward_model, users)
    if scorer in POLICY_MODEL_SCORERS:
        parts = personalized_parts(reward_model, prompts, responses, users, batch_size=batch_size)
        return parts.scores(scorer)
    prompt_ids = None
    if scorer == "icl":
        if demonstrations is None:
            raise ConfigError("the icl scorer needs each row's demonstrations")
        prompt_ids = [
            icl_prompt_ids(policy.formatter, demos, prompt, max_prompt_tokens)[0]
            for demos, prompt in zip(demonstrations, prompts, strict=True)
        ]
    parts = score_parts(
        policy,
        prompts,
        responses,
        reward_model=reward_model if scorer in RGD_SCORERS else None,
        users=users,
        prompt_ids=prompt_ids,
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
    )
    return parts.scores(scorer, lam)


def icl_prompts(
    policy,
    prefs: Sequence[Preference],
    support: Mapping[str, Sequence[Preference]],
    *,
    shots: int = 4,
    seed: int = 0,
    decoder: str = "icl",
    **settings: Any,
) -> list[list[int]]:
    """The policy prompt ids the ``decoder`` ("icl" or "icl-rag") generates from for each
    preference's prompt (request id = preference id): the same demonstrations as generation."""
    icl = create_decoder(decoder, policy, support=support, shots=shots, seed=seed, **settings)
    built = icl.build_all([GenerationRequest(p.id, p.user, p.prompt) for p in prefs])
    if icl.dropped_demonstrations or icl.truncated_queries:
        log.warning(
            "icl scorer: dropped %d demonstrations and cut %d prompts to fit the context",
            icl.dropped_demonstrations,
            icl.truncated_queries,
        )
    return [list(b.prompt_ids) for b in built]


def pair_sums(
    policy,
    prefs: Sequence[Preference],
    prompt_ids: Sequence[Sequence[int]],  # [N] each pair's prompt as the policy encodes it
    batch_size: int,
    progress: bool,
    memo: TextScores | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([2N] log-prob sums, [2N] lengths): every chosen response, then every rejected one.

    Both responses of a pair sit on one row of their prompt (candidate_scoring's shared row: the
    prompt, often an ICL prompt of hundreds of tokens, is encoded once, not twice). With a
    ``memo``, the texts a later metric announced under a prompt (the ground-truth rank's
    candidates, ``TextScores.expect``) join its row and are recorded, and the pass is
    ``remembered`` (the cells of one policy and seed score the same rows)."""
    n = len(prefs)
    pairs = [[p.chosen, p.rejected] for p in prefs]
    groups = memo.with_expected(prompt_ids, pairs) if memo is not None else pairs

    def shared_pass() -> tuple[torch.Tensor, torch.Tensor]:
        return candidate_logprob_sums(
            policy, prompt_ids, groups, batch_size=batch_size, progress=progress
        )

    inputs = [[list(p) for p in prompt_ids], groups, batch_size]
    logp, tokens = (
        remembered(policy, "pair_logprob_sums", inputs, shared_pass)
        if memo is not None
        else shared_pass()
    )  # [M] flat in group order
    if memo is not None:
        memo.record_policy(prompt_ids, groups, logp, tokens)
    first = torch.tensor([0, *(len(g) for g in groups)][:n], dtype=torch.long).cumsum(0)  # [N]
    order = torch.cat([first, first + 1])  # [2N]: chosen, then rejected
    return logp[order], tokens[order]


def preference_parts(
    policy,
    prefs: Sequence[Preference],
    *,
    reward_model=None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
    memo: TextScores | None = None,
) -> ScoreParts:
    """ScoreParts of the 2N responses: every chosen response, then every rejected one.

    ``policy`` None with a ``reward_model``: the reward model's own personalized policy (P-DPO).
    ``memo``: where the base policy scores, the per-text sums are recorded there (a cell's
    ``text_scores``, which the ground-truth rank reads).
    """
    prefs = list(prefs)
    prompts = [p.prompt for p in prefs] * 2
    responses = [p.chosen for p in prefs] + [p.rejected for p in prefs]
    users = [p.user for p in prefs] * 2
    if policy is None:
        return personalized_parts(reward_model, prompts, responses, users, batch_size=batch_size)
    if prompt_ids is None:
        prompt_ids = [policy.formatter.prompt_ids(p.prompt) for p in prefs]  # as score_parts
    ids = [*prompt_ids, *prompt_ids]
    parts = score_parts(
        policy,
        prompts,
        responses,
        reward_model=reward_model,
        users=users,
        prompt_ids=ids,
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
        policy_sums=pair_sums(policy, prefs, prompt_ids, batch_size, progress, memo),
    )
    if memo is not None:
        memo.record(ids, prompts, responses, users, parts)
    return parts
