"""Policy accuracy (Eqs. 3-7): single-pass scores equal a naive per-prefix computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import persalign.rewards as rewards
from persalign.data.benchmark_folder import write_benchmark
from persalign.decoding import GenerationRequest, Policy
from persalign.decoding.icl import PAIR_EXAMPLE, PAIR_HEADER, PAIR_QUERY
from persalign.errors import ConfigError, DataError
from persalign.metrics import METRICS, preference_scores
from persalign.metrics import policy_accuracy as policy_metrics
from persalign.metrics.policy_accuracy import policy_accuracy, policy_accuracy_curve
from persalign.metrics.preference_scores import icl_prompts, policy_scores
from persalign.metrics.scoring import ScoreParts
from persalign.types import Preference

from ..conftest import TINY_CHARS, TINY_CHAT_TEMPLATE, TINY_SPECIALS
from ..reference_policy import naive_score, naive_terms
from .rewards_synthetic import style_pairs, two_group_task
from .test_cli import run

PROMPTS = ["Say about cat sun", "Hi", "Write a line about the dog and the owl", "Title: mats"]
RESPONSES = ["cat alpha", "a much longer answer here", "ok", "owl omega and more"]
USERS = ["u1", "u2", "u1", "u2"]
LAM = 0.7
FAST = dict(device="cpu", eval_batch_size=8, seed=0, max_response_tokens=32)


@pytest.fixture(scope="module")
def policy(tiny_lm_other: str) -> Policy:
    return Policy.load(tiny_lm_other, device="cpu")


@pytest.fixture(scope="module")
def global_rm(tiny_lm: str):
    return rewards.create("global-rm", backbone=tiny_lm, **FAST)


@pytest.fixture(scope="module")
def lore(tiny_lm: str):
    """A personalized RM with two users adapted on opposite preferences."""
    rm = rewards.create("lore", backbone=tiny_lm, latent_dim=2, adapt_steps=30, **FAST)
    rm.adapt("u1", style_pairs("u1", 4, prefers_alpha=True, seed=0))
    rm.adapt("u2", style_pairs("u2", 4, prefers_alpha=False, seed=0))
    return rm


def save_pair_lm(folder: Path) -> str:
    """A tiny LM whose tokenizer reads two characters per token (another vocabulary)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = TINY_CHARS[:95]
    tokens = TINY_SPECIALS + TINY_CHARS + [a + b for a in chars for b in chars]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("..?"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(3)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<pad>"],
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def manual_icl_ids(policy, demos: list[Preference], prompt: str) -> list[int]:
    """The default ``pair`` rendering (Eq. 7's triples), assembled from the icl templates."""
    if not demos:
        return policy.formatter.messages_ids([{"role": "user", "content": prompt}])
    blocks = [
        PAIR_EXAMPLE.format(number=i, prompt=d.prompt, chosen=d.chosen, rejected=d.rejected)
        for i, d in enumerate(demos, start=1)
    ]
    content = "\n\n".join([PAIR_HEADER, *blocks, PAIR_QUERY.format(prompt=prompt)])
    return policy.formatter.messages_ids([{"role": "user", "content": content}])


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("scorer", ["base", "global-rgd", "personal-rgd", "icl"])
def test_single_pass_equals_naive_per_prefix(policy, global_rm, lore, scorer, padding_side):
    rm = {"global-rgd": global_rm, "personal-rgd": lore}.get(scorer)
    demos = [
        [
            Preference(f"d{i}{j}", "u", f"demo prompt {j}", f"demo answer {i}{j}", "no")
            for j in (0, 1)
        ]
        for i in range(len(PROMPTS))
    ]
    got = policy_scores(
        policy,
        PROMPTS,
        RESPONSES,
        scorer=scorer,
        reward_model=rm,
        users=USERS,
        lam=LAM,
        demonstrations=demos if scorer == "icl" else None,
        batch_size=3,  # batches mix lengths: padding matters
        padding_side=padding_side,
        progress=False,
    )
    assert got.dtype == torch.float64 and got.shape == (len(PROMPTS),)
    for i, (prompt, response, user) in enumerate(zip(PROMPTS, RESPONSES, USERS, strict=True)):
        ids = manual_icl_ids(policy, demos[i], prompt) if scorer == "icl" else None
        logp, rewards_t = naive_terms(policy, rm, prompt, response, user, prompt_ids=ids)
        expect = naive_score(scorer, logp, rewards_t, LAM)
        assert abs(float(got[i]) - expect) < 1e-5, (i, float(got[i]), expect)
        if rm is not None:  # the reward term is really there
            assert abs(sum(rewards_t)) > 1e-4


def test_personal_rgd_depends_on_the_user_and_icl_on_demonstrations(policy, lore):
    kw = dict(reward_model=lore, lam=50.0, progress=False)
    same = [PROMPTS[0]] * 2, [RESPONSES[0]] * 2
    personal = policy_scores(policy, *same, scorer="personal-rgd", users=["u1", "u2"], **kw)
    assert abs(float(personal[0] - personal[1])) > 1e-3
    base = policy_scores(policy, *same, scorer="base", progress=False)
    demos = [[], [Preference("d", "u", "Say about owl", "owl owl owl", "x")]]
    icl = policy_scores(policy, *same, scorer="icl", demonstrations=demos, progress=False)
    # no demos: the base score (float32 logits in another batch shape: rel 1e-5)
    assert float(icl[0]) == pytest.approx(float(base[0]), rel=1e-5)
    assert abs(float(icl[1] - base[1])) > 1e-4


def test_different_tokenizers_sum_over_each_models_own_tokens(tmp_path, global_rm):
    pair_policy = Policy.load(save_pair_lm(tmp_path / "pair-lm"), device="cpu")
    assert len(pair_policy.formatter.response_ids(RESPONSES[1])) < len(
        global_rm.formatter.response_ids(RESPONSES[1])
    )
    got = policy_scores(
        pair_policy,
        PROMPTS,
        RESPONSES,
        scorer="global-rgd",
        reward_model=global_rm,
        users=USERS,
        lam=LAM,
        batch_size=2,
        padding_side="left",
        progress=False,
    )
    for i in range(len(PROMPTS)):
        logp, rewards_t = naive_terms(pair_policy, global_rm, PROMPTS[i], RESPONSES[i], USERS[i])
        assert abs(float(got[i]) - naive_score("global-rgd", logp, rewards_t, LAM)) < 1e-5


def hand_made_prefs() -> list[Preference]:
    users = ["a", "a", "a", "b"]
    return [Preference(f"{u}/{i}", u, "p", "c", "r") for i, u in enumerate(users)]


def test_accuracy_is_per_user_then_mean(monkeypatch, policy):
    prefs = hand_made_prefs()
    # chosen then rejected rows; base score = logp_sum / tokens; pair 2 is a tie (a miss)
    logp = torch.tensor([-1.0, -2.0, -3.0, -5.0, -2.0, -1.0, -3.0, -4.0], dtype=torch.float64)
    tokens = torch.tensor([1, 1, 1, 1, 1, 2, 1, 1])  # rejected of pair 1: -1 / 2 = -0.5 > -2
    parts = ScoreParts(logp, tokens, torch.tensor([0.0, 0, 0, 3, 0, 0, 0, 0], dtype=torch.float64))
    monkeypatch.setattr(policy_metrics, "preference_parts", lambda *a, **k: parts)
    result = policy_accuracy(policy, prefs, scorer="base", progress=False)
    assert result["per_user"] == {"a": pytest.approx(1 / 3), "b": 0.0}
    assert result["mean"] == pytest.approx(1 / 6) and result["pooled"] == pytest.approx(1 / 4)
    assert (result["pairs"], result["users"], result["lam"]) == (4, 2, None)
    # RGD: logp_sum + lam * reward_sum; user b's chosen gains 3 * lam
    curve = policy_accuracy_curve(policy, prefs, object(), [0.0, 0.5], scorer="global-rgd")
    assert curve[0.0]["per_user"] == {"a": pytest.approx(1 / 3), "b": 0.0}
    assert curve[0.5]["per_user"] == {"a": pytest.approx(1 / 3), "b": 1.0}
    assert curve[0.5]["mean"] == pytest.approx(2 / 3)


def test_curve_runs_each_model_once_and_matches_single_lambda(monkeypatch, policy, lore):
    prefs = [p for u in ("u1", "u2") for p in style_pairs(u, 3, u == "u1", seed=5)]
    calls = {"policy": 0, "rm": 0}
    real_sums, real_prefix = preference_scores.candidate_logprob_sums, type(lore).prefix_rewards

    def count_policy(*a, **k):
        calls["policy"] += 1
        return real_sums(*a, **k)

    def count_rm(self, *a, **k):
        calls["rm"] += 1
        return real_prefix(self, *a, **k)

    monkeypatch.setattr(preference_scores, "candidate_logprob_sums", count_policy)
    monkeypatch.setattr(type(lore), "prefix_rewards", count_rm)
    lams = [0.0, 1.0, 30.0]
    curve = policy_accuracy_curve(policy, prefs, lore, lams, batch_size=4, progress=False)
    # one pass of the policy over the 6 pairs (both responses on their prompt's row) and 12
    # responses in batches of 4 for the reward model, for all lambdas
    assert calls == {"policy": 1, "rm": 3}
    for lam in lams:
        one = policy_accuracy(
            policy, prefs, scorer="personal-rgd", reward_model=lore, lam=lam, progress=False
        )
        assert curve[lam]["per_user"] == one["per_user"] and curve[lam]["lam"] == lam


def test_icl_scorer_uses_the_generation_prompts(monkeypatch, policy):
    from persalign.decoding import base, create_decoder

    _, new = two_group_task(per_user=2, n_train=1, n_new=2, support=3, query=2)
    support = {u: s for u, (s, _) in new.items()}
    query = [p for _, q in new.values() for p in q]
    seen: list[tuple[int, ...]] = []
    monkeypatch.setattr(  # every decoder's batches go through decoding.base.decode
        base, "decode", lambda stepper, batch, *a: seen.extend(r.prompt_ids for r in batch) or []
    )
    decoder = create_decoder("icl", policy, support=support, shots=2, seed=3)
    decoder.generate([GenerationRequest(q.id, q.user, q.prompt) for q in query], progress=False)
    scored = icl_prompts(policy, query, support, shots=2, seed=3)
    assert [tuple(ids) for ids in scored] == seen
    plain = [policy.formatter.prompt_ids(q.prompt) for q in query]
    assert all(len(s) > len(p) for s, p in zip(scored, plain, strict=True))
    zero = policy_accuracy(policy, query, scorer="icl", support=support, shots=0, progress=False)
    base = policy_accuracy(policy, query, scorer="base", progress=False)
    assert zero["per_user"] == base["per_user"] and zero["scorer"] == "icl"


def test_errors_are_clear(policy, global_rm):
    prefs = hand_made_prefs()
    with pytest.raises(ConfigError, match="unknown scorer"):
        policy_accuracy(policy, prefs, scorer="rgd")
    with pytest.raises(ConfigError, match="needs a reward model"):
        policy_accuracy(policy, prefs, scorer="global-rgd")
    with pytest.raises(ConfigError, match="support sets"):
        policy_accuracy(policy, prefs, scorer="icl")
    with pytest.raises(ConfigError, match="needs the users"):
        policy_scores(policy, ["p"], ["r"], scorer="personal-rgd", reward_model=global_rm)
    with pytest.raises(DataError, match="empty"):
        policy_scores(policy, ["p"], [""], scorer="base", progress=False)
    plugin = METRICS.get("policy_accuracy")  # the cell metric wrapping this function
    assert plugin.__module__ == policy_accuracy.__module__ and plugin.key == "policy_accuracy"


# ---------------------------------------------------------------- persalign evaluate policy
@pytest.fixture(scope="module")
def bench_and_model(tmp_path_factory, tiny_lm) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("policy-cli")
    train, new = two_group_task(per_user=4, n_train=2, n_new=2, support=3, query=3)
    write_benchmark(
        root / "bench",
        train=train,
        support=[p for s, _ in new.values() for p in s],
        query=[p for _, q in new.values() for p in q],
        manifest={"name": "synthetic"},
    )
    rm = rewards.create("lore", backbone=tiny_lm, latent_dim=2, adapt_steps=5, **FAST)
    for user, (support, _) in new.items():
        rm.adapt(user, support)
    rm.save(root / "model")
    return root / "bench", root / "model"


@pytest.mark.parametrize("scorer", ["base", "personal-rgd", "icl"])
def test_evaluate_policy_cli(bench_and_model, tiny_lm_other, policy, tmp_path, capsys, scorer):
    bench, model = bench_and_model
    out = tmp_path / "acc.json"
    argv = ["evaluate", "policy", "--benchmark", str(bench), "--policy", tiny_lm_other]
    argv += ["--scorer", scorer, "--reward", str(model), "--lam", "2", "--shots", "1"]
    code, stdout, err = run([*argv, "--json", "--out", str(out)], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert json.loads(out.read_text()) == result
    from persalign.data.benchmark_folder import load_benchmark

    data = load_benchmark(bench)
    support = {u.user: list(u.support) for u in data.adapt_users()}
    expect = policy_accuracy(
        policy,
        data.query,
        scorer=scorer,
        reward_model=rewards.load(model) if scorer == "personal-rgd" else None,
        lam=2.0,
        support=support,
        shots=1,
        progress=False,
    )
    assert result["per_user"] == pytest.approx(expect["per_user"])
    assert set(result["per_user"]) == {"new0", "new1"} and result["pairs"] == 6
    assert result["scorer"] == scorer and result["mean"] == pytest.approx(expect["mean"])
    assert result["lam"] == (2.0 if scorer == "personal-rgd" else None)
    assert result["shots"] == (1 if scorer == "icl" else None)
    code, stdout, err = run(argv, capsys)  # the table
    assert code == 0 and "new0" in stdout and "mean over 2 users" in stdout


def test_evaluate_policy_cli_errors(bench_and_model, tiny_lm_other, capsys):
    bench, _ = bench_and_model
    argv = ["evaluate", "policy", "--benchmark", str(bench), "--policy", tiny_lm_other]
    code, _, err = run([*argv, "--scorer", "global-rgd"], capsys)
    assert code == 2 and "needs a reward model" in err and "Traceback" not in err
    code, _, err = run([*argv, "--scorer", "best"], capsys)
    assert code == 2 and "unknown scorer 'best'" in err
