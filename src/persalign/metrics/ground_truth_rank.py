"""Ground-truth rank: where does the scoring function a cell deploys put the user's own text
among hard negatives?

    negatives = hard_negatives(bench, n=9, seed=0)      # (user, id) -> [negative texts]
    result = ground_truth_rank(ctx, n=9)                # a cell's deployed scorer
    result["mrr"]["mean"], result["top1"]["mean"], result["negatives"]

For every query prompt x of user u with the user's own completion y_u, the candidates are y_u and
up to N hard negatives. The negatives are, first, the benchmark's rejected texts for that prompt
(the user's query preferences with this prompt), then the completions other users wrote for the
prompts most similar to x (word-set Jaccard similarity of the prompts, ties broken by a shuffle
seeded with ``NEGATIVES_SEED``, not the cell's seed, so every cell and seed of a benchmark ranks
against the same candidates; texts equal to y_u or already taken skipped). Every candidate is
scored with the function the cell deploys, built from ``metrics.scoring`` as policy accuracy
builds it, and aggregated the same way for every cell type: the mean per policy token of its
per-token terms,
(1/|y|) sum_t [log pi(y_t | x, y_<t) + lambda * r(y_t | x, y_<t)] (|y| in policy tokens), so
that the MRRs of method cells and baselines are comparable (a method cell at lambda = 0 gets
zero-shot's MRR exactly). The terms are:

- a method cell under ARGS: Eq. 6's (Eq. 5's for a global model) at the cell's chosen lambda;
- a method that writes with its own policy (P-DPO): that policy's log-likelihood (lambda 0);
- zero-shot (and any baseline without demonstrations): Eq. 4's, log pi alone (lambda 0);
- ICL and ICL-RAG: Eq. 7's, Eq. 4's with the same demonstrations as the cell's generations.

Policy accuracy keeps the paper's Eqs. 5/6 sums (it compares two responses to one prompt, as
the paper does); the ground-truth rank compares texts of different lengths and cell types.

The rank of y_u is 1 + the number of negatives scored at least as high (a tie counts against
the user's text, as Eq. 2's strict indicator does). ``mrr`` is the mean of 1 / rank and
``top1`` the share of prompts with rank 1. Each is computed per user, then the mean over users
(``pooled``: over prompts). A prompt with no negative at all is counted in ``no_negatives`` and
left out. Cost: each prompt is encoded once with its 1 + N candidates in one row
(``metrics.candidate_scoring``: a 4D mask, as shared-prompt training lays out a pair), by the
policy and, for RGD, by the reward model. Before any metric of the cell computes, the rank
announces its candidates (``announce``, ``TextScores.expect``): policy accuracy's pass over each
query prompt then scores them on its pair's row (remembered, so the cells of one policy and seed
share it), and the rank reads every policy sum from the cell's ``text_scores``
(``metrics.text_scores``) instead of encoding each prompt again: an ICL prompt of hundreds of
tokens is encoded once for both metrics. Left to itself (no announcement), the rank scores what
the memo lacks, its policy pass remembered too (``policy_sums``).

The ``ground_truth_rank`` cell metric covers every cell with a policy and the users' completions
(Pref-LaMP/ACL). Its options (``metrics.ground_truth_rank``): ``negatives`` (N, default 9),
``batch_size`` (prompts per pass, each with its candidates) and ``enabled``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field

from persalign.decoding import DECODERS
from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.candidate_scoring import candidate_logprob_sums, candidate_reward_sums
from persalign.metrics.candidate_soft_tokens import candidate_soft_token_sums
from persalign.metrics.generation import per_user_mean
from persalign.metrics.policy_accuracy import cell_scorer
from persalign.metrics.preference_scores import icl_prompts
from persalign.metrics.scoring import POLICY_MODEL_SCORERS, RGD_SCORERS, personalized_parts
from persalign.metrics.settings import ScoringSettings
from persalign.metrics.text_scores import remembered
from persalign.types import Benchmark

Key = tuple[str, str]
DEFAULT_NEGATIVES = 9
AGGREGATION = "mean per policy token"  # of every cell type's per-token terms (module doc)


# The negatives are a property of the benchmark, not of a cell: every cell, the seed-free
# zero-shot and ICL-RAG cells (planned at the first seed) and each seed's method cells, ranks the
# user's text among the same candidates, and the cells of one policy share one scoring pass.
NEGATIVES_SEED = 0


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def hard_negatives(bench: Benchmark, n: int, seed: int = 0) -> dict[Key, list[str]]:
    """(user, id) of every completion -> at most ``n`` negative texts (see module doc)."""
    rejected: dict[tuple[str, str], list[str]] = {}
    for q in bench.query:
        rejected.setdefault((q.user, q.prompt), []).append(q.rejected)
    words = {(c.user, c.id): _words(c.prompt) for c in bench.completions}
    out: dict[Key, list[str]] = {}
    for c in sorted(bench.completions, key=lambda c: (c.user, c.id)):
        taken = {c.reference.strip()}
        chosen: list[str] = []
        for text in rejected.get((c.user, c.prompt), []):
            if text.strip() not in taken and len(chosen) < n:
                chosen.append(text)
                taken.add(text.strip())
        others = [o for o in bench.completions if o.user != c.user]
        random.Random(f"{seed}:{c.user}:{c.id}").shuffle(others)
        mine = words[(c.user, c.id)]
        others.sort(key=lambda o: -_jaccard(mine, words[(o.user, o.id)]))  # stable: seeded ties
        for other in others:
            if len(chosen) >= n:
                break
            if other.reference.strip() and other.reference.strip() not in taken:
                chosen.append(other.reference)
                taken.add(other.reference.strip())
        out[(c.user, c.id)] = chosen
    return out


def deployed_scorer(ctx: CellContext) -> str | None:
    """The scorer a cell deploys: the method's (``cell_scorer``), else Eq. 7 or Eq. 4."""
    if ctx.kind == "method":
        return cell_scorer(ctx) if ctx.reward_model is not None else None
    return "icl" if DECODERS.get(ctx.decoder).needs_support else "base"


