"""Lambda selection (appendix F.2): held-out split, known answers, harmonic mean, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import persalign.rewards as rewards
from persalign.data.benchmark_folder import load_benchmark, write_benchmark
from persalign.decoding import GenerationRequest, Policy, create_decoder
from persalign.errors import ConfigError
from persalign.metrics import policy_accuracy as policy_metrics
from persalign.metrics.generation import rouge
from persalign.metrics.scoring import ScoreParts
from persalign.runs import lambda_selection as select
from persalign.runs.lambda_selection import (
    harmonic_mean,
    heldout_preferences,
    save_selection,
    select_lambda,
    split_train_heldout,
)
from persalign.types import Benchmark, Preference

from .rewards_synthetic import two_group_task
from .test_cli import run

FAST = dict(device="cpu", eval_batch_size=8, seed=0, max_response_tokens=16)
# (chosen - rejected) = dl + lam * dr per pair: lam 0 -> 3/5, lam 1 -> 5/5, lam 10 -> 3/5
PAIRS = [(1.0, -0.05), (-1.0, 2.0), (-1.0, 1.5), (2.0, -0.3), (0.5, -0.3)]


def known_parts() -> tuple[list[Preference], ScoreParts]:
    prefs = [Preference(f"u/{i}", "u", "p", "c", "r") for i in range(len(PAIRS))]
    dl = torch.tensor([d for d, _ in PAIRS], dtype=torch.float64)
    dr = torch.tensor([r for _, r in PAIRS], dtype=torch.float64)
    zeros = torch.zeros(len(PAIRS), dtype=torch.float64)
    parts = ScoreParts(
        torch.cat([dl, zeros]), torch.ones(10, dtype=torch.long), torch.cat([dr, zeros])
    )
    return prefs, parts


@pytest.fixture
def stub_parts(monkeypatch) -> list[Preference]:
    prefs, parts = known_parts()
    monkeypatch.setattr(policy_metrics, "preference_parts", lambda *a, **k: parts)
    return prefs


def test_policy_accuracy_objective_picks_the_known_best(stub_parts):
    result = select_lambda(object(), object(), stub_parts, [0, 1, 10], scorer="global-rgd")
    assert result["lam"] == 1.0 and result["objective"] == "policy-accuracy"
    assert [p["policy_accuracy"] for p in result["curve"]] == pytest.approx([0.6, 1.0, 0.6])
    assert [p["score"] for p in result["curve"]] == [p["policy_accuracy"] for p in result["curve"]]
    tie = select_lambda(object(), object(), stub_parts, [10, 0], scorer="global-rgd")
    assert tie["lam"] == 10.0  # a tie keeps the earlier lambda of the grid


def test_harmonic_objective_combines_the_three_figures(monkeypatch, stub_parts):
    figures = {0.0: (0.5, 0.2), 1.0: (0.01, 0.25), 10.0: (0.4, 0.1)}  # (rouge1, 1 / ppl)
    seen = []

    def fake(policy, rm, prefs, refs, lam, settings):
        seen.append((lam, list(refs), dict(settings)))
        r1, inv = figures[lam]
        return {"rouge1": r1, "perplexity": 1 / inv, "inverse_perplexity": inv}

    monkeypatch.setattr(select, "generation_figures", fake)
    completions = {"u/1": type("C", (), {"reference": "their own words"})()}
    result = select_lambda(
        object(),
        object(),
        stub_parts,
        [0, 1, 10],
        objective="harmonic",
        scorer="global-rgd",
        completions=completions,
        decode_settings={"k": 3},
    )
    accuracy = [0.6, 1.0, 0.6]
    expect = [
        3 / (1 / r + 1 / i + 1 / a) for (r, i), a in zip(figures.values(), accuracy, strict=True)
    ]
    assert [p["score"] for p in result["curve"]] == pytest.approx(expect)
    assert result["lam"] == 0.0  # lambda 1 ranks best but writes unlike the references
    assert seen[0][1] == ["c", "their own words", "c", "c", "c"]  # chosen unless a completion
    assert seen[0][2] == {"k": 3, "batch_size": 8}
    with pytest.raises(ConfigError, match="must not set lam"):
        select_lambda(
            object(), object(), stub_parts, [0], objective="harmonic", decode_settings={"lam": 1}
        )
    with pytest.raises(ConfigError, match="unknown objective"):
        select_lambda(object(), object(), stub_parts, [0], objective="rouge")


def test_harmonic_mean():
    assert harmonic_mean([0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert harmonic_mean([1.0, 0.25]) == pytest.approx(0.4)
    assert harmonic_mean([0.9, 0.0, 0.8]) == 0.0 and harmonic_mean([float("nan"), 1]) == 0.0


def small_bench() -> Benchmark:
    train, new = two_group_task(per_user=5, n_train=3, n_new=2, support=2, query=2)
    train += [Preference("lonely/0", "lonely", "p", "a", "b")]  # one preference: never held out
    return Benchmark(
        "syn",
        tuple(train),
        tuple(p for s, _ in new.values() for p in s),
        tuple(p for _, q in new.values() for p in q),
    )


def test_heldout_split_is_seeded_disjoint_and_from_train_users_only():
    bench = small_bench()
    fit, held = split_train_heldout(bench, per_user=2, seed=0)
    assert sorted(p.id for p in fit + held) == sorted(p.id for p in bench.train)
    assert not {p.id for p in fit} & {p.id for p in held}
    counts = {u: sum(p.user == u for p in held) for u in ("train0", "train1", "train2", "lonely")}
    assert counts == {"train0": 2, "train1": 2, "train2": 2, "lonely": 0}
    assert heldout_preferences(bench, per_user=2, seed=0) == held
    assert heldout_preferences(bench, per_user=2, seed=1) != held
    few = heldout_preferences(bench, per_user=1, max_users=2, seed=0)
    assert len(few) == 2 and len({p.user for p in few}) == 2
    with pytest.raises(ConfigError):
        split_train_heldout(bench, per_user=0)


def test_harmonic_end_to_end_on_tiny_models(tiny_lm, tiny_lm_other, tmp_path):
    policy = Policy.load(tiny_lm_other, device="cpu")
    rm = rewards.create("global-rm", backbone=tiny_lm, **FAST)
    held = heldout_preferences(small_bench(), per_user=1, max_users=2, seed=0)
    settings = {"k": 3, "max_new_tokens": 4, "ignore_eos": True}
    result = select_lambda(
        policy, rm, held, [0, 5], objective="harmonic", decode_settings=settings, progress=False
    )
    assert result["scorer"] == "global-rgd" and result["heldout"] == 2 and result["users"] == 2
    for point in result["curve"]:
        decoder = create_decoder("args", policy, reward_model=rm, lam=point["lam"], **settings)
        texts = [
            g.text
            for g in decoder.generate([GenerationRequest(p.id, p.user, p.prompt) for p in held])
        ]
        r1 = [s["rouge1"] for s in rouge(texts, [p.chosen for p in held])]
        assert point["rouge1"] == pytest.approx(sum(r1) / 2)  # one item per user
        assert point["inverse_perplexity"] == pytest.approx(1 / point["perplexity"])
        figures = [point["rouge1"], point["inverse_perplexity"], point["policy_accuracy"]]
        assert point["score"] == pytest.approx(harmonic_mean(figures))
    save_selection(result, tmp_path / "sel.json")
    assert json.loads((tmp_path / "sel.json").read_text()) == result


# ---------------------------------------------------------------- persalign select-lambda
@pytest.fixture(scope="module")
def bench_and_model(tmp_path_factory, tiny_lm) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("select-cli")
    bench = small_bench()
    write_benchmark(
        root / "bench",
        train=bench.train,
        support=bench.support,
        query=bench.query,
        manifest={"name": "syn"},
    )
    rm = rewards.create("lore", backbone=tiny_lm, latent_dim=2, max_steps=1, batch_size=4, **FAST)
    rm.fit(list(bench.train), progress=False)
    rm.save(root / "model")
    return root / "bench", root / "model"


def test_select_lambda_cli(bench_and_model, tiny_lm_other, tmp_path, capsys):
    bench, model = bench_and_model
    out = tmp_path / "lambda.json"
    argv = ["select-lambda", "--benchmark", str(bench), "--reward", str(model)]
    argv += ["--policy", tiny_lm_other, "--lams", "0,0.5,40", "--out", str(out)]
    code, stdout, err = run([*argv, "--per-user", "2", "--seed", "3"], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    held = heldout_preferences(load_benchmark(bench), per_user=2, seed=3)
    expect = select_lambda(
        Policy.load(tiny_lm_other, device="cpu"),
        rewards.load(model),
        held,
        [0, 0.5, 40],
        progress=False,
    )
    assert result["scorer"] == "personal-rgd" and result["heldout"] == len(held) == 6
    assert result["lam"] == expect["lam"] and result["curve"] == expect["curve"]
    assert f"chosen lambda: {result['lam']:g}" in stdout


def test_select_lambda_cli_errors(bench_and_model, tiny_lm_other, tmp_path, capsys):
    bench, model = bench_and_model
    argv = ["select-lambda", "--benchmark", str(bench), "--reward", str(model)]
    argv += ["--policy", tiny_lm_other, "--out", str(tmp_path / "x.json")]
    code, _, err = run([*argv, "--lams", "0,one"], capsys)
    assert code == 2 and "--lams must be comma-separated numbers" in err
    code, _, err = run([*argv, "--objective", "bleu"], capsys)
    assert code == 2 and "unknown objective 'bleu'" in err
