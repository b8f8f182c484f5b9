"""The selection metrics (steering accuracy, ground-truth rank, prefix accuracy) against naive
references written here on tiny models, and ``persalign select`` on a run folder."""

from __future__ import annotations

import json
import statistics
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

from persalign.decoding import Policy
from persalign.errors import ConfigError
from persalign.metrics import METRICS, CellContext, ZeroShot
from persalign.metrics import ground_truth_rank as gt_module
from persalign.metrics import text_scores as text_scores_module
from persalign.metrics.candidate_scoring import (
    candidate_logprob_sums,
    candidate_reward_sums,
    collate_candidates,
)
from persalign.metrics.ground_truth_rank import (
    NEGATIVES_SEED,
    GroundTruthRank,
    ground_truth_rank,
    hard_negatives,
    query_candidates,
    ranks,
)
from persalign.metrics.preference_scores import policy_scores
from persalign.metrics.prefix_accuracy import PrefixAccuracy, accuracies, prefix_hits
from persalign.metrics.ranking import rm_accuracy
from persalign.metrics.scoring import policy_logprob_sums, reward_sums
from persalign.metrics.selection import select_best, selection_column
from persalign.metrics.steering import SteeringAccuracy, steering_accuracy
from persalign.rewards.base import PrefixRewards
from persalign.rewards.engine.pair_eval import eval_mode
from persalign.runs.config import parse_config
from persalign.types import Benchmark, Completion, Preference

from .rewards_synthetic import adapted_lore, two_group_benchmark
from .test_cli import run as run_cli

FAST = dict(device="cpu", eval_batch_size=8, seed=0, max_response_tokens=32)
NEGATIVES = 3
SETTINGS = {  # a run config's metrics section
    "batch_size": 3,
    "steering_accuracy": True,
    "ground_truth_rank": {"negatives": NEGATIVES},
    "prefix_accuracy": True,
}
NEW = {"steering_accuracy", "ground_truth_rank", "prefix_accuracy"}
ZS = {"policy_accuracy": {"mean": 0.5}}  # the zero-shot cell's metrics.json


def _own_title(completions: list[Completion]) -> list[Completion]:
    first, second, *rest = completions
    return [first, Completion(second.id, second.user, second.prompt, "my own title"), *rest]


@pytest.fixture(scope="module")
def bench() -> Benchmark:
    """2 adaptation users x (2 support, 2 query); completions: the chosen text, except one
    completion written differently (so it is not a rejected/chosen text)."""
    return two_group_benchmark(support=2, query=2, edit=_own_title)


@pytest.fixture(scope="module")
def policy(tiny_lm_other: str) -> Policy:
    return Policy.load(tiny_lm_other, device="cpu")


@pytest.fixture(scope="module")
def lore(tiny_lm: str, bench: Benchmark):
    return adapted_lore(tiny_lm, bench, adapt_steps=5, **FAST)


def context(bench: Benchmark, policy: Policy | None, **fields: Any) -> CellContext:
    base: dict[str, Any] = dict(
        kind="method", method="lore", decoder="args", seed=1, settings=dict(SETTINGS)
    )
    return CellContext(**(base | fields), benchmark=bench, policy=policy)


def metric(cls: type, ctx: CellContext):
    """The metric with the options the cell's settings give it (as compute_cell_metrics does)."""
    return cls(ctx.options(cls.key))


