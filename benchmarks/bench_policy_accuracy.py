"""Policy accuracy of global RGD: the single-pass path against the naive per-prefix path.

    PERSALIGN_SHARED_DATA=../shared/data python benchmarks/bench_policy_accuracy.py \\
        [--policy bundled:smollm2-135m-instruct] [--pairs 20] [--lam 1.0]

20 TL;DR preference pairs (the first ones of ``$PERSALIGN_SHARED_DATA/tldr``; 15 posts among
them; ``--distinct-prompts``: the first pair of each post, so no two share a prompt, as on
Pref-ACL), prompts cut to 128 tokens and responses to 32. The bundled SmolLM2-135M-Instruct
is the policy and the backbone of a global-rm whose LoRA and head are UNTRAINED (random
head): the figures measure speed and agreement, not a meaningful accuracy. The single-pass path
runs one policy pass and one reward pass over each batch of whole responses
(``persalign.metrics.policy_accuracy``); the per-prefix path (tests/reference_policy.py) runs,
for every response token t, one policy forward over the prompt and y_<t and one reward-model
pass over the response cut after t tokens. Prints one JSON object; targets: speedup >= 10, the
same accuracy, scores within 1e-6.

The ground-truth rank of the same global-RGD cell is timed beside it (``--gt-negatives N``,
default 9; 0 skips it): each pair's chosen text stands for the user's own text, with N hard
negatives (``ground_truth_rank.hard_negatives``: the rejected text, then other pairs' chosen
texts), scored with each prompt encoded once (``metrics.candidate_scoring``). As in a cell,
the candidates policy accuracy has already scored (the chosen and the rejected text) are taken
from the cell's memo (``metrics.text_scores``). JSON keys: ``gt_rank_over_policy_accuracy``
(its seconds over the single-pass policy accuracy's; target <= 1.5),
``gt_rank_standalone_over_policy_accuracy`` (nothing remembered: every candidate scored),
``gt_rank_per_text_over_policy_accuracy`` (one row per candidate text, the path before),
``gt_rank_max_abs_score_diff`` (fast vs per-text scores) and
``gt_rank_memo_max_abs_score_diff`` (with the memo vs standalone).

Accuracies are per user, then the mean over users (Eq. 3). The per-prefix path costs one 135M
forward per response token and model (about 2,500 forwards for 20 pairs): ``--per-prefix-pairs N``
runs it on the first N pairs only, and the speedup and agreement are measured on those N. In
float32 the two paths differ by rounding only (matrix shapes differ: a prefix vs the whole
sequence, a few logit rows vs one); ``--dtype float64`` runs both backbones in float64 (the
reward head stays float32) to show the agreement down to float32 reward rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument(
        "--per-prefix-pairs", type=int, default=None, help="Run the slow path on the first N."
    )
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--response-tokens", type=int, default=32)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--gt-negatives", type=int, default=9, help="0: no ground-truth rank.")
    parser.add_argument(
        "--distinct-prompts",
        action="store_true",
        help="The first pair of each post only, so no two pairs share a prompt (as on Pref-ACL).",
    )
    args = parser.parse_args()

    from tests.reference_policy import naive_score, naive_terms

    from persalign.data.tldr import load_tldr
    from persalign.decoding import Policy
    from persalign.logs import setup_logging
    from persalign.metrics.policy_accuracy import accuracy_from_parts
    from persalign.metrics.preference_scores import preference_parts
    from persalign.metrics.ranking import pairwise_hits, per_user_accuracy
    from persalign.metrics.text_scores import TextScores
    from persalign.rewards import create
    from persalign.sysinfo import peak_rss_mib

    setup_logging(0)
    torch.manual_seed(0)
    shared = Path(os.environ.get("PERSALIGN_SHARED_DATA", "../shared/data"))
    prefs = load_tldr(shared / "tldr", progress=False)[0]
    if args.distinct_prompts:  # one pair per post: no two groups share a prompt (as Pref-ACL)
        prefs = list({p.prompt: p for p in reversed(prefs)}.values())[::-1]
    prefs = prefs[: args.pairs]
    subset = prefs[: args.per_prefix_pairs or len(prefs)]
    dtype = getattr(torch, args.dtype)
    policy = Policy.load(args.policy, max_prompt_tokens=args.prompt_tokens, dtype=dtype)
    policy.formatter.max_response_tokens = args.response_tokens
    rm = create(
        "global-rm",
        backbone=args.policy,
        max_prompt_tokens=args.prompt_tokens,
        max_response_tokens=args.response_tokens,
        eval_batch_size=args.batch_size,
    )
    rm.backbone.model.to(dtype)  # the head stays float32 (it reads hidden.float())
    scorer = "global-rgd"

    def single_pass(items, batch_size: int = args.batch_size, memo=None):
        start = time.perf_counter()
        parts = preference_parts(
            policy, items, reward_model=rm, batch_size=batch_size, progress=False, memo=memo
        )
        return parts, time.perf_counter() - start

    single_pass(prefs[:1])  # warm-up (first-call allocations)
    memo = TextScores()  # what policy accuracy scored, as a cell's (the ground-truth rank)
    parts, single_seconds = single_pass(prefs, memo=memo)
    if len(subset) < len(prefs):
        subset_parts, subset_seconds = single_pass(subset)
    else:
        subset_parts, subset_seconds = parts, single_seconds
    single_scores = subset_parts.scores(scorer, args.lam)  # [2n] chosen, then rejected
    unpadded = single_pass(subset, batch_size=1)[0].scores(scorer, args.lam)  # no padding

    rows = [(p.prompt, p.chosen, p.user) for p in subset]
    rows += [(p.prompt, p.rejected, p.user) for p in subset]
    start = time.perf_counter()
    naive, forwards = [], 0
    for prompt, response, user in rows:
        logp, rewards = naive_terms(policy, rm, prompt, response, user)
        naive.append(naive_score(scorer, logp, rewards, args.lam))
        forwards += len(logp) + len(rewards)
    naive_seconds = time.perf_counter() - start
    naive_scores = torch.tensor(naive, dtype=torch.float64)

    n = len(subset)
    naive_hits = pairwise_hits(naive_scores[:n], naive_scores[n:])
    diff = (single_scores - naive_scores).abs()
    result = {
        "benchmark": "policy_accuracy_single_pass",
        "policy": args.policy,
        "reward_model": "global-rm on the same backbone, untrained (random head)",
        "dtype": args.dtype,
        "pairs": len(prefs),
        "distinct_prompts": len({p.prompt for p in prefs}),
        "per_prefix_pairs": n,
        "lam": args.lam,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(policy.device),
        "prompt_tokens_mean": statistics.fmean(
            len(policy.formatter.prompt_ids(p.prompt)) for p in prefs
        ),
        "policy_response_tokens": int(parts.tokens.sum()),
        "single_pass_seconds": single_seconds,
        "single_pass_seconds_per_prefix_pairs": subset_seconds,
        "per_prefix_seconds": naive_seconds,
        "per_prefix_forwards": forwards,
        "speedup": naive_seconds / subset_seconds,
        "accuracy_single_pass": accuracy_from_parts(prefs, parts, scorer, args.lam)["mean"],
        "accuracy_single_pass_per_prefix_pairs": accuracy_from_parts(
            subset, subset_parts, scorer, args.lam
        )["mean"],
        "accuracy_per_prefix": per_user_accuracy(subset, naive_hits)["mean"],
        "hits_identical": pairwise_hits(single_scores[:n], single_scores[n:]) == naive_hits,
        "max_abs_score_diff": float(diff.max()),
        "max_rel_score_diff": float((diff / naive_scores.abs()).max()),
        "max_abs_score_diff_unpadded": float((unpadded - naive_scores).abs().max()),
        "score_range": [float(naive_scores.min()), float(naive_scores.max())],
        **(
            gt_rank_cost(prefs, policy, rm, args, memo, single_seconds) if args.gt_negatives else {}
        ),
        "peak_rss_mib": peak_rss_mib(),
    }
    result = {k: round(v, 12) if isinstance(v, float) else v for k, v in result.items()}
    result["targets_met"] = {
        "speedup>=10": result["speedup"] >= 10,
        "same_accuracy": result["accuracy_single_pass_per_prefix_pairs"]
        == result["accuracy_per_prefix"],
        "max_abs_score_diff<=1e-6": result["max_abs_score_diff"] <= 1e-6,
    }
    if args.gt_negatives:
        result["targets_met"]["gt_rank_over_policy_accuracy<=1.5"] = (
            result["gt_rank_over_policy_accuracy"] <= 1.5
        )
    print(json.dumps(result, indent=2))


def gt_rank_cost(prefs, policy, rm, args, memo, policy_accuracy_seconds: float) -> dict:
    """Seconds of the ground-truth rank of a global-RGD cell (each prompt encoded once; with
    policy accuracy's texts remembered in ``memo``, and standalone) and of the per-text path,
    over the single-pass policy accuracy's (see module doc)."""
    from persalign.metrics.base import CellContext
    from persalign.metrics.ground_truth_rank import (
        _POLICY_SUMS,
        deployed_scorer,
        deployed_scores,
        hard_negatives,
    )
    from persalign.metrics.scoring import policy_logprob_sums, reward_sums
    from persalign.types import Benchmark, Completion

    comps = tuple(Completion(p.id, p.user, p.prompt, p.chosen) for p in prefs)
    bench = Benchmark("bench", (), (), tuple(prefs), comps)
    ctx = CellContext(
        kind="method", method="global-rm", decoder="args", seed=0, settings={},
        benchmark=bench, policy=policy, reward_model=rm, lam=args.lam,
    )  # fmt: skip
    negatives = hard_negatives(bench, args.gt_negatives)
    keys = [(c.user, c.id) for c in comps]
    prompts = [c.prompt for c in comps]
    groups = [[c.reference, *negatives[k]] for c, k in zip(comps, keys, strict=True)]
    _POLICY_SUMS.clear()  # cold: the policy pass is timed too
    start = time.perf_counter()
    fast = deployed_scores(ctx, keys, prompts, groups, args.batch_size)  # nothing remembered
    standalone_seconds = time.perf_counter() - start
    ctx.text_scores = memo  # what policy accuracy scored in the same cell (module doc)
    _POLICY_SUMS.clear()
    start = time.perf_counter()
    in_cell = deployed_scores(ctx, keys, prompts, groups, args.batch_size)
    seconds = time.perf_counter() - start
    flat = [(p, r, k[0]) for p, g, k in zip(prompts, groups, keys, strict=True) for r in g]
    start = time.perf_counter()
    ids = [policy.formatter.prompt_ids(f[0]) for f in flat]
    logp, tokens = policy_logprob_sums(
        policy, ids, [f[1] for f in flat], batch_size=args.batch_size, progress=False
    )
    rewards = reward_sums(
        rm, *([f[i] for f in flat] for i in range(3)), batch_size=args.batch_size, progress=False
    )
    per_text = (logp + args.lam * rewards) / tokens.double()
    per_text_seconds = time.perf_counter() - start
    return {
        "gt_rank_scorer": deployed_scorer(ctx),
        "gt_rank_negatives": args.gt_negatives,
        "gt_rank_candidates": len(flat),
        "gt_rank_remembered_candidates": 2 * len(prefs),
        "gt_rank_seconds": seconds,
        "gt_rank_standalone_seconds": standalone_seconds,
        "gt_rank_per_text_seconds": per_text_seconds,
        "gt_rank_over_policy_accuracy": seconds / policy_accuracy_seconds,
        "gt_rank_standalone_over_policy_accuracy": standalone_seconds / policy_accuracy_seconds,
        "gt_rank_per_text_over_policy_accuracy": per_text_seconds / policy_accuracy_seconds,
        "gt_rank_max_abs_score_diff": float((fast - per_text).abs().max()),
        "gt_rank_memo_max_abs_score_diff": float((in_cell - fast).abs().max()),
    }


if __name__ == "__main__":
    main()
