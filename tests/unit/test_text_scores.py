"""A cell's per-text memo: the ground-truth rank does not score again what policy accuracy scored,
and its scores are those of a cold pass up to float rounding."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch

from persalign.decoding import Policy
from persalign.metrics import CellContext
from persalign.metrics import ground_truth_rank as gt_module
from persalign.metrics import text_scores as text_scores_module
from persalign.metrics.ground_truth_rank import (
    NEGATIVES_SEED,
    GroundTruthRank,
    deployed_scores,
    hard_negatives,
)
from persalign.metrics.policy_accuracy import PolicyAccuracy
from persalign.metrics.text_scores import TextScores, complete
from persalign.types import Benchmark

from .rewards_synthetic import adapted_lore, two_group_benchmark

SETTINGS = {"batch_size": 3, "ground_truth_rank": {"negatives": 3}}


@pytest.fixture(scope="module")
def bench() -> Benchmark:
    return two_group_benchmark(support=2, query=2)


@pytest.fixture(scope="module")
def policy(tiny_lm_other: str) -> Policy:
    return Policy.load(tiny_lm_other, device="cpu")


@pytest.fixture(scope="module")
def lore(tiny_lm: str, bench: Benchmark):
    return adapted_lore(
        tiny_lm, bench, adapt_steps=5, device="cpu", eval_batch_size=8, seed=0,
        max_response_tokens=32,
    )  # fmt: skip


def context(bench: Benchmark, policy: Policy, **fields: Any) -> CellContext:
    base: dict[str, Any] = dict(
        kind="method", method="lore", decoder="args", seed=0, settings=dict(SETTINGS)
    )
    return CellContext(**(base | fields), benchmark=bench, policy=policy)


def test_complete_takes_known_values_and_scores_each_prompt_once():
    calls = []

    def score(rows, texts):
        calls.append((rows, texts))
        return [f"{row}:{text}!" for row, group in zip(rows, texts, strict=True) for text in group]

    table = {("p", "a"): "A", ("q", "c"): "C", ("q", "d"): "D"}
    groups = [[("p", "a"), ("p", "b")], [("q", "c"), ("q", "d")], [("p", "b"), ("p", "e")]]
    got = complete(groups, table, score)
    assert got == ["A", "p:b!", "C", "D", "p:b!", "p:e!"]
    # groups 0 and 2 answer prompt p: one row, b scored once; group 1 is known: no row at all
    assert calls == [(["p"], [["b", "e"]])]
    calls.clear()
    assert complete([[("p", "a")], [("q", "d")]], table, score) == ["A", "D"] and not calls


def _group_inputs(ctx: CellContext, n: int = 3):
    negatives = hard_negatives(ctx.benchmark, n, NEGATIVES_SEED)
    comps = sorted(ctx.benchmark.completions, key=lambda c: (c.user, c.id))
    keys = [(c.user, c.id) for c in comps]
    prompts = [ctx.prompts()[k] for k in keys]
    groups = [[c.reference, *negatives[k]] for c, k in zip(comps, keys, strict=True)]
    return keys, prompts, groups


@pytest.mark.parametrize("cell", ["method", "zero-shot", "icl"])
def test_ground_truth_rank_reuses_policy_accuracys_texts(cell, lore, bench, policy, monkeypatch):
    fields: dict[str, Any] = {
        "method": dict(reward_model=lore, lam=2.0),
        "zero-shot": dict(kind="baseline", method="zero-shot", decoder="zero-shot"),
        "icl": dict(kind="baseline", method="icl", decoder="icl", shots=1),
    }[cell]
    cold = context(bench, policy, **fields)
    keys, prompts, groups = _group_inputs(cold)
    monkeypatch.setattr(text_scores_module, "REMEMBERED", weakref.WeakKeyDictionary())
    want = deployed_scores(cold, keys, prompts, groups, batch_size=3)  # nothing remembered

    warm = context(bench, policy, **fields)
    accuracy = PolicyAccuracy(warm.options("policy_accuracy")).compute(warm)
    assert 0 <= accuracy["mean"] <= 1
    assert len(warm.text_scores.logp) == 2 * len(bench.query)  # every chosen and rejected text
    assert len(warm.text_scores.rewards) == (2 * len(bench.query) if cell == "method" else 0)

    scored: dict[str, int] = {"policy": 0, "reward": 0}
    policy_pass, reward_pass = gt_module.candidate_logprob_sums, gt_module.candidate_reward_sums

    def count_policy(model, ids, texts, **kw):
        scored["policy"] += sum(len(g) for g in texts)
        return policy_pass(model, ids, texts, **kw)

    def count_reward(model, ps, texts, users, **kw):
        scored["reward"] += sum(len(g) for g in texts)
        return reward_pass(model, ps, texts, users, **kw)

    monkeypatch.setattr(text_scores_module, "REMEMBERED", weakref.WeakKeyDictionary())
    monkeypatch.setattr(gt_module, "candidate_logprob_sums", count_policy)
    monkeypatch.setattr(gt_module, "candidate_reward_sums", count_reward)
    got = deployed_scores(warm, keys, prompts, groups, batch_size=3)

    pairs = {  # every distinct (prompt as the policy encodes it, text)
        (tuple(ids), text)
        for ids, group in zip(_policy_prompt_ids(warm, keys, prompts), groups, strict=True)
        for text in group
    }
    known = len(pairs & set(warm.text_scores.logp))
    assert known >= len(bench.query)  # at least each prompt's chosen text is reused
    assert scored["policy"] == len(pairs) - known  # the rest, each once
    assert scored["reward"] == (scored["policy"] if cell == "method" else 0)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)  # padded rows vs shared rows
    assert gt_module.ranks(got, [len(g) for g in groups]) == gt_module.ranks(
        want, [len(g) for g in groups]
    )
    result = GroundTruthRank(warm.options("ground_truth_rank")).compute(warm)
    assert result["prompts"] == len(groups)


@pytest.mark.parametrize("cell", ["method", "zero-shot", "icl"])
def test_announced_candidates_are_scored_on_policy_accuracys_rows(
    cell, lore, bench, policy, monkeypatch
):
    """The ground-truth rank announces its candidates; policy accuracy's one pass over each
    prompt then scores them too, so the rank runs no policy pass, and neither metric changes."""
    fields: dict[str, Any] = {
        "method": dict(reward_model=lore, lam=2.0),
        "zero-shot": dict(kind="baseline", method="zero-shot", decoder="zero-shot"),
        "icl": dict(kind="baseline", method="icl", decoder="icl", shots=1),
    }[cell]
    monkeypatch.setattr(text_scores_module, "REMEMBERED", weakref.WeakKeyDictionary())
    cold = context(bench, policy, **fields)  # nothing announced: the reference
    want_accuracy = PolicyAccuracy(cold.options("policy_accuracy")).compute(cold)
    want_rank = GroundTruthRank(cold.options("ground_truth_rank")).compute(cold)

    monkeypatch.setattr(text_scores_module, "REMEMBERED", weakref.WeakKeyDictionary())
    warm = context(bench, policy, **fields)
    rank = GroundTruthRank(warm.options("ground_truth_rank"))
    rank.announce(warm)
    keys, prompts, groups = _group_inputs(warm)
    rows = _policy_prompt_ids(warm, keys, prompts)
    assert {tuple(r) for r in rows} == set(warm.text_scores.expected)
    accuracy = PolicyAccuracy(warm.options("policy_accuracy")).compute(warm)
    every = {(tuple(ids), text) for ids, g in zip(rows, groups, strict=True) for text in g}
    assert every <= set(warm.text_scores.logp)  # all candidates scored by that one pass

    def no_policy_pass(*args, **kwargs):
        raise AssertionError("the ground-truth rank ran a policy pass")

    monkeypatch.setattr(gt_module, "candidate_logprob_sums", no_policy_pass)
    got_rank = rank.compute(warm)
    assert accuracy["per_user"] == want_accuracy["per_user"]
    assert got_rank["mrr"]["per_user"] == pytest.approx(want_rank["mrr"]["per_user"])
    assert got_rank["top1"] == want_rank["top1"]


def _policy_prompt_ids(ctx: CellContext, keys, prompts) -> list[list[int]]:
    """The policy's prompt ids deployed_scores uses (ICL: the cell's demonstrations)."""
    if ctx.decoder != "icl":
        return [ctx.policy.formatter.prompt_ids(p) for p in prompts]
    from persalign.metrics.preference_scores import icl_prompts

    query = list(ctx.benchmark.query)
    ids = icl_prompts(ctx.policy, query, ctx.support(), shots=ctx.shots, seed=ctx.seed)
    by_key = {(q.user, q.id): p for q, p in zip(query, ids, strict=True)}
    return [by_key[k] for k in keys]


def test_a_memo_keys_rewards_by_user_and_policy_sums_by_prompt_ids():
    from persalign.metrics.scoring import ScoreParts

    memo = TextScores()
    parts = ScoreParts(
        torch.tensor([-1.0, -2.0], dtype=torch.float64),
        torch.tensor([3, 4]),
        torch.tensor([0.5, 0.25], dtype=torch.float64),
    )
    memo.record([[1, 2], [1, 2]], ["x", "x"], ["y", "z"], ["u1", "u2"], parts)
    seen = []

    def policy_pass(ids, texts):
        seen.append((ids, texts))
        return torch.tensor([-7.0]), torch.tensor([5])

    logp, tokens = memo.policy_sums([[1, 2], [9], [9]], [["y", "z"], ["y"], ["y"]], policy_pass)
    assert logp.tolist() == [-1.0, -2.0, -7.0, -7.0] and tokens.tolist() == [3, 4, 5, 5]
    assert seen == [([[9]], [["y"]])]  # prompt [9] is new: one row, its text once
    rewards = memo.reward_sums(
        ["x"], [["y", "z"]], ["u2"], lambda ps, texts, users: torch.tensor([1.5])
    )
    assert rewards.tolist() == [1.5, 0.25]  # (x, y, u2) was never scored for u2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_target_logprobs_equal_a_float64_log_softmax(dtype):
    from persalign.metrics.scoring import target_logprobs

    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 4000, generator=generator) * 8).to(dtype)  # [B, R, V]
    logits[0, 0, 7] = 60.0  # one dominant token
    targets = torch.randint(0, 4000, (3, 5), generator=generator)
    targets[0, 0] = 7
    want = logits.double().log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    got = target_logprobs(logits, targets)
    assert got.dtype == torch.float64 and got.shape == (3, 5)
    assert torch.allclose(got, want, rtol=0, atol=1e-7)  # a float32 log-softmax: ~3e-6 off


def test_remembered_computes_each_of_the_last_inputs_once(monkeypatch):
    monkeypatch.setattr(text_scores_module, "REMEMBERED", weakref.WeakKeyDictionary())
    calls: list[int] = []

    class Model:  # any weak-referenceable object stands for a policy
        pass

    model = Model()

    def value(n: int) -> int:
        return text_scores_module.remembered(model, "pass", [n], lambda: calls.append(n) or n * 10)

    assert value(1) == 10 and value(2) == 20 and value(1) == 10  # 2 between: 1 still there
    assert calls == [1, 2]
    for n in range(3, 3 + text_scores_module.REMEMBER_LAST):
        value(n)
    assert value(1) == 10 and calls[-1] == 1  # pushed out by REMEMBER_LAST newer inputs
    assert text_scores_module.remembered(Model(), "pass", [1], lambda: -1) == -1  # per model