def per_user(users: list[str], values: list[float]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for user, value in zip(users, values, strict=True):
        by.setdefault(user, []).append(value)
    return {u: statistics.fmean(v) for u, v in sorted(by.items())}


# ---------------------------------------------------------------- prefix accuracy
def test_prefix_hits_use_the_shorter_length_and_the_sign():
    """Chosen [1, 2, 9] (3 tokens) vs rejected [0, 1] (2 tokens): both prefixes win. Counting to
    the longer length (3) would give 2/3 and a flipped sign 0."""
    chosen = PrefixRewards(torch.tensor([[1.0, 2.0, 9.0], [0.0, 5.0, 0.0]]), torch.tensor([3, 2]))
    rejected = PrefixRewards(torch.tensor([[0.0, 1.0, 5.0], [0.0, 1.0, 0.0]]), torch.tensor([2, 2]))
    assert prefix_hits(chosen, rejected) == [1.0, 0.5]  # row 2: a tie at t=1 is a miss
    shared = torch.tensor([1, 2])  # the first token (row 2: both) the same text: left out
    assert prefix_hits(chosen, rejected, shared) == [1.0, None]


def test_prefix_accuracy_equals_rewards_of_truncated_texts(lore, bench):
    """Each prefix y[:t] scored as a whole text of its own (the tiny tokenizer has one token per
    character); RM accuracy from the same pass equals ranking.rm_accuracy exactly."""
    rm_acc, got = accuracies(lore, bench.query)
    assert rm_acc == rm_accuracy(lore, bench.query)
    tokens = lore.formatter.tokenizer
    rows: list[tuple[int, str, str, str]] = []  # (pair, prompt, y_w[:t], y_l[:t]) for every t
    for i, p in enumerate(bench.query):
        ids_w, ids_l = (lore.formatter.response_ids(t) for t in (p.chosen, p.rejected))
        for t in range(1, min(len(ids_w), len(ids_l)) + 1):
            w, v = ("".join(tokens.convert_ids_to_tokens(ids[:t])) for ids in (ids_w, ids_l))
            assert lore.formatter.response_ids(w) == ids_w[:t]
            if w != v:  # the same text: no preference to get right
                rows.append((i, p.prompt, w, v))
    users_of = [bench.query[r[0]].user for r in rows]
    texts = [r[2] for r in rows] + [r[3] for r in rows]  # each prefix scored as a whole text
    r = lore.sequence_rewards([x[1] for x in rows] * 2, texts, users_of * 2)
    hits: dict[int, list[bool]] = {}
    for j, row in enumerate(rows):
        hits.setdefault(row[0], []).append(bool(r[j] > r[len(rows) + j]))
    scores = [sum(h) / len(h) for _, h in sorted(hits.items())]
    users = [bench.query[i].user for i in sorted(hits)]
    want = per_user(users, scores)
    assert got["per_user"] == pytest.approx(want, rel=1e-9)
    assert got["mean"] == pytest.approx(statistics.fmean(want.values()), rel=1e-9)
    assert got["pooled"] == pytest.approx(statistics.fmean(scores), rel=1e-9)
    assert 0.0 < got["mean"] < 1.0  # not a degenerate toy


# ---------------------------------------------------------------- steering accuracy
class LengthRM:
    """r(x, y) = len(y): longer texts are preferred."""

    def sequence_rewards(self, prompts, responses, users):
        return torch.tensor([float(len(r)) for r in responses])


def test_steering_accuracy_prefers_the_users_text_with_the_right_sign():
    own = [("1", "a", "a long own text"), ("2", "a", "x"), ("3", "b", "same"), ("4", "b", "xy")]
    comps = [Completion(i, u, f"p{i}", text) for i, u, text in own]
    base = [("1", "a", "short"), ("2", "a", "longer"), ("3", "b", "same")]  # 4: unpaired
    zero = [{"user": u, "id": i, "text": text} for i, u, text in base]
    got = steering_accuracy(LengthRM(), comps, zero, {})
    assert got["per_user"] == {"a": 0.5, "b": 0.0}  # b: identical text, a tie, a miss
    assert got["mean"] == 0.25 and got["pairs"] == 3 and got["unpaired"] == 1


def test_steering_accuracy_equals_a_naive_loop(lore, bench, policy):
    zero = [
        {"user": q.user, "id": q.id, "text": q.rejected if i % 2 else q.chosen + " and more"}
        for i, q in enumerate(bench.query)
    ]
    ctx = context(bench, policy, reward_model=lore, lam=1.0, zero_shot=ZeroShot(ZS, zero))
    assert SteeringAccuracy().applies(ctx)
    got = {"steering_accuracy": SteeringAccuracy().compute(ctx)}
    texts = {(g["user"], g["id"]): g["text"] for g in zero}
    prompts = {(q.user, q.id): q.prompt for q in bench.query}
    users, hits = [], []
    for c in bench.completions:  # one call per prompt: the user's text and zero-shot's
        key = (c.user, c.id)
        own, base = lore.sequence_rewards(
            [prompts[key]] * 2, [c.reference, texts[key]], [c.user] * 2
        )
        users.append(c.user)
        hits.append(float(own > base))
    steering = got["steering_accuracy"]
    assert steering["per_user"] == per_user(users, hits)
    assert steering["pairs"] == len(bench.completions) and steering["unpaired"] == 0


# ---------------------------------------------------------------- ground-truth rank
def test_ranks_count_ties_against_the_users_text():
    scores = torch.tensor([1.0, 3.0, 0.5, 5.0, 1.0, 2.0, 2.0])
    assert ranks(scores, [3, 2, 2]) == [2, 1, 2]


def test_hard_negatives_rejected_first_then_most_similar_other_users():
    comps = [
        Completion("1", "a", "graph neural networks for molecules", "A"),
        Completion("2", "b", "graph neural networks for proteins", "B"),
        Completion("3", "c", "neural networks for molecules", "C"),
        Completion("4", "d", "a history of medieval trade", "D"),
        Completion("5", "a", "graph networks", "A2"),  # same user: never a negative of a's
        Completion("6", "e", "graph neural networks for molecules", "A"),  # the user's own text
    ]
    query = (Preference("1", "a", comps[0].prompt, "A", "R"),)
    bench = Benchmark("t", (), (), query, tuple(comps))
    got = hard_negatives(bench, n=3, seed=0)
    assert got[("a", "1")] == ["R", "C", "B"]  # jaccard 4/5 then 4/6; D (0) and A2 left out
    assert hard_negatives(bench, n=1, seed=5)[("a", "1")] == ["R"]
    assert got == hard_negatives(bench, n=3, seed=0)  # deterministic
    # ties (C and "graph networks"-like prompts) are broken by a seeded shuffle, but a cell's
    # candidates never depend on its seed: every cell and seed ranks against the same ones
    tied = [Completion(str(i), f"u{i}", f"shared words {i % 2}", f"T{i}") for i in range(12)]
    tie_bench = Benchmark("t", (), (), (), tuple(tied))
    draws = {str(hard_negatives(tie_bench, n=3, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the tie-break does depend on the seed it is given
    at = {s: query_candidates(context(tie_bench, None, seed=s), 3) for s in (0, 1, 7)}
    assert at[0] == at[1] == at[7]
    assert at[0][2] == [[c.reference, *hard_negatives(tie_bench, 3, NEGATIVES_SEED)[(c.user, c.id)]]
                        for c in sorted(tied, key=lambda c: (c.user, c.id))]  # fmt: skip


def test_candidates_share_one_row_per_prompt():
    """[prompt, y_1, y_2] in one row: responses continue from the prompt's end, each predicted
    from the prompt's last token, then its own tokens; no response sees another one."""
    batch = collate_candidates([[1, 2], [7]], [[[3], [4, 5]], [[8, 9]]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 2, 3], [0, 1, 2, 0, 0]]
    assert batch.row.tolist() == [0, 0, 1] and batch.slot.tolist() == [0, 1, 0]
    assert batch.valid.tolist() == [[True, False], [True, True], [True, True]]
    assert batch.predictor[1].tolist() == [1, 3] and batch.predictor[2].tolist() == [0, 1]
    seen = batch.attention_mask[0, 0] == 0  # [T, T] query x key
    assert seen[3].tolist() == [True, True, False, True, False]  # y_2's first: prompt + itself
    assert seen[4].tolist() == [True, True, False, True, True]


def test_candidate_scoring_equals_one_row_per_text(lore, bench, policy):
    """The fast path (each prompt encoded once, its candidates in one row) against the naive
    reference (every prompt + text on a row of its own), for the policy and the reward model."""
    comps = list(bench.completions)
    prompts, users = [c.prompt for c in comps], [c.user for c in comps]
    groups = [[c.reference, "a longer negative title here", "x"] for c in comps]
    ids = [policy.formatter.prompt_ids(p) for p in prompts]
    fast, tokens = candidate_logprob_sums(policy, ids, groups, batch_size=2)
    rows = zip(ids, prompts, users, groups, strict=True)
    each = [(i, p, u, r) for i, p, u, g in rows for r in g]
    naive, naive_tokens = policy_logprob_sums(
        policy, [e[0] for e in each], [e[3] for e in each], batch_size=1, progress=False
    )
    assert torch.equal(tokens, naive_tokens)
    assert torch.allclose(fast, naive, rtol=1e-5, atol=1e-4)
    assert eval_mode(lore) == "hidden"  # the shared-row reward path
    got = candidate_reward_sums(lore, prompts, groups, users, batch_size=2)
    want = reward_sums(
        lore, [e[1] for e in each], [e[3] for e in each], [e[2] for e in each],
        batch_size=1, progress=False,
    )  # fmt: skip
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_genarm_candidates_share_one_row_and_equal_one_row_per_text(tiny_lm, bench):
    """GenARM's reward (beta * its own log-prob sums) on the shared-prompt rows against the naive
    reference (``reward_sums``: every prompt + text on a row of its own); P-DPO (a reference
    model and soft tokens) keeps the naive path."""
    import persalign.rewards as rewards
    from persalign.metrics import candidate_scoring

    genarm = rewards.create("genarm", backbone=tiny_lm, **FAST).eval()
    with torch.no_grad():  # LoRA away from zero, so the LoRA path is what is compared
        generator = torch.Generator().manual_seed(0)
        for name, param in genarm.backbone.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    assert candidate_scoring._plain_likelihood(genarm)
    comps = list(bench.completions)[:4]
    prompts, users = [c.prompt for c in comps], [c.user for c in comps]
    groups = [[c.reference, "a longer negative title here", "x"] for c in comps]
    got = candidate_reward_sums(genarm, prompts, groups, users, batch_size=2)
    each = [(p, u, r) for p, u, g in zip(prompts, users, groups, strict=True) for r in g]
    want = reward_sums(
        genarm, [e[0] for e in each], [e[2] for e in each], [e[1] for e in each],
        batch_size=1, progress=False,
    )  # fmt: skip
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5) and bool((want != 0).all())
    pdpo = rewards.create("p-dpo", backbone=tiny_lm, **FAST)
    assert not candidate_scoring._plain_likelihood(pdpo)


def test_pdpo_candidates_share_one_row_with_the_users_soft_tokens(tiny_lm, bench):
    """P-DPO's own personalized policy (soft tokens e_u, then the prompt, LoRA away from zero,
    a distinct vector per user) on one row per prompt against ``personalized_logprob_sums``, one
    row per text: the same log-likelihoods and lengths."""
    import persalign.rewards as rewards
    from persalign.metrics.candidate_soft_tokens import candidate_soft_token_sums, with_soft_prefix

    pdpo = rewards.create("p-dpo", backbone=tiny_lm, n_soft_tokens=3, **FAST).eval()
    comps = list(bench.completions)[:4]
    prompts, users = [c.prompt for c in comps], [c.user for c in comps]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in pdpo.backbone.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    distinct = sorted(set(users))
    pdpo.set_users(distinct, torch.randn(len(distinct), pdpo.user_dim, generator=generator))
    groups = [[c.reference, "a longer negative title here", "x"] for c in comps]
    got, lengths = candidate_soft_token_sums(pdpo, prompts, groups, users, batch_size=2)
    each = [(p, u, r) for p, u, g in zip(prompts, users, groups, strict=True) for r in g]
    want, want_lengths = pdpo.personalized_logprob_sums(
        [e[0] for e in each], [e[2] for e in each], [e[1] for e in each], batch_size=1
    )
    assert torch.equal(lengths, want_lengths)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)
    mask = with_soft_prefix(torch.zeros(1, 1, 2, 2), 2)[0, 0] == 0  # [4, 4] attend
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False],
                             [True, True, True, True], [True, True, True, True]]  # fmt: skip


