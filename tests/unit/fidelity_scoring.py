"""Paper fidelity, items 1-3 of issue 12: which scoring function and which comparisons.

1. P-DPO's policy accuracy is its own personalized policy's (length-normalised log-likelihood
   with the user's soft tokens), with no lambda: checked against plain peft code.
2. In Eqs. 5/6 a cumulative method (GenARM, P-DPO) adds each token reward once (the last prefix
   reward), not the sum of its running sums; ARGS's choice is the same either way.
3. PAL has no RGD (no ARGS generations, no RGD policy accuracy, no lambda) but its RM accuracy;
   P-DPO has no RM accuracy; plugins read class attributes; correlations over methods,
   (method, seed) or users, named in the report; the paper's own Table 2 Kendall tau.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy import stats

import persalign.rewards as rewards
from persalign.decoding import Policy
from persalign.errors import ConfigError
from persalign.metrics import METRICS, CellContext, compute_cell_metrics
from persalign.metrics.correlation import correlations
from persalign.metrics.policy_accuracy import policy_accuracy
from persalign.metrics.preference_scores import policy_scores
from persalign.report.correlation_tables import (
    correlation_detail_table,
    correlation_points,
    rouge_correlation_table,
)
from persalign.report.reading import load_run
from persalign.report.writer import report_html
from persalign.runs.benchmark_builds import PreparedBenchmark
from persalign.runs.config import parse_config
from persalign.runs.lambda_selection import select_lambda
from persalign.runs.plan import make_plan
from persalign.runs.runner import run_experiment
from persalign.types import Benchmark

from .rewards_synthetic import two_group_task, write_two_group_benchmark

FAST = dict(device="cpu", seed=0, eval_batch_size=3, max_response_tokens=32)
PROMPTS = ["Say about cat sun", "Hi", "Write a line about the dog and the owl"]
RESPONSES = ["cat alpha", "a much longer answer here", "owl omega and more"]


# ---------------------------------------------------------------- plain HF / peft references
def hf_logprobs(model, ids: list[int], start: int, embeds: torch.Tensor | None = None):
    """log p(token_t | everything before) for t >= start of ``ids`` (float64), one plain forward
    of ``model`` (soft-token ``embeds`` [n, H] in front when given)."""
    tensor = torch.tensor([ids])
    with torch.no_grad():
        if embeds is None:
            logits = model(input_ids=tensor).logits[0]  # [T, V]
            offset = 0
        else:
            tokens = model.get_input_embeddings()(tensor)[0]  # [T, H]
            inputs = torch.cat([embeds.to(tokens.dtype), tokens])[None]  # [1, n + T, H]
            logits = model(inputs_embeds=inputs).logits[0]  # [n + T, V]
            offset = len(embeds)
    logp = logits.double().log_softmax(dim=-1)
    return [float(logp[offset + t - 1, ids[t]]) for t in range(start, len(ids))]


def user_soft_tokens(pdpo, user: str) -> torch.Tensor:
    """e_0 + o_u [n, H], read from the model's parameters."""
    n = pdpo.config.n_soft_tokens
    row = pdpo.user_table[pdpo.user_ids[user]].detach()
    return pdpo.generic_tokens.detach() + row.reshape(n, -1)


def ids_of(formatter, prompt: str, response: str) -> tuple[list[int], int]:
    prompt_ids = formatter.prompt_ids(prompt)
    return prompt_ids + formatter.response_ids(response), len(prompt_ids)


@pytest.fixture(scope="module")
def policy(tiny_lm_other: str) -> Policy:
    return Policy.load(tiny_lm_other, device="cpu")


@pytest.fixture(scope="module")
def pdpo(tiny_lm: str):
    """A P-DPO model with two new users adapted on opposite preferences (soft tokens moved)."""
    train, new = two_group_task(per_user=4, n_train=2, n_new=2, support=4, query=3)
    rm = rewards.create(
        "p-dpo", backbone=tiny_lm, max_steps=2, batch_size=4, adapt_steps=4, adapt_lr=0.05, **FAST
    )
    rm.fit(train, progress=False)
    for user, (support, _) in new.items():
        rm.adapt(user, support)
    query = tuple(p for _, q in new.values() for p in q)
    return rm, query


