"""The meta-evaluation ("Which metric predicts generation quality?") against a naive scipy
computation over (method, seed) units, its bootstrap over users, best-first order and skipped
metrics; the quality-vs-cost table (every cell) and figure (embedded in report.html)."""

from __future__ import annotations

import base64
import csv
import io
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from persalign.metrics.schema import report_columns
from persalign.report.meta_evaluation import SELECTION
from persalign.report.writer import write_report

from .test_findings import BENCH, cell_data, write_run

METHODS = ("a-rm", "b-rm", "c-rm", "d-rm", "e-rm")
SEEDS = (0, 1)
USERS = tuple(f"u{i:02d}" for i in range(12))
TARGETS = {"rouge1": "ROUGE-1", "rougeL": "ROUGE-L", "bertscore_f1": "BERTScore-F1"}
LABELS = {
    "rm_accuracy": "RM Acc", "policy_accuracy": "Policy Acc", "win_rate": "Win Rate",
    "steering_accuracy": "Steering Acc", "gt_mrr": "GT MRR", "gt_top1": "GT Top-1",
    "prefix_accuracy": "Prefix Acc",
}  # fmt: skip
# how strongly each selection metric follows the unit's quality (noise per user and unit)
FOLLOWS = {
    "steering_accuracy": (1.0, 0.02),
    "policy_accuracy": (1.0, 0.15),
    "gt_mrr": (0.5, 0.1),
    "gt_top1": (0.3, 0.2),
    "prefix_accuracy": (0.0, 0.1),
    "rm_accuracy": (0.2, 0.3),
    "win_rate": (-1.0, 0.05),
}
N_BOOT = 200
COST = {"decode_seconds_per_token": 0.0123, "tokens_generated": 96, "peak_rss_mib": 2048.0}


def values(with_plugins: bool = True) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """(method, seed) -> metric -> user -> value, seeded."""
    rng = np.random.default_rng(7)
    out = {}
    for i, method in enumerate(METHODS):
        for seed in SEEDS:
            quality = 0.2 + 0.03 * i + 0.01 * seed
            user_q = quality + rng.normal(0, 0.02, len(USERS))
            unit: dict[str, dict[str, float]] = {}
            for key, (slope, noise) in FOLLOWS.items():
                if not with_plugins and key not in ("rm_accuracy", "policy_accuracy", "win_rate"):
                    continue
                v = 0.5 + slope * (user_q - 0.26) + rng.normal(0, noise, len(USERS)) * 0.1
                unit[key] = dict(zip(USERS, v.tolist(), strict=True))
            for j, target in enumerate(TARGETS):
                v = user_q + 0.05 * j + rng.normal(0, 0.01, len(USERS))
                unit[target] = dict(zip(USERS, v.tolist(), strict=True))
            out[(method, seed)] = unit
    return out


def make(tmp_path: Path, with_plugins: bool = True) -> tuple[dict[str, Path], dict]:
    data = values(with_plugins)
    cells = [
        cell_data(seed, "method", m, cost=COST | {"train_seconds": 30.0 + seed}, **data[(m, seed)])
        for m, seed in data
    ]
    rouge = {u: 0.3 for u in USERS}
    for seed in SEEDS:
        cells.append(cell_data(seed, "baseline", "zero-shot", cost=COST, rouge1=rouge))
        cells.append(cell_data(seed, "baseline", "icl-rag", 2, cost=COST, rouge1=rouge))
    return write_report(write_run(tmp_path, cells), n_boot=N_BOOT), data


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict]:
    return make(tmp_path_factory.mktemp("meta"))


def rows(files: dict[str, Path]) -> list[dict[str, str]]:
    text = files[f"{BENCH}/meta_evaluation.csv"].read_text("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def registered() -> list[str]:
    keys = {c.key for c in report_columns()}
    return [k for k in SELECTION if k in keys]


def unit_means(data: dict, key: str) -> list[float]:
    return [statistics.fmean(data[unit][key].values()) for unit in sorted(data)]


def split(cell: str) -> tuple[float, float, float]:
    r, lo, hi = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cell).groups()
    return float(r), float(lo), float(hi)