def naive_rank(
    ctx: CellContext, scorer: str, per_token: bool = True, **kw: Any
) -> tuple[dict, dict]:
    """Per prompt: the user's text and its negatives scored one row per text by policy_scores
    (Eq. 4 means; Eq. 6 sums divided by the policy tokens: one aggregation), ranked in a loop."""
    negatives = hard_negatives(ctx.benchmark, NEGATIVES, NEGATIVES_SEED)
    prompts = ctx.prompts()
    users, rr, top = [], [], []
    for c in ctx.benchmark.completions:
        texts = [c.reference, *negatives[(c.user, c.id)]]
        scores = policy_scores(
            ctx.policy, [prompts[(c.user, c.id)]] * len(texts), texts, scorer=scorer,
            users=[c.user] * len(texts), batch_size=2, progress=False, **kw,
        ).tolist()  # fmt: skip
        if scorer == "personal-rgd" and per_token:  # a sum: its mean per policy token
            sizes = [len(ctx.policy.formatter.response_ids(t)) for t in texts]
            scores = [s / n for s, n in zip(scores, sizes, strict=True)]
        rank = 1 + sum(s >= scores[0] for s in scores[1:])
        users.append(c.user)
        rr.append(1 / rank)
        top.append(float(rank == 1))
    return per_user(users, rr), per_user(users, top)