# ---------------------------------------------------------------- item 1
def test_01_pdpo_policy_accuracy_is_its_own_personalized_policy(pdpo, policy, tiny_lm, tmp_path):
    rm, query = pdpo
    model = rm.backbone.model  # the LoRA policy pi_theta (peft)
    expect = {}
    for pref in query:
        soft = user_soft_tokens(rm, pref.user)
        for side in ("chosen", "rejected"):
            ids, start = ids_of(rm.formatter, pref.prompt, getattr(pref, side))
            logp = hf_logprobs(model, ids, start, soft)
            expect[(pref.id, side)] = (sum(logp) / len(logp), sum(logp))
    prompts = [p.prompt for p in query] * 2
    responses = [p.chosen for p in query] + [p.rejected for p in query]
    users = [p.user for p in query] * 2
    keys = [(p.id, "chosen") for p in query] + [(p.id, "rejected") for p in query]
    for index, scorer in enumerate(("personalized-policy", "personalized-policy-sum")):
        got = policy_scores(
            None, prompts, responses, scorer=scorer, reward_model=rm, users=users, batch_size=2
        )
        want = torch.tensor([expect[k][index] for k in keys], dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the user's soft tokens matter: another user's tokens give other scores
    other = policy_scores(
        None, prompts, responses, scorer="personalized-policy", reward_model=rm,
        users=["new1" if u == "new0" else "new0" for u in users],
    )  # fmt: skip
    assert (other - want.new_tensor([expect[k][0] for k in keys])).abs().max() > 1e-4

    # the method cell: its own policy, no lambda; per user, then the mean over users
    by_user: dict[str, list[bool]] = {}
    for pref in query:
        hit = expect[(pref.id, "chosen")][0] > expect[(pref.id, "rejected")][0]
        by_user.setdefault(pref.user, []).append(hit)
    mean = sum(sum(h) / len(h) for h in by_user.values()) / len(by_user)
    bench = Benchmark("toy", train=(), support=(), query=query)
    settings = {"batch_size": 2, "generation": {"bertscore_model": None}}
    ctx = CellContext(
        kind="method", method="p-dpo", decoder="p-dpo", seed=0, settings=settings,
        benchmark=bench, policy=policy, reward_model=rm, lam=None,
    )  # fmt: skip
    got = compute_cell_metrics(ctx)
    assert got["policy_accuracy"]["scorer"] == "personalized-policy"
    assert got["policy_accuracy"]["lam"] is None
    assert got["policy_accuracy"]["mean"] == pytest.approx(mean, rel=1e-12)
    assert "rm_accuracy" not in got  # item 3: P-DPO has no RM accuracy
    direct = policy_accuracy(None, query, scorer="personalized-policy", reward_model=rm)
    assert direct["per_user"] == got["policy_accuracy"]["per_user"]

    # a run's plan: P-DPO writes with its own policy and chooses no lambda
    config = tiny_config(tmp_path, tiny_lm, {"p-dpo": None})
    cells = [j for j in make_plan(config, prepared(tmp_path)) if j.kind == "cell"]
    (cell,) = [j for j in cells if j.spec.kind == "method"]
    assert cell.spec.decoder == "p-dpo" and cell.spec.lam is None and cell.spec.generate


# ---------------------------------------------------------------- item 2
def test_02_cumulative_token_rewards_enter_eqs_5_6_once(pdpo, policy, tiny_lm):
    genarm = rewards.create("genarm", backbone=tiny_lm, **FAST)
    pdpo_rm, _ = pdpo
    users = ["new0", "new1", "new0"]
    lam = 0.7

    def token_rewards(rm, prompt: str, response: str, user: str) -> list[float]:
        """beta * (log pi_r - log pi_ref) of each response token, in plain peft code."""
        ids, start = ids_of(rm.formatter, prompt, response)
        if rm.name == "genarm":
            return [rm.config.reward_beta * v for v in hf_logprobs(rm.backbone.model, ids, start)]
        theta = hf_logprobs(rm.backbone.model, ids, start, user_soft_tokens(rm, user))
        with rm.backbone.model.disable_adapter():
            ref = hf_logprobs(rm.backbone.model, ids, start)
        return [rm.config.beta * (a - b) for a, b in zip(theta, ref, strict=True)]

    for rm in (genarm, pdpo_rm):
        assert rm.cumulative
        got = policy_scores(
            policy, PROMPTS, RESPONSES, reward_model=rm, users=users,
            scorer="personal-rgd" if rm.personalized else "global-rgd",
            lam=lam, batch_size=2,
        )  # fmt: skip
        for i, (prompt, response, user) in enumerate(zip(PROMPTS, RESPONSES, users, strict=True)):
            ids, start = ids_of(policy.formatter, prompt, response)
            logp = sum(hf_logprobs(policy.model, ids, start))
            tokens = token_rewards(rm, prompt, response, user)
            assert float(got[i]) == pytest.approx(logp + lam * sum(tokens), rel=1e-5, abs=1e-5)
            # the old reading (prefix sums added up) weights token t |y| - t + 1 times
            running = [sum(tokens[: t + 1]) for t in range(len(tokens))]
            assert abs(lam * (sum(running) - sum(tokens))) > 1e-3

    # ARGS at decoding time compares prefix sums: per row they differ from the token rewards of
    # the k candidates by one constant (the prefix so far), so the chosen token is the same.
    prompt, history = PROMPTS[0], [40, 41]
    state = genarm.start([genarm.formatter.prompt_ids(prompt)], ["new0"])
    for token in history:
        genarm.step_rewards(state, torch.tensor([[token]]))
        genarm.commit(state, torch.tensor([0]))
    candidates = torch.tensor([[50, 51, 52, 53]])
    step = genarm.step_rewards(state, candidates)[0].double()  # [k]
    base = genarm.formatter.prompt_ids(prompt) + history
    logits_ids = [[*base, int(c)] for c in candidates[0]]
    start = len(genarm.formatter.prompt_ids(prompt))
    prefix = [genarm.config.reward_beta * sum(hf_logprobs(genarm.backbone.model, ids, start))
              for ids in logits_ids]  # fmt: skip
    done = genarm.config.reward_beta * sum(
        hf_logprobs(genarm.backbone.model, base, start)
    )  # the constant: the committed prefix's reward
    token = torch.tensor(prefix, dtype=torch.float64) - done
    torch.testing.assert_close(step - step[0], token - token[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(step - token, torch.full_like(token, done), rtol=1e-4, atol=1e-5)
    assert abs(done) > 1e-3 and int(step.argmax()) == int(token.argmax())


# ---------------------------------------------------------------- item 3
def prepared(tmp_path: Path) -> dict:
    folder = tmp_path / "bench"
    if not folder.is_dir():
        write_two_group_benchmark(folder)
    return {"toy": PreparedBenchmark(label="toy", path=folder, hash="h")}


def tiny_config(tmp_path: Path, lm: str, methods: dict, **extra):
    folder = tmp_path / "bench"
    if not folder.is_dir():
        write_two_group_benchmark(folder)
    raw = {
        "name": "fidelity",
        "seeds": [0],
        "threads": 1,
        "benchmarks": {"toy": {"path": str(folder)}},
        "reward": {"backbone": lm, "settings": {"max_steps": 2, "batch_size": 4, "adapt_steps": 3}},
        "methods": methods,
        "policies": {"tiny": {"spec": lm, "params_m": 0.1, "scale": "tiny"}},
        "decoding": {"max_new_tokens": 3, "k": 2, "batch_size": 3},
        "lambda": {"grid": [0.0, 1.0], "heldout_per_user": 1},
        "metrics": {"generation": {"bertscore_model": None}},
        **extra,
    }
    return parse_config(raw)


@pytest.fixture(scope="module")
def pal_pdpo_run(tmp_path_factory, tiny_lm):
    tmp = tmp_path_factory.mktemp("fidelity-run")
    methods = {"global-rm": None, "pal": None, "p-dpo": None}
    config = tiny_config(tmp, tiny_lm, methods, report={"correlation_units": "method-seed"})
    return config, run_experiment(config, tmp / "runs", reporter=report_html)


def test_03_which_methods_enter_which_comparison(pal_pdpo_run, tmp_path, tiny_lm, policy):
    # the paper's PAL has no RGD and P-DPO no RM accuracy: class attributes, every method
    for name in rewards.METHODS.names():
        cls = rewards.METHODS.get(name)
        assert cls.supports_rgd is (name != "pal") and cls.has_rm_accuracy is (name != "p-dpo")

    # plugins decide from the attributes, not from method names
    class NoRGD:
        supports_rgd, has_rm_accuracy, personalized = False, True, True

    class NoRM:
        supports_rgd, has_rm_accuracy, personalized = True, False, True

    bench = Benchmark("toy", train=(), support=(), query=())
    settings = {"generation": {"bertscore_model": None}}

    def applies(key: str, rm: object, decoder: str = "args") -> bool:
        ctx = CellContext(
            kind="method", method="lore", decoder=decoder, seed=0, settings=settings,
            benchmark=bench, policy=object(), reward_model=rm, lam=1.0, generations=[],
        )  # fmt: skip
        return METRICS.get(key)().applies(ctx)

    assert not applies("policy_accuracy", NoRGD()) and applies("policy_accuracy", NoRM())
    assert applies("rm_accuracy", NoRGD()) and not applies("rm_accuracy", NoRM())

    # a run: PAL has RM accuracy only; P-DPO no RM accuracy and no lambda; Global RM everything
    config, summary = pal_pdpo_run
    run_dir = summary.run_dir
    assert not summary.outcome.failed
    cells = {m: json.loads((run_dir / f"cells/toy__tiny__{m}__s0/metrics.json").read_text())
             for m in ("global-rm", "pal", "p-dpo")}  # fmt: skip
    pal, p_dpo, global_rm = cells["pal"], cells["p-dpo"], cells["global-rm"]
    assert pal["rm_accuracy"]["pairs"] == 6
    for key in ("policy_accuracy", "generation", "win_rate", "perplexity", "lambda"):
        assert pal[key] is None, key
    assert not (run_dir / "cells/toy__tiny__pal__s0/generations.jsonl").exists()
    assert p_dpo["rm_accuracy"] is None and p_dpo["win_rate"] is None
    assert p_dpo["lambda"] is None and p_dpo["lambda_curve"] is None
    assert p_dpo["policy_accuracy"]["scorer"] == "personalized-policy"
    assert p_dpo["generation"]["rouge1"]["mean"] >= 0  # P-DPO writes with its own policy
    assert not list(run_dir.glob("models/toy__p-dpo__*/rm_accuracy.json"))
    assert list(run_dir.glob("models/toy__pal__*/rm_accuracy.json"))
    assert global_rm["lambda"] in (0.0, 1.0) and global_rm["win_rate"]["n"] == 6
    assert global_rm["policy_accuracy"]["scorer"] == "global-rgd"
    specs = {j.spec.method: j.spec for j in make_plan(config, prepared(tmp_path))}
    assert specs["pal"].generate is False and specs["pal"].lam is None

    # correlations: RGD rows leave PAL (no policy accuracy) and P-DPO (no RM accuracy) out
    results = load_run(run_dir)
    for units, n in (("methods", 1), ("method-seed", 1), ("users", 2)):
        labels, _, _ = correlation_points(
            results, "toy", "tiny", "rm_accuracy", "policy_accuracy", units
        )
        assert len(labels) == n and all(label.startswith("global-rm") for label in labels)
    table = rouge_correlation_table(results, "toy")  # the run's own units: method-seed
    assert "units: method-seed" in table.caption and "(method-seed)" in table.notes[0]
    assert "p-dpo s0" in correlation_points(results, "toy", "tiny", "policy_accuracy", "rouge1")[0]
    report = (run_dir / "report/toy/correlations.md").read_text(encoding="utf-8")
    assert "Units: method-seed" in report

    check_correlation_units(tmp_path / "units")
    check_pal_is_refused_where_rgd_is_needed(tiny_lm, policy)


def check_correlation_units(tmp_path: Path) -> None:
    """Correlations over methods, (method, seed) or (method, user), against scipy; and the
    paper's own Table 2."""
    methods = {"a": (0.60, 0.50), "b": (0.70, 0.58), "c": (0.65, 0.66), "d": (0.80, 0.61)}
    users = ("u1", "u2")
    spread = {"u1": -0.03, "u2": 0.05}
    (tmp_path / "cells").mkdir(parents=True)
    for m, (rm, pol) in methods.items():
        for seed in (0, 1):
            shift = 0.02 * seed * (1 if m in "ac" else -1)

            def block(v: float, m: str = m) -> dict:
                return {"mean": v, "per_user": {u: v + spread[u] * (ord(m) - 96) for u in users}}

            cell = {
                "cell": f"toy__tiny__{m}__s{seed}", "kind": "method", "benchmark": "toy",
                "policy": "tiny", "scale": "tiny", "seed": seed, "method": m,
                "personalized": True, "rm_accuracy": block(rm + shift),
                "policy_accuracy": block(pol - shift), "generation": {"rouge1": block(pol / 2)},
            }  # fmt: skip
            folder = tmp_path / "cells" / cell["cell"]
            folder.mkdir()
            (folder / "metrics.json").write_text(json.dumps(cell))
    manifest = {"config": {"report": {"correlation_units": "users"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    results = load_run(tmp_path)
    x, y = "rm_accuracy", "policy_accuracy"

    def seeds(m: str, which: int) -> list[float]:
        shift = [0.02 * s * (1 if m in "ac" else -1) for s in (0, 1)]
        return [methods[m][0] + d if which == 0 else methods[m][1] - d for d in shift]

    per_method = ([sum(seeds(m, 0)) / 2 for m in methods], [sum(seeds(m, 1)) / 2 for m in methods])
    per_seed = (
        [v for m in methods for v in seeds(m, 0)],
        [v for m in methods for v in seeds(m, 1)],
    )
    per_user = (
        [sum(seeds(m, 0)) / 2 + spread[u] * (ord(m) - 96) for m in methods for u in users],
        [sum(seeds(m, 1)) / 2 + spread[u] * (ord(m) - 96) for m in methods for u in users],
    )
    for units, (xs, ys), n in (
        ("methods", per_method, 4),
        ("method-seed", per_seed, 8),
        ("users", per_user, 8),
    ):
        labels, got_x, got_y = correlation_points(results, "toy", "tiny", x, y, units)
        assert len(labels) == n
        assert got_x == pytest.approx(xs, rel=1e-12) and got_y == pytest.approx(ys, rel=1e-12)
        tau = stats.kendalltau(xs, ys).statistic
        table = correlation_detail_table(results, "toy", n_boot=20, units=units)
        row = next(r for r in table.rows if r[1] == "RM Acc vs Policy Acc" and r[2] == "Kendall τ")
        assert row[3] == f"{tau:.3f}" and row[6] == str(n), units
        assert f"Units: {units}" in table.caption
    # without an argument the run's config decides (users here)
    assert correlation_points(results, "toy", "tiny", x, y)[0][:2] == ["a u1", "a u2"]
    assert "users" in rouge_correlation_table(results, "toy").caption

    # the paper's Table 2 (TL;DR, 135M): Kendall tau over the 8 methods with both numbers is
    # 6/28 = 0.214, not the reported 0.31 (Pearson 0.424 vs 0.41, Spearman 0.238 vs 0.36)
    rm = [82.56, 76.76, 77.83, 65.27, 68.67, 53.67, 73.67, 38.66]
    pol_135m = [81.09, 49.96, 52.91, 46.68, 59.78, 53.06, 58.80, 53.05]
    paper = correlations(rm, pol_135m)
    assert paper["kendall"]["r"] == pytest.approx(6 / 28, rel=1e-12)
    assert paper["pearson"]["r"] == pytest.approx(0.4241, abs=1e-4)
    assert paper["spearman"]["r"] == pytest.approx(10 / 42, rel=1e-9)


def check_pal_is_refused_where_rgd_is_needed(tiny_lm: str, policy: Policy) -> None:
    pal = rewards.create("pal", backbone=tiny_lm, **FAST)
    pal.add_user("new0", torch.zeros(pal.user_dim))
    query = two_group_task(per_user=2, n_train=1, n_new=1, support=1, query=2)[1]["new0"][1]
    with pytest.raises(ConfigError, match="does not support reward-guided decoding"):
        policy_accuracy(policy, query, scorer="personal-rgd", reward_model=pal)
    with pytest.raises(ConfigError, match="does not support reward-guided decoding"):
        select_lambda(policy, pal, query, [0.0, 1.0])