def test_every_value_matches_scipy_over_method_seed_units(report):
    files, data = report
    table = rows(files)
    assert len(table) == len(registered()) * len(TARGETS)
    by_label = {LABELS[k]: k for k in registered()}
    by_target = {v: k for k, v in TARGETS.items()}
    for row in table:
        x = unit_means(data, by_label[row["Selection metric"]])
        y = unit_means(data, by_target[row["Target"]])
        assert (row["Units"], row["Users"]) == ("10", "12")
        for column, fn in (("Kendall τ", stats.kendalltau), ("Spearman ρ", stats.spearmanr),
                           ("Pearson r", stats.pearsonr)):  # fmt: skip
            r = split(row[f"{column} [95% CI]"])[0]
            assert r == pytest.approx(fn(x, y).statistic, abs=5e-4), (row, column)


def resampled_mean(weights: np.ndarray, per_user: dict[str, float]) -> float:
    """The mean over a resample of the users (``weights``: how often each user was drawn)."""
    return sum(w * per_user[user] for w, user in zip(weights, USERS, strict=True)) / len(USERS)


def test_the_ci_is_a_bootstrap_over_users(report):
    """A naive bootstrap (the same resampled users, scipy per resample) gives the same CI."""
    files, data = report
    row = next(r for r in rows(files) if (r["Selection metric"], r["Target"]) ==
               ("Policy Acc", "ROUGE-1"))  # fmt: skip
    n = len(USERS)
    counts = np.random.default_rng(0).multinomial(n, np.full(n, 1 / n), size=N_BOOT)
    units = sorted(data)
    taus = []
    for weights in counts:
        x = [resampled_mean(weights, data[u]["policy_accuracy"]) for u in units]
        y = [resampled_mean(weights, data[u]["rouge1"]) for u in units]
        taus.append(stats.kendalltau(x, y).statistic)
    lo, hi = np.percentile(taus, [2.5, 97.5])
    _, got_lo, got_hi = split(row["Kendall τ [95% CI]"])
    assert got_lo < got_hi
    assert (got_lo, got_hi) == pytest.approx((lo, hi), abs=5e-4)


def test_best_selection_metric_first(report):
    files, data = report
    table = rows(files)
    order = list(dict.fromkeys(r["Selection metric"] for r in table))
    mean_tau = {
        LABELS[k]: statistics.fmean(
            stats.kendalltau(unit_means(data, k), unit_means(data, t)).statistic for t in TARGETS
        )
        for k in registered()
    }
    assert order == sorted(mean_tau, key=lambda label: -mean_tau[label])
    assert order[-1] == "Win Rate"  # follows quality negatively
    if "steering_accuracy" in registered():
        assert order[0] == "Steering Acc"
    md = files[f"{BENCH}/meta_evaluation.md"].read_text("utf-8")
    assert f"Best at 135M: {order[0]} (mean Kendall τ over the targets" in md


def test_metrics_a_run_lacks_are_skipped_and_named(tmp_path):
    files, _ = make(tmp_path, with_plugins=False)
    assert [r["Selection metric"] for r in rows(files)][::3] == sorted(
        ["RM Acc", "Policy Acc", "Win Rate"], key=["Policy Acc", "RM Acc", "Win Rate"].index
    )
    lacking = ", ".join(k for k in SELECTION if k not in ("rm_accuracy", "policy_accuracy",
                                                           "win_rate"))  # fmt: skip
    md = files[f"{BENCH}/meta_evaluation.md"].read_text("utf-8")
    assert f"Not in this run (plugin not registered or no value): {lacking}." in md


def test_cost_table_has_every_cell_and_the_figure_is_embedded(report):
    files, _ = report
    header, *body = csv.reader(io.StringIO(files[f"{BENCH}/cost.csv"].read_text("utf-8")))
    assert header == [
        "Policy", "Method", "ROUGE-1 (%)", "s / token", "Policy fwd / token", "Reward fwd / token",
        "Tokens", "Train s", "Adapt s / user", "Peak RSS (MiB)", "Peak GPU (MiB)", "Start share",
    ]  # fmt: skip
    table: dict[str, list[Any]] = {r[1]: r for r in body}
    assert list(table) == [*METHODS, "zero-shot", "icl-rag-2"]  # every row of the run
    for row in table.values():
        assert row[3:5] == ["0.0123 ± 0", "--"] and row[6] == "96 ± 0" and row[9] == "2048 ± 0"
    assert table["a-rm"][7] == "30.5 ± 0.5" and table["zero-shot"][7] == "--"  # no training
    assert table["zero-shot"][2] == "30.00 ± 0.00"
    png = files[f"{BENCH}/fig4_quality_cost.png"].read_bytes()
    page = files["report.html"].read_text("utf-8")
    match = re.search(r'<figure id="fig4_quality_cost"><img alt="[^"]*" src="data:image/png;'
                      r'base64,([^"]+)">', page)  # fmt: skip
    assert match and base64.b64decode(match.group(1)) == png
    assert f"![{BENCH}: ROUGE-1 against decoding seconds" in files["report.md"].read_text("utf-8")
    assert "](pref-acl/fig4_quality_cost.png)" in files["report.md"].read_text("utf-8")