def test_ground_truth_rank_of_rgd_and_zero_shot_cells_equals_a_naive_loop(lore, bench, policy):
    method = context(bench, policy, reward_model=lore, lam=2.0)
    assert metric(GroundTruthRank, method).applies(method)
    got = metric(GroundTruthRank, method).compute(method)
    mrr, top1 = naive_rank(method, "personal-rgd", reward_model=lore, lam=2.0)
    assert got["mrr"]["per_user"] == pytest.approx(mrr, rel=1e-9)
    assert got["top1"]["per_user"] == pytest.approx(top1, rel=1e-9)
    assert got["negatives"] == 3 and got["scorer"] == "personal-rgd" and got["lam"] == 2.0
    assert 2 <= got["candidates_mean"] <= 3 and got["prompts"] == len(bench.completions)

    zero = context(bench, policy, kind="baseline", method="zero-shot", decoder="zero-shot")
    assert [metric(m, zero).applies(zero) for m in (SteeringAccuracy, PrefixAccuracy)] == [
        False,
        False,
    ]
    base = {"ground_truth_rank": metric(GroundTruthRank, zero).compute(zero)}
    mrr, top1 = naive_rank(zero, "base")
    assert base["ground_truth_rank"]["mrr"]["per_user"] == pytest.approx(mrr, rel=1e-9)
    assert base["ground_truth_rank"]["top1"]["per_user"] == pytest.approx(top1, rel=1e-9)
    assert base["ground_truth_rank"]["scorer"] == "base"


