"""The true-reward metrics, the oracle reward method, the oracle cell in a run's plan and the
sim findings' statistics, each against a naive computation."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

import persalign.rewards as rewards
from persalign.data import load_benchmark
from persalign.errors import ConfigError
from persalign.metrics.captured import captured_share
from persalign.metrics.true_gain import true_gain
from persalign.metrics.true_reward import generation_rewards
from persalign.metrics.true_rm_accuracy import true_rm_accuracy
from persalign.metrics.true_win_rate import true_win_rate
from persalign.report.sim_findings import predicts_verdict, share_of_oracle
from persalign.runs.config import load_config
from persalign.runs.specs import CellJobSpec

from .sim_source import write_source
from .test_experiment_config import plan_of, raw_config, write
from .test_sim_builder import build


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sim")
    out = build(write_source(root / "src"), root / "sim", users=10, groups=2, adapt_users=4)
    return load_benchmark(out)


def gens(bench, pick: str) -> list[dict]:
    return [{"user": q.user, "id": q.id, "text": getattr(q, pick)} for q in bench.query]


def r(bench, q, text: str) -> float:
    return bench.true_reward.rewards([q.prompt], [text], [q.user])[0]


def test_true_gain_and_win_rate_match_a_naive_per_user_mean(sim):
    gain = true_gain(sim, gens(sim, "chosen"), gens(sim, "rejected"))
    by_user: dict[str, list[float]] = {}
    for q in sim.query:
        by_user.setdefault(q.user, []).append(r(sim, q, q.chosen) - r(sim, q, q.rejected))
    expected = statistics.fmean(statistics.fmean(v) for v in by_user.values())
    assert gain["mean"] == pytest.approx(expected) and gain["unpaired"] == 0
    wins = true_win_rate(sim, gens(sim, "chosen"), gens(sim, "rejected"))
    naive = sum(r(sim, q, q.chosen) > r(sim, q, q.rejected) for q in sim.query) / len(sim.query)
    assert wins["rate"] == pytest.approx(naive)
    same = true_win_rate(sim, gens(sim, "chosen"), gens(sim, "chosen"))
    assert same["rate"] == 0.0 and same["ties"] == len(sim.query)  # ties are not wins
    rewards_ = generation_rewards(sim, gens(sim, "chosen")[:-1])
    assert true_gain(sim, gens(sim, "chosen")[:-1], gens(sim, "rejected"))["unpaired"] == 1
    assert len(rewards_) == len(sim.query) - 1


class FakeRM:
    """A learned reward that is the true one times ``sign`` (0: constant)."""

    has_rm_accuracy = True

    def __init__(self, bench, sign: float):
        self.bench, self.sign = bench, sign

    def sequence_rewards(self, prompts, responses, users):
        values = self.bench.true_reward.rewards(prompts, responses, users)
        return torch.tensor([self.sign * v for v in values])


def test_true_rm_accuracy_is_against_the_noise_free_order_and_finds_collapsed_users(sim):
    assert true_rm_accuracy(FakeRM(sim, 1.0), sim)["mean"] == 1.0
    assert true_rm_accuracy(FakeRM(sim, -1.0), sim)["mean"] == 0.0
    flat = true_rm_accuracy(FakeRM(sim, 0.0), sim)
    assert flat["mean"] == 0.0  # a tie of the learned reward is a miss
    users = sorted({q.user for q in sim.query})
    good = true_rm_accuracy(FakeRM(sim, 1.0), sim)["spread"]
    assert good["collapsed"] == [] and set(good["per_user"]) == set(users)
    q = [x for x in sim.query if x.user == users[0]]
    naive = np.std([r(sim, x, y) for x in q for y in (x.chosen, x.rejected)])
    assert good["per_user"][users[0]] == pytest.approx(naive)


def test_captured_is_the_share_of_the_oracle_gain():
    assert captured_share(0.1, 0.4)["share"] == pytest.approx(0.25)
    assert captured_share(0.1, 0.0)["share"] is None
    assert captured_share(None, 0.4)["share"] is None


@pytest.fixture(scope="module")
def oracle(sim, tiny_lm: str):
    rm = rewards.create("oracle", backbone=tiny_lm, use_chat_template=False)
    rm.use_benchmark(sim)
    rm.fit(sim.train)
    for user in sim.adapt_users():
        rm.adapt(user.user, user.support)
    return rm


def test_the_oracle_scores_with_r_u_itself_on_prefixes_and_under_args(sim, oracle):
    q = list(sim.query)
    p, y, u = [x.prompt for x in q], [x.chosen for x in q], [x.user for x in q]
    assert oracle.sequence_rewards(p, y, u).tolist() == pytest.approx(
        sim.true_reward.rewards(p, y, u), abs=1e-5
    )
    prefix = oracle.prefix_rewards(p[:2], y[:2], u[:2])
    decode = oracle.formatter.tokenizer.decode
    for i in range(2):
        ids = oracle.formatter.response_ids(y[i])
        naive = [
            r(sim, q[i], decode(ids[: t + 1], skip_special_tokens=True)) for t in range(len(ids))
        ]
        assert prefix.rewards[i, : len(ids)].tolist() == pytest.approx(naive, abs=1e-5)
    state = oracle.start([oracle.formatter.prompt_ids(x) for x in p[:2]], u[:2])
    assert state.prompts == p[:2]  # the raw prompt, recovered from its ids
    cands = torch.tensor([oracle.formatter.response_ids("ab")] * 2)  # [2, 2]
    step = oracle.step_rewards(state, cands)
    for i in range(2):
        for j, tok in enumerate(cands[i].tolist()):
            assert step[i, j].item() == pytest.approx(r(sim, q[i], decode([tok])), abs=1e-5)
    oracle.commit(state, torch.tensor([1, 0]))
    assert state.tokens == [[cands[0, 1].item()], [cands[1, 0].item()]]


def test_the_oracle_is_only_for_sim_benchmarks_and_round_trips(sim, oracle, tmp_path, tiny_lm):
    plain = load_benchmark(write_source(tmp_path / "plain"))
    fresh = rewards.create("oracle", backbone=tiny_lm)
    with pytest.raises(ConfigError, match=r"true_reward\.json"):
        fresh.use_benchmark(plain)
    with pytest.raises(ConfigError, match="sim benchmark"):
        fresh.sequence_rewards(["x"], ["y"], ["sim-00"])
    with pytest.raises(ConfigError, match="not a simulated user"):
        oracle.adapt("u0", ())
    oracle.save(str(tmp_path / "m"))
    loaded = rewards.load(tmp_path / "m")
    loaded.use_benchmark(sim)
    assert sorted(loaded.user_ids) == sorted(oracle.user_ids)
    q = sim.query[0]
    assert loaded.sequence_rewards([q.prompt], [q.chosen], [q.user]).item() == pytest.approx(
        r(sim, q, q.chosen), abs=1e-5
    )


def test_a_run_with_the_oracle_evaluates_it_first_and_others_read_it(tmp_path: Path):
    raw = raw_config(methods={"global-rm": None, "oracle": None}, seeds=[0])
    jobs = plan_of(load_config(write(tmp_path, raw)))
    cells = [j for j in jobs if j.kind == "cell" and j.spec.kind == "method"]
    assert [c.spec.method for c in cells] == ["oracle", "global-rm"]
    assert cells[1].spec.oracle.id == cells[0].id and cells[0].id in cells[1].needs
    assert cells[0].spec.oracle is None
    plain = plan_of(load_config(write(tmp_path, raw_config(seeds=[0]))))
    spec = next(j.spec for j in plain if isinstance(j.spec, CellJobSpec))
    assert "oracle" not in spec.to_json()  # runs without an oracle keep their spec hashes


def test_predicts_verdict_and_share_of_the_oracle():
    assert predicts_verdict(0.7, (0.2, 0.9), 48, 30)[0] == "holds"
    assert predicts_verdict(0.7, (-0.1, 0.9), 48, 30)[0] == "inconclusive"
    assert predicts_verdict(0.2, (0.0, 0.5), 48, 30)[0] == "does not hold"
    assert predicts_verdict(0.9, (0.8, 1.0), 3, 30)[0] == "inconclusive"  # too few users
    row = {f"u{i}": 1.0 + i for i in range(12)}
    zero = {f"u{i}": 0.0 + i for i in range(12)}
    oracle = {f"u{i}": 4.0 + i for i in range(12)}
    share, ci, n = share_of_oracle(row, zero, oracle, n_boot=200)
    assert share == pytest.approx(0.25) and ci == pytest.approx((0.25, 0.25)) and n == 12
    assert share_of_oracle(row, zero, zero, n_boot=200)[0] is None