def test_one_common_set_of_units_and_users(tmp_path):
    """A unit without win rate (P-DPO-like) and a user missing from one metric leave every
    correlation of the scale, not just some, and the notes count them."""
    data = values(with_plugins=False)
    data[("e-rm", 1)].pop("win_rate")
    data[("a-rm", 0)]["rm_accuracy"].pop(USERS[0])
    cells = [cell_data(seed, "method", m, **data[(m, seed)]) for m, seed in data]
    files = write_report(write_run(tmp_path, cells), n_boot=N_BOOT)
    table = rows(files)
    assert {(r["Units"], r["Users"]) for r in table} == {("9", "11")}
    kept = {u: v for u, v in data.items() if u != ("e-rm", 1)}
    x = [
        statistics.fmean(v["policy_accuracy"][u] for u in USERS[1:])
        for _, v in sorted(kept.items())
    ]
    y = [statistics.fmean(v["rouge1"][u] for u in USERS[1:]) for _, v in sorted(kept.items())]
    row = next(
        r for r in table if (r["Selection metric"], r["Target"]) == ("Policy Acc", "ROUGE-1")
    )
    assert split(row["Kendall τ [95% CI]"])[0] == pytest.approx(stats.kendalltau(x, y)[0], abs=5e-4)
    md = files[f"{BENCH}/meta_evaluation.md"].read_text("utf-8")
    assert "1 unit(s) without every metric, left out: e-rm s1 (no win_rate)" in md
    assert "1 user(s) missing for some unit or metric, left out" in md


def test_the_best_line_carries_the_ci_of_its_mean_tau(report):
    files, data = report
    md = files[f"{BENCH}/meta_evaluation.md"].read_text("utf-8")
    best = re.search(r"Best at 135M: (.+?) \(mean Kendall τ over the targets (\S+), 95% CI "
                     r"\[(\S+), (\S+)\]; 10 units of 5 methods, 12 users\)", md)  # fmt: skip
    assert best, md
    key = {v: k for k, v in LABELS.items()}[best.group(1)]
    n = len(USERS)
    counts = np.random.default_rng(0).multinomial(n, np.full(n, 1 / n), size=N_BOOT)
    units = sorted(data)
    means = []
    for weights in counts:
        x = [resampled_mean(weights, data[u][key]) for u in units]
        taus = [stats.kendalltau(x, [resampled_mean(weights, data[u][t]) for u in units])[0]
                for t in TARGETS]  # fmt: skip
        means.append(np.nanmean(taus))
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert (float(best.group(3)), float(best.group(4))) == pytest.approx((lo, hi), abs=5e-4)


def test_below_the_minimum_no_best_metric_and_cis_marked(tmp_path):
    """The demo's case: 3 users. The CIs are marked not trusted and no metric is named best."""
    data = values(with_plugins=False)
    few = {k: {m: {u: v for u, v in per.items() if u in USERS[:3]} for m, per in unit.items()}
           for k, unit in data.items()}  # fmt: skip
    cells = [cell_data(seed, "method", m, **few[(m, seed)]) for m, seed in few]
    files = write_report(write_run(tmp_path, cells), n_boot=N_BOOT)
    md = files[f"{BENCH}/meta_evaluation.md"].read_text("utf-8")
    assert "Best at" not in md
    assert "No best metric named at 135M: only 3 users (a verdict needs at least 10)" in md
    assert all(r["Kendall τ [95% CI]"].endswith("]‡") for r in rows(files))