def policy_prompt_ids(
    ctx: CellContext, scorer: str, keys: Sequence[Key], prompts: Sequence[str]
) -> list[list[int]]:
    """Each group's prompt as the policy encodes it under ``scorer``: the plain prompt, or for
    ``icl`` the prompt with policy accuracy's (and generation's) demonstrations."""
    if scorer != "icl":
        return [ctx.policy.formatter.prompt_ids(p) for p in prompts]
    query = list(ctx.benchmark.query)  # the demonstrations of policy accuracy's ICL scorer
    settings = {k: v for k, v in (ctx.icl or {}).items() if k not in ("shots", "seed")}
    ids = icl_prompts(
        ctx.policy,
        query,
        ctx.support(),
        shots=ctx.shots,
        seed=ctx.seed,
        decoder=ctx.decoder,
        **settings,
    )
    by_key = {(q.user, q.id): p for q, p in zip(query, ids, strict=True)}
    return [by_key[key] for key in keys]


def query_candidates(ctx: CellContext, n: int) -> tuple[list[Key], list[str], list[list[str]], int]:
    """(keys, prompts, groups, prompts left out): per query prompt with the user's completion,
    its (user, id), prompt text and candidates (the user's text first, then up to ``n`` hard
    negatives); a prompt without negatives or with an empty completion is counted, not kept."""
    negatives = hard_negatives(ctx.benchmark, n, NEGATIVES_SEED)  # the same for every cell
    prompts = ctx.prompts()
    keys, texts, groups, empty = [], [], [], 0
    for c in sorted(ctx.benchmark.completions, key=lambda c: (c.user, c.id)):
        others = negatives[(c.user, c.id)]
        if not others or not c.reference.strip():
            empty += 1
            continue
        keys.append((c.user, c.id))
        texts.append(prompts.get((c.user, c.id), c.prompt))
        groups.append([c.reference, *others])
    return keys, texts, groups, empty


def deployed_scores(
    ctx: CellContext,
    keys: Sequence[Key],
    prompts: Sequence[str],
    groups: Sequence[Sequence[str]],
    batch_size: int = 8,
) -> torch.Tensor:
    """[M] float64 scores of every candidate of every group (flat, in group order; group i
    answers ``prompts[i]`` for user ``keys[i][0]``) under the cell's deployed scorer, as the mean
    per policy token of its terms (module doc); each prompt encoded once per model."""
    scorer = deployed_scorer(ctx)
    users = [k[0] for k in keys]
    if scorer in POLICY_MODEL_SCORERS:  # the method's own policy: soft tokens, then the prompt
        rm = ctx.reward_model
        if hasattr(rm, "soft_tokens") and hasattr(rm, "backbone"):  # one shared row per prompt
            logp, tokens = candidate_soft_token_sums(
                rm, prompts, groups, users, batch_size=batch_size
            )
            return logp / tokens.to(torch.float64)
        flat = [(p, r, u) for p, g, u in zip(prompts, groups, users, strict=True) for r in g]
        parts = personalized_parts(
            rm, *([f[i] for f in flat] for i in range(3)), batch_size=batch_size
        )
        return parts.logp_sum / parts.tokens.to(torch.float64)
    prompt_ids = policy_prompt_ids(ctx, scorer, keys, prompts)
    memo = ctx.text_scores  # what policy accuracy scored is not scored again
    total, tokens = memo.policy_sums(
        prompt_ids, groups, lambda ids, texts: policy_sums(ctx.policy, ids, texts, batch_size)
    )
    if scorer in RGD_SCORERS:
        lam = 1.0 if ctx.lam is None else float(ctx.lam)
        rewards = memo.reward_sums(
            prompts,
            groups,
            users,
            lambda texts, todo, who: candidate_reward_sums(
                ctx.reward_model, texts, todo, who, batch_size=batch_size
            ),
        )
        total = total + lam * rewards
    return total / tokens.to(torch.float64)


