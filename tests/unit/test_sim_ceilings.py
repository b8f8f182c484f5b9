"""persalign data ceilings: what a global, group or per-user reward could reach on a sim
benchmark with exact attributes, checked against naive loops over true_reward.json."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from persalign.data import BUILDERS, load_benchmark
from persalign.data.sim import SimOptions
from persalign.errors import ConfigError
from persalign.report.ceilings import (
    ROWS,
    best_group,
    bradley_terry_fit,
    ceilings_table,
    sim_ceilings,
)
from persalign.report.results import Cell, RunResults

from .sim_source import write_source
from .test_cli import run
from .test_sim_builder import naive_reward


def build(tmp_path: Path, **options) -> Path:
    src = write_source(tmp_path / "src")
    out = tmp_path / "sim"
    defaults = {"source": str(src), "users": 20, "groups": 3, "items_per_user": 6, "seed": 1}
    BUILDERS.get("sim")(SimOptions(**{**defaults, **options}), out)
    return out


def naive_accuracy(folder: Path, weights_of) -> float:
    """Per-user share of query pairs ordered as r_u does by sum_j w_j phi_j, then the mean."""
    truth = json.loads((folder / "true_reward.json").read_text())
    per_user: dict[str, list[float]] = {}
    for line in (folder / "query.jsonl").read_text().splitlines():
        q = json.loads(line)
        user = q["id"].split("/")[0]
        true = naive_reward(truth, q["prompt"], q["chosen"], user) - naive_reward(
            truth, q["prompt"], q["rejected"], user
        )
        if true == 0:
            continue
        as_if = {"users": {user: {"weights": list(weights_of(truth, user))}}}
        guess_truth = {**truth, **as_if}
        guess = naive_reward(guess_truth, q["prompt"], q["chosen"], user) - naive_reward(
            guess_truth, q["prompt"], q["rejected"], user
        )
        per_user.setdefault(user, []).append(float(guess != 0 and (guess > 0) == (true > 0)))
    return sum(sum(h) / len(h) for h in per_user.values()) / len(per_user)


def test_group_and_global_rows_equal_naive_loops_over_the_json(tmp_path: Path):
    out = build(tmp_path, noise=1.0)
    got = sim_ceilings(load_benchmark(out), n_boot=200)
    assert set(got["rows"]) == set(ROWS) and got["users"] == 4 and got["groups"] == 3
    own_centre = naive_accuracy(out, lambda t, u: t["group_weights"][t["users"][u]["group"]])
    assert got["rows"]["group_known"]["mean"] == pytest.approx(own_centre)
    train_users = {json.loads(x)["id"].split("/")[0]
                   for x in (out / "train.jsonl").read_text().splitlines()}  # fmt: skip

    def mean_train(t: dict, u: str) -> list[float]:
        return list(np.mean([t["users"][v]["weights"] for v in sorted(train_users)], axis=0))

    assert got["rows"]["global_mean"]["mean"] == pytest.approx(naive_accuracy(out, mean_train))
    # the sampled label agrees with r_u on a pair exactly when r_u ranks chosen first
    truth = json.loads((out / "true_reward.json").read_text())
    agree: dict[str, list[bool]] = {}
    for line in (out / "query.jsonl").read_text().splitlines():
        q = json.loads(line)
        user = q["id"].split("/")[0]
        chosen, rejected = (naive_reward(truth, q["prompt"], q[k], user)
                            for k in ("chosen", "rejected"))  # fmt: skip
        agree.setdefault(user, []).append(chosen > rejected)
    labels = sum(sum(a) / len(a) for a in agree.values()) / len(agree)
    assert got["rows"]["sampled_labels"]["mean"] == pytest.approx(labels) and labels < 1.0
    for row in got["rows"].values():
        lo, hi = row["ci95"]
        assert 0.0 <= lo <= row["mean"] <= hi <= 1.0


def test_one_group_without_noise_or_spread_is_learnable_by_every_family(tmp_path: Path):
    out = build(tmp_path, noise=0.0, groups=1, user_spread=0.0)
    rows = sim_ceilings(load_benchmark(out), n_boot=0)["rows"]
    for name in ("sampled_labels", "global_mean", "group_known", "group_from_support"):
        assert rows[name]["mean"] == 1.0, name  # every user's reward is the one centre
    assert rows[name]["ci95"] is None  # n_boot 0: no interval


def test_bradley_terry_fit_is_the_map_estimate():
    rng = np.random.default_rng(0)
    diffs = rng.normal(size=(40, 3))
    temperature, precision = 0.7, 2.0
    w = bradley_terry_fit(diffs, temperature, precision)
    # naive gradient of the negative log posterior, pair by pair: zero at the MAP estimate
    grad = [precision * w[j] for j in range(3)]
    for row in diffs:
        z = sum(row[j] * w[j] for j in range(3)) / temperature
        for j in range(3):
            grad[j] -= (1.0 - 1.0 / (1.0 + math.exp(-z))) * row[j] / temperature
    assert max(abs(g) for g in grad) < 1e-8
    assert not np.allclose(w, 0.0)


def test_best_group_maximises_the_support_likelihood():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 5))
    diffs = rng.normal(size=(6, 5))

    def loglik(c: np.ndarray) -> float:
        return sum(-math.log1p(math.exp(-float(d @ c) / 1.5)) for d in diffs)

    assert best_group(diffs, centres, 1.5) == max(range(4), key=lambda k: loglik(centres[k]))


def test_refuses_a_benchmark_without_a_true_reward(tmp_path: Path, capsys):
    src = write_source(tmp_path / "src")
    with pytest.raises(ConfigError, match="no true reward"):
        sim_ceilings(load_benchmark(src))
    code, _, err = run(["data", "ceilings", str(src)], capsys)
    assert code != 0 and "no true reward" in err


def test_cli_prints_the_rows_as_json_and_as_a_table(tmp_path: Path, capsys):
    out = build(tmp_path, noise=1.0)
    code, text, err = run(["data", "ceilings", str(out), "--json"], capsys)
    assert code == 0, err
    printed = json.loads(text)
    assert printed["rows"] == json.loads(json.dumps(sim_ceilings(load_benchmark(out))["rows"]))
    code, text, err = run(["data", "ceilings", str(out)], capsys)
    assert code == 0, err
    assert "group_from_support" in text and "support pairs" in text


def sim_results(run_dir: Path, bench_path: Path | None) -> RunResults:
    """Cells of two reward methods (two seeds of one) and the oracle, with true RM accuracy."""
    accuracies = [("global-rm", 0, 0.40), ("global-rm", 1, 0.50), ("lore", 0, 0.70),
                  ("oracle", 0, 1.00)]  # fmt: skip
    values = [{"true_rm_accuracy": acc, "true_reward": 0.0} for _, _, acc in accuracies]
    cells = [
        Cell(f"p__{m}__s{seed}", "sim", "p", "135M", 135.0, seed, "method", m, None, v, {}, None)
        for (m, seed, _), v in zip(accuracies, values, strict=True)
    ]
    config = {"benchmarks": {"sim": {"path": str(bench_path)}}} if bench_path else {}
    return RunResults(run_dir, {"config": config}, cells)


def test_the_report_table_shows_every_ceiling_and_the_runs_learned_range(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    out = build(tmp_path, noise=1.0)
    table = ceilings_table(sim_results(tmp_path, out), "sim", n_boot=200)
    assert table is not None and table.key == "reward_ceilings"
    expected = sim_ceilings(load_benchmark(out), n_boot=200)["rows"]
    shown = {row[0]: row for row in table.rows}
    for name, row in expected.items():
        assert shown[name][2] == f"{100 * row['mean']:.1f}"
    # per method the mean over seeds (global-rm 45%), the oracle not a method
    assert shown["this run"][1].startswith("the learned rewards of 2 methods")
    assert shown["this run"][2] == "45.0 to 70.0"
    assert ceilings_table(sim_results(tmp_path, None), "sim") is None
    with caplog.at_level("WARNING"):
        assert ceilings_table(sim_results(tmp_path, tmp_path / "gone"), "sim") is None
    assert "no ceilings table" in caplog.text and "gone" in caplog.text
    cells = [replace(c, values={}) for c in sim_results(tmp_path, out).cells]
    plain = RunResults(tmp_path, {}, cells)
    assert ceilings_table(plain, "sim") is None  # not a sim run: no table, no warning