def test_the_cells_of_a_seed_share_one_policy_pass(lore, bench, policy, monkeypatch):
    monkeypatch.setattr(text_scores_module, "REMEMBERED", weakref.WeakKeyDictionary())  # cold
    calls = []
    original = gt_module.candidate_logprob_sums
    monkeypatch.setattr(
        gt_module, "candidate_logprob_sums", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    zero = context(bench, policy, kind="baseline", method="zero-shot", decoder="zero-shot")
    first = metric(GroundTruthRank, zero).compute(zero)
    at_zero = context(bench, policy, reward_model=lore, lam=0.0)
    method = metric(GroundTruthRank, at_zero).compute(at_zero)
    assert len(calls) == 1  # the method cell reused the zero-shot cell's policy pass
    assert metric(GroundTruthRank, zero).compute(zero) == first and len(calls) == 1
    assert method["scorer"] == "personal-rgd" and method["prompts"] == first["prompts"]


def test_a_method_cell_at_lambda_0_gets_zero_shots_mrr_exactly(lore, bench, policy):
    """One aggregation for every cell type (the mean per policy token): at lambda 0 Eq. 6's
    terms are Eq. 4's, so the MRRs are equal; with Eq. 6's sums against Eq. 4's means (the old
    aggregation) they differ on this benchmark, whose negatives differ in length."""
    zero = context(bench, policy, kind="baseline", method="zero-shot", decoder="zero-shot")
    at_zero = context(bench, policy, reward_model=lore, lam=0.0)
    base, method = (metric(GroundTruthRank, c).compute(c) for c in (zero, at_zero))
    assert method["scorer"] == "personal-rgd" and base["scorer"] == "base"
    assert method["mrr"] == base["mrr"] and method["top1"] == base["top1"]
    assert method["aggregation"] == base["aggregation"] == "mean per policy token"
    sums, _ = naive_rank(at_zero, "personal-rgd", per_token=False, reward_model=lore, lam=0.0)
    assert sums != base["mrr"]["per_user"]  # the old aggregation: not comparable


def test_icl_cell_ranks_with_its_demonstrations_and_switches_turn_metrics_off(bench, policy, lore):
    icl = context(
        bench, policy, kind="baseline", method="icl", decoder="icl", shots=1,
        icl={"max_prompt_tokens": 256},
    )  # fmt: skip
    got = ground_truth_rank(icl, 2, batch_size=2)
    assert got["scorer"] == "icl" and got["negatives"] == 2 and 0 < got["mrr"]["mean"] <= 1
    off = dict(SETTINGS, steering_accuracy=False, ground_truth_rank=False, prefix_accuracy=False)
    zero = ZeroShot(ZS, [{"user": q.user, "id": q.id, "text": "x"} for q in bench.query])
    ctx = context(bench, policy, reward_model=lore, lam=1.0, zero_shot=zero, settings=off)
    every = (SteeringAccuracy, GroundTruthRank, PrefixAccuracy)
    assert not [m for m in every if metric(m, ctx).applies(ctx)]
    on = context(bench, policy, reward_model=lore, lam=1.0, zero_shot=zero)
    assert all(metric(m, on).applies(on) for m in every)
    model_job = {"prefix_accuracy": {"mean": 0.25}}  # the model job's file is used as it is
    on.model_results = model_job
    assert PrefixAccuracy().compute(on) is model_job["prefix_accuracy"]
    assert {"steering_accuracy", "ground_truth_rank", "prefix_accuracy"} <= set(METRICS.names())


# ---------------------------------------------------------------- selection
def record(row: str, seed: int, value: float | None, policy: str = "p") -> dict[str, Any]:
    return {"benchmark": "b", "policy": policy, "row": row, "method": row, "seed": seed,
            "lambda": 1.0, "values": {} if value is None else {"gt_mrr": value,
                                                                "perplexity": value}}  # fmt: skip


def test_select_best_picks_by_direction_and_lists_rows_by_seed_mean():
    values = [("lore", 0, 0.2), ("lore", 1, 0.9), ("mpu", 0, 0.6), ("mpu", 1, 0.6)]
    records = [record(*v) for v in values] + [record("icl-1", 0, None), record("lore", 0, 0.1, "q")]
    picks = select_best(records, selection_column("gt_mrr"))
    assert [(p["policy"], p["best"]["row"], p["best"]["seed"]) for p in picks] == [
        ("p", "lore", 1), ("q", "lore", 0)
    ]  # fmt: skip
    assert [r["row"] for r in picks[0]["rows"]] == ["mpu", "lore"]  # 0.6 > 0.55 on average
    assert picks[0]["cells"] == 4 and picks[0]["best"]["lambda"] == 1.0
    lower = select_best(records, selection_column("perplexity"))
    assert lower[0]["best"]["value"] == 0.2 and lower[0]["rows"][0]["row"] == "lore"


def test_an_unknown_selection_metric_names_the_valid_ones(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"unknown selection metric 'typo'.*gt_mrr.*rm_accuracy"):
        selection_column("typo")
    with pytest.raises(ConfigError, match=r"report\.selection_metric: unknown selection metric"):
        parse_config({"benchmarks": {"b": {"path": str(tmp_path)}},
                      "policies": {"p": {"spec": "x", "params_m": 1}},
                      "report": {"selection_metric": "lambda"}})  # fmt: skip


def write_cells(run: Path) -> None:
    cells = []
    for row, seed, mrr, rm in (("lore", 0, 0.3, 0.9), ("lore", 1, 0.8, 0.6), ("mpu", 0, 0.5, 0.7)):
        cells.append({"cell": f"b__p__{row}__s{seed}", "kind": "method", "method": row,
                      "benchmark": "b", "policy": "p", "seed": seed, "lambda": 0.5 + seed,
                      "rm_accuracy": {"mean": rm},
                      "ground_truth_rank": {"mrr": {"mean": mrr}}})  # fmt: skip
    cells.append({"cell": "b__p__zero-shot__s0", "kind": "baseline", "method": "zero-shot",
                  "benchmark": "b", "policy": "p", "seed": 0,
                  "ground_truth_rank": {"mrr": {"mean": 0.95}}})  # fmt: skip
    for data in cells:
        (run / "cells" / data["cell"]).mkdir(parents=True)
        (run / "cells" / data["cell"] / "metrics.json").write_text(json.dumps(data))
    manifest = {"config": {"report": {"selection_metric": "rm_accuracy"}}}
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_persalign_select_reads_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    write_cells(run)
    code, out, _ = run_cli(["select", str(run), "--json"], capsys)
    assert code == 0
    best = json.loads(out)["selections"][0]["best"]  # report.selection_metric: rm_accuracy
    assert (best["row"], best["seed"], best["lambda"], best["value"]) == ("lore", 0, 0.5, 0.9)
    args = ["select", str(run), "--metric", "gt_mrr", "--out", str(tmp_path / "s.json")]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "gt_mrr" in out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["selections"][0]["best"]["row"] == "zero-shot"
    assert [r["row"] for r in saved["selections"][0]["rows"]] == ["zero-shot", "lore", "mpu"]
    code, _, err = run_cli(["select", str(run), "--metric", "nope"], capsys)
    assert code == 2 and "unknown selection metric 'nope'" in err and "steering_accuracy" in err
