"""How many users would decide: the ANOVA test that methods differ (against naive sums), the
1/sqrt(n) projection, the report's study_sizing table on a run with known per-user values, and
the findings' "Why" for a correlation whose methods do not differ."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from scipy import stats

from persalign.metrics.method_differences import method_differences
from persalign.report.findings import Finding
from persalign.report.sizing import Sizing, users_for_width
from persalign.report.writer import write_report

from .test_findings import BENCH, METHODS, USERS, around, cell_data, write_run


def naive_anova(values: list[list[float]]) -> tuple[float, float]:
    """Two-way ANOVA without replication, term by term: (F for methods, its p-value)."""
    m, n = len(values), len(values[0])
    grand = sum(sum(row) for row in values) / (m * n)
    row_mean = [sum(row) / n for row in values]
    col_mean = [sum(values[i][j] for i in range(m)) / m for j in range(n)]
    ss_methods = sum(n * (row_mean[i] - grand) ** 2 for i in range(m))
    ss_residual = sum(
        (values[i][j] - row_mean[i] - col_mean[j] + grand) ** 2 for i in range(m) for j in range(n)
    )
    f = (ss_methods / (m - 1)) / (ss_residual / ((m - 1) * (n - 1)))
    return f, float(stats.f.sf(f, m - 1, (m - 1) * (n - 1)))


def test_method_differences_equal_the_anova_by_hand_and_ignore_user_effects():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(6, 15)) + np.linspace(0, 0.8, 6)[:, None]  # [methods, users]
    test = method_differences(values)
    f, p = naive_anova(values.tolist())
    assert test.f == pytest.approx(f, rel=1e-12) and test.p == pytest.approx(p, rel=1e-9)
    assert test.kept == pytest.approx(max(0.0, 1 - 1 / f))
    assert (test.methods, test.users) == (6, 15)
    # a user's offset moves every method alike (as resampling users does): F is unchanged
    shifted = method_differences(values + rng.normal(scale=5.0, size=(1, 15)))
    assert shifted.f == pytest.approx(test.f, rel=1e-9)


def test_equal_means_keep_nothing_and_clear_gaps_keep_almost_everything():
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(5, 20))
    tied = noise - noise.mean(axis=1, keepdims=True)  # every method's mean exactly 0
    flat = method_differences(tied)
    assert flat.f == pytest.approx(0.0, abs=1e-12) and flat.kept == 0.0
    assert flat.p == pytest.approx(1.0)
    apart = method_differences(noise * 0.01 + np.arange(5)[:, None])
    assert apart.p < 1e-12 and apart.kept > 0.99
    exact = method_differences(np.zeros((3, 4)) + np.arange(3)[:, None])  # no residual at all
    assert math.isinf(exact.f) and exact.p == 0.0 and exact.kept == 1.0
    with pytest.raises(ValueError, match="at least 2 methods and 2 users"):
        method_differences(np.zeros((1, 5)))


def test_users_for_width_is_the_inverse_square_root_rule():
    assert users_for_width(10, 2.0, 1.0) == 40  # half the width: 4x the users
    assert users_for_width(48, 1.298, 0.38) == math.ceil(48 * (1.298 / 0.38) ** 2)
    assert users_for_width(12, 0.2, 0.3) == 12  # already within the bar


def _finding(users: int, width: float, bar: float = 0.3, differences=()) -> Finding:
    return Finding("135M", "claim", "paper", "Kendall τ", 0.1, (0.0, width), "n", users,
                   "inconclusive", "why", bar=bar, differences=differences)  # fmt: skip


def test_sizing_says_met_none_or_how_many():
    rng = np.random.default_rng(2)
    differs = method_differences(rng.normal(size=(5, 12)) + 3 * np.arange(5)[:, None])
    tied = method_differences(np.zeros((5, 12)) + rng.normal(size=(1, 12)))
    assert Sizing(_finding(12, 0.2, differences=(("A", differs),))).users_text == (
        "met with 12 users"
    )
    none = Sizing(_finding(12, 0.9, differences=(("A", differs), ("B", tied)))).users_text
    assert none.startswith("none projected: on B the methods differ by no more than noise")
    many = Sizing(_finding(12, 0.6, differences=(("A", differs), ("B", differs)))).users_text
    assert many == "about 48 (4.0x, by 1/sqrt(n); more while the methods are close)"
    assert Sizing(_finding(12, 0.6, bar=0.0)).users_text.startswith("no bar")


def test_the_report_table_tests_each_correlation_with_the_runs_values(tmp_path):
    """Six methods: RM accuracy apart, policy accuracy the same mean for every method (F = 0),
    ROUGE-1 and BERTScore apart; the weak claim is then 'none projected' on Policy Acc."""
    cells, values = [], {"rm_accuracy": {}, "policy_accuracy": {}}
    for i, method in enumerate(METHODS):
        values["rm_accuracy"][method] = around(0.50 + 0.05 * i, USERS, 0.2, i)
        values["policy_accuracy"][method] = around(0.55, USERS, 0.2, 50 + i)
        cells.append(
            cell_data(
                0, "method", method,
                rm_accuracy=values["rm_accuracy"][method],
                policy_accuracy=values["policy_accuracy"][method],
                rouge1=around(0.30 + 0.01 * i, USERS, 0.004, 100 + i),
                bertscore_f1=around(0.5 + 0.01 * i, USERS, 0.004, 70 + i),
            )
        )  # fmt: skip
    for data in cells:
        data["seconds"] = 100.0  # six cells: 10 min of cell time in all
    files = write_report(write_run(tmp_path, cells), n_boot=200)
    rows = list(csv.DictReader(io.StringIO(files[f"{BENCH}/study_sizing.csv"].read_text("utf-8"))))
    findings = list(csv.DictReader(io.StringIO(files[f"{BENCH}/findings.csv"].read_text("utf-8"))))
    kendall = [f for f in findings if f["Statistic"] == "Kendall τ"]
    assert [r["Claim"] for r in rows] == [f["Claim"] for f in kendall]
    for row, finding in zip(rows, kendall, strict=True):
        lo, hi = (float(v) for v in finding["95% CI"].strip("[]").split(", "))
        assert float(row["CI width"]) == pytest.approx(hi - lo, abs=2e-3)
        assert row["Bar"] == "0.300"
    weak = rows[0]
    matrix = lambda metric: [[values[metric][m][u] for u in USERS] for m in METHODS]  # noqa: E731
    f_rm, p_rm = naive_anova(matrix("rm_accuracy"))
    f_pacc, p_pacc = naive_anova(matrix("policy_accuracy"))
    assert p_rm < 0.001 and weak["Methods differ on x?"] == f"RM Acc: F {f_rm:.2f}, p < 0.001"
    assert weak["On y?"] == f"Policy Acc: F {f_pacc:.2f}, p {p_pacc:.3f}"
    assert f_pacc < 1e-9 and weak["Users to meet the bar"].startswith(
        "none projected: on Policy Acc the methods differ by no more than noise"
    )
    assert "How many users would decide" in files["report.html"].read_text("utf-8")
    assert weak["Cell time at that size"] == "--"  # no size is projected for a flat metric
    checked = 0
    for row in rows[1:]:  # the cells' 10 min, times the users needed over this run's 12
        users = row["Users to meet the bar"].split(" (")[0].split()[-1].replace(",", "")
        if users.isdigit():
            checked += 1
            want = 600.0 * int(users) / len(USERS)
            label = f"{want / 3600:.1f} h" if want >= 3600 else f"{want / 60:.0f} min"
            assert row["Cell time at that size"].endswith(f"{label} (this run: 10 min)"), row
    assert checked == len(rows) - 1, rows
    # the others are projected by simulating larger studies from these users (metrics.study_size)
    projected = [r["Users to meet the bar"] for r in rows[1:]]
    assert projected and all(
        text.startswith(("met with", "about ", "more than ")) and "simulated" in text
        for text in projected if not text.startswith("met with")
    ), projected  # fmt: skip
    # the finding itself says why more users would not help, instead of "would halve it"
    weak_finding = kendall[0]
    assert weak_finding["Verdict"] == "inconclusive", weak_finding
    assert weak_finding["Why"].endswith(
        "on Policy Acc the methods differ by no more than noise (F <= 1), so more users like "
        "these would not decide it"
    )
    assert "halve" not in weak_finding["Why"]


def test_cell_time_scales_with_the_users_a_size_needs():
    rng = np.random.default_rng(4)
    differs = method_differences(rng.normal(size=(5, 12)) + 3 * np.arange(5)[:, None])
    tied = method_differences(np.zeros((5, 12)) + rng.normal(size=(1, 12)))
    two = (("A", differs), ("B", differs))
    rule = Sizing(_finding(12, 0.6, differences=two), cell_seconds=1800.0)
    assert rule.users_text.startswith("about 48 (4.0x")  # no per-user values: the rule
    assert rule.time_text == "about 2.0 h (this run: 30 min)"  # 48 / 12 x 30 min
    assert Sizing(_finding(12, 0.2, differences=two), cell_seconds=1800.0).time_text == (
        "this run: 30 min"
    )  # met: what it took
    flat = Sizing(_finding(12, 0.9, differences=(("A", differs), ("B", tied))), cell_seconds=60.0)
    assert flat.time_text == "--"
    assert Sizing(_finding(12, 0.6, differences=two)).time_text == "--"  # no cell times


def test_no_sizing_below_the_users_or_methods_a_verdict_needs():
    from persalign.report.sizing import sizings

    rng = np.random.default_rng(3)
    five = method_differences(rng.normal(size=(5, 9)) + np.arange(5)[:, None])
    four = method_differences(rng.normal(size=(4, 12)) + np.arange(4)[:, None])

    def kendall(users, test):
        return Finding("135M", "c", "p", "Kendall τ", 0.1, (0.0, 0.9), "n", users,
                       "inconclusive", "r", differences=(("A", test), ("B", test)),
                       bar=0.3)  # fmt: skip

    assert sizings([kendall(9, five)]) == []  # 9 users: no verdict, nothing to size
    assert sizings([kendall(12, four)]) == []  # 4 methods: no verdict on a correlation
    six = method_differences(rng.normal(size=(6, 12)) + np.arange(6)[:, None])
    assert len(sizings([kendall(12, six)])) == 1