def policy_sums(
    policy, prompt_ids: Sequence[Sequence[int]], groups: Sequence[Sequence[str]], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``candidate_scoring.candidate_logprob_sums``, ``remembered`` for the recent texts of
    each policy (the cells of a run score the same candidates with the same frozen policy)."""
    inputs = [[list(p) for p in prompt_ids], [list(g) for g in groups], batch_size]
    return remembered(
        policy,
        "candidate_logprob_sums",
        inputs,
        lambda: candidate_logprob_sums(policy, prompt_ids, groups, batch_size=batch_size),
    )


def ranks(scores: torch.Tensor, sizes: Sequence[int]) -> list[int]:
    """Rank of the first candidate of each group (``sizes`` consecutive scores): 1 + the number
    of others scored at least as high."""
    out, start = [], 0
    for size in sizes:
        group = scores[start : start + size]  # [size]: the user's text first
        out.append(1 + int((group[1:] >= group[0]).sum()))
        start += size
    return out


def ground_truth_rank(
    ctx: CellContext, n: int = DEFAULT_NEGATIVES, batch_size: int = 8
) -> dict[str, Any]:
    """``{"mrr", "top1", "negatives", "candidates_mean", "prompts", "no_negatives", "scorer",
    "lam", "aggregation"}`` of the cell (see module doc); ``mrr`` and ``top1`` are
    {mean, pooled, per_user}."""
    keys, texts, groups, empty = query_candidates(ctx, n)
    scores = deployed_scores(ctx, keys, texts, groups, batch_size) if groups else torch.zeros(0)
    sizes = [len(g) for g in groups]
    got = ranks(scores, sizes)
    scorer = deployed_scorer(ctx)
    users = [k[0] for k in keys]
    return {
        "mrr": per_user_mean(users, [1.0 / r for r in got]),
        "top1": per_user_mean(users, [float(r == 1) for r in got]),
        "negatives": n,
        "candidates_mean": sum(sizes) / len(sizes) - 1 if sizes else None,
        "prompts": len(sizes),
        "no_negatives": empty,
        "scorer": scorer,
        "lam": ctx.lam if scorer in RGD_SCORERS else None,
        "aggregation": AGGREGATION,
    }


def _column(key: str, field: str, label: str) -> Column:
    return Column(key, ("ground_truth_rank", field), label, True, "fraction", ())


class GroundTruthRankSettings(ScoringSettings):
    """Options of the ground-truth rank (``metrics.ground_truth_rank``)."""

    negatives: int = Field(
        DEFAULT_NEGATIVES,
        ge=1,
        description="Hard negatives per prompt: the prompt's rejected texts, then other users' "
        "completions for the most similar prompts.",
    )


@register_metric(
    "ground_truth_rank",
    summary="Rank of the user's own text among N hard negatives under the deployed scorer",
)
class GroundTruthRank(CellMetric):
    """MRR and top-1 of the user's completion under the cell's scorer (Eqs. 4, 6, 7)."""

    settings_class = GroundTruthRankSettings
    needs = frozenset({"policy", "references"})
    order = 25
    columns = (_column("gt_mrr", "mrr", "GT MRR"), _column("gt_top1", "top1", "GT Top-1"))

    def applies(self, ctx: CellContext) -> bool:
        scorer = deployed_scorer(ctx)
        if scorer is None or (scorer in RGD_SCORERS and ctx.lam is None):
            return False
        return super().applies(ctx)

    def announce(self, ctx: CellContext) -> None:
        """The candidates the base policy will score (not a method's own policy), so that
        policy accuracy's pass over each query prompt scores them on its pair's row."""
        scorer = deployed_scorer(ctx)
        if scorer is None or scorer in POLICY_MODEL_SCORERS:
            return
        keys, texts, groups, _ = query_candidates(ctx, self.settings.negatives)
        ctx.text_scores.expect(policy_prompt_ids(ctx, scorer, keys, texts), groups)

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        return ground_truth_rank(ctx, self.settings.negatives, self.settings.batch_size)
