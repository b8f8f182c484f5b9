"""The sim pilots in benchmarks/: probe_sim_features.py's pairwise probe (heads trained on a sim
benchmark's labelled train pairs; with the exact attributes as features and labels without
noise, each head must recover the reward it is given the structure of) and pilot_sim_methods.py
(held-out pairs a user never labelled, scored as true RM accuracy)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from persalign.data import load_benchmark

from .test_sim_ceilings import build, naive_accuracy

SCRIPTS = Path(__file__).resolve().parents[2] / "benchmarks"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def probe():
    return script("probe_sim_features")


def exact_features(bench):
    """Every text's exact standardized attributes as its feature row, and the row index."""
    pairs = [*bench.train, *bench.support, *bench.query]
    texts = list(dict.fromkeys((p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)))
    x = bench.true_reward.features([p for p, _ in texts], [r for _, r in texts])  # [N, d]
    return np.asarray(x, dtype=float), {t: i for i, t in enumerate(texts)}


def test_true_accuracy_equals_a_naive_loop_over_the_json(probe, tmp_path: Path):
    out = build(tmp_path, noise=0.5, groups=3, user_spread=0.5)
    bench = load_benchmark(out)
    truth, query = bench.true_reward, list(bench.query)
    x, row = exact_features(bench)
    w0 = np.array([1.0, -1.0] + [0.5] * (x.shape[1] - 2))

    def margin(q):
        return float((x[row[(q.prompt, q.chosen)]] - x[row[(q.prompt, q.rejected)]]) @ w0)

    got = probe.true_accuracy(margin, truth, query)
    assert got["true_rm_accuracy"] == pytest.approx(naive_accuracy(out, lambda t, u: w0), abs=1e-4)
    assert probe.true_accuracy(lambda q: 0.0, truth, query)["true_rm_accuracy"] == 0.0  # a tie
    lo, hi = got["ci95"]
    assert lo <= got["true_rm_accuracy"] <= hi and got["users"] == len({q.user for q in query})


def test_one_shared_reward_is_learned_by_every_head(probe, tmp_path: Path):
    bench = load_benchmark(build(tmp_path, noise=0.0, groups=1, user_spread=0.0, users=30))
    x, row = exact_features(bench)
    out = probe.pairwise_probe(x, row, bench, bench.true_reward)
    for name in ("one_head", "group_known", "group_from_support"):
        assert out[name]["true_rm_accuracy"] >= 0.9, (name, out[name])
    picked, users = out["group_from_support"]["right_group"].split("/")
    assert picked == users  # one group: always the right one


def test_group_heads_beat_one_head_when_groups_disagree(probe, tmp_path: Path):
    bench = load_benchmark(
        build(tmp_path, noise=0.0, groups=2, user_spread=0.0, users=40, items_per_user=10)
    )
    truth = bench.true_reward
    x, row = exact_features(bench)
    out = probe.pairwise_probe(x, row, bench, truth)
    assert out["group_known"]["true_rm_accuracy"] >= 0.9, out
    assert out["group_known"]["true_rm_accuracy"] > out["one_head"]["true_rm_accuracy"]
    assert out["group_known"]["precision"] in probe.PRECISIONS


class TrueRewardModel:
    """A stand-in reward model that scores with r_u itself (or its negation)."""

    def __init__(self, truth, sign: float):
        self.truth, self.sign = truth, sign

    def sequence_rewards(self, prompts, responses, users):
        import torch

        return self.sign * torch.tensor(self.truth.rewards(prompts, responses, users))


def test_pilot_scores_held_out_prompts_each_user_never_labelled(tmp_path: Path):
    pilot = script("pilot_sim_methods")
    bench = load_benchmark(build(tmp_path, noise=0.5, groups=2, user_spread=0.5, users=20))
    users = [u.user for u in bench.adapt_users()]
    pairs = pilot.held_out_pairs(bench, users, 5, seed=0)
    assert pairs == pilot.held_out_pairs(bench, users, 5, seed=0)  # seeded
    labelled = {(p.user, p.prompt) for p in [*bench.train, *bench.support, *bench.query]}
    assert not any((p.user, p.prompt) in labelled for p in pairs)
    for user in users:
        mine = [p.prompt for p in pairs if p.user == user]
        assert len(mine) == len(set(mine)) == 5
    truth = bench.true_reward
    right = pilot.score(TrueRewardModel(truth, 1.0), truth, pairs)
    wrong = pilot.score(TrueRewardModel(truth, -1.0), truth, pairs)
    assert right["true_rm_accuracy"] == 1.0 and wrong["true_rm_accuracy"] == 0.0
    ties = sum(
        float(np.subtract(*truth.rewards([p.prompt] * 2, [p.chosen, p.rejected], [p.user] * 2)))
        == 0
        for p in pairs
    )
    assert right["pairs"] == len(pairs) - ties and right["users"] == len(users)
