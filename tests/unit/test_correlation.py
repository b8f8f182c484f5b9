"""Correlations across methods: scipy's numbers, NaN with a note, a seeded bootstrap over users."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from persalign.metrics.correlation import (
    batched_statistics,
    correlations,
    correlations_over_users,
)

# Table 2 (TL;DR): RM accuracy and 135M policy accuracy of the methods with both
RM_ACC = [82.56, 76.76, 77.83, 65.27, 68.67, 53.67, 73.67, 38.66]
POLICY_ACC = [81.09, 49.96, 52.91, 46.68, 59.78, 53.06, 58.80, 53.05]


def test_correlations_equal_scipy():
    got = correlations(RM_ACC, POLICY_ACC)
    for name, fn in (
        ("pearson", stats.pearsonr),
        ("spearman", stats.spearmanr),
        ("kendall", stats.kendalltau),
    ):
        want = fn(RM_ACC, POLICY_ACC)
        assert got[name]["r"] == pytest.approx(want[0], abs=1e-12), name
        assert got[name]["p"] == pytest.approx(want[1], abs=1e-12), name
    assert got["n"] == 8 and got["notes"] == []
    assert len({got[name]["r"] for name in ("pearson", "spearman", "kendall")}) == 3


def test_degenerate_inputs_give_nan_with_a_note():
    few = correlations([1.0, 2.0], [3.0, 4.0])
    assert math.isnan(few["pearson"]["r"]) and math.isnan(few["kendall"]["p"])
    assert "at least 3" in few["notes"][0]
    flat = correlations([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert math.isnan(flat["spearman"]["r"]) and "x is constant" in flat["notes"][0]
    # a method without the metric (NaN) is dropped and counted, the rest still correlate
    partial = correlations([1.0, 2.0, float("nan"), 4.0, 3.0], [2.0, 4.0, 5.0, 9.0, 5.0])
    assert partial["n"] == 4 and partial["dropped"] == 1
    assert partial["pearson"]["r"] == pytest.approx(stats.pearsonr([1, 2, 4, 3], [2, 4, 9, 5])[0])
    with pytest.raises(ValueError, match="x has 2 values but y has 3"):
        correlations([1.0, 2.0], [1.0, 2.0, 3.0])


def test_batched_statistics_equal_scipy_row_by_row():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 7))
    y = x + rng.normal(size=(20, 7))
    x[3, 2] = x[3, 5]  # a tie in x
    y[4] = np.round(y[4])  # ties in y
    x[5] = 1.0  # constant: undefined
    got = batched_statistics(x, y)
    for row in range(20):
        for name, fn in (
            ("pearson", stats.pearsonr),
            ("spearman", stats.spearmanr),
            ("kendall", stats.kendalltau),
        ):
            if row == 5:
                assert math.isnan(got[name][row])
            else:
                assert got[name][row] == pytest.approx(fn(x[row], y[row])[0], abs=1e-12)


def per_user_table(seed: int, methods: int = 6, users: int = 20) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=methods)
    a, b = {}, {}
    for m in range(methods):
        noise_a = rng.normal(scale=0.8, size=users)
        noise_b = rng.normal(scale=0.8, size=users)
        a[f"m{m}"] = {f"u{u}": float(quality[m] + noise_a[u]) for u in range(users)}
        b[f"m{m}"] = {f"u{u}": float(0.5 * quality[m] + noise_b[u]) for u in range(users)}
    return a, b


def test_correlations_over_users_point_estimate_and_bootstrap():
    a, b = per_user_table(seed=3)
    result = correlations_over_users(a, b, n_boot=300, seed=7)
    methods = sorted(a)
    mean_a = [float(np.mean(list(a[m].values()))) for m in methods]
    mean_b = [float(np.mean(list(b[m].values()))) for m in methods]
    assert result["kendall"]["r"] == pytest.approx(stats.kendalltau(mean_a, mean_b)[0])
    assert result["pearson"]["r"] == pytest.approx(stats.pearsonr(mean_a, mean_b)[0])
    assert result["means"]["a"] == pytest.approx(dict(zip(methods, mean_a, strict=True)))
    for name in ("pearson", "spearman", "kendall"):
        lo, hi = result[name]["ci"]
        assert lo <= result[name]["r"] <= hi and lo < hi, name
    # reproducible with the seed, different with another seed, narrower at a lower confidence
    again = correlations_over_users(a, b, n_boot=300, seed=7)
    other = correlations_over_users(a, b, n_boot=300, seed=8)
    narrow = correlations_over_users(a, b, n_boot=300, seed=7, confidence=0.5)
    assert again["pearson"]["ci"] == result["pearson"]["ci"]
    assert other["pearson"]["ci"] != result["pearson"]["ci"]
    lo, hi = result["pearson"]["ci"]
    assert lo < narrow["pearson"]["ci"][0] < narrow["pearson"]["ci"][1] < hi
    assert (result["users"], result["n"], result["n_boot"], result["seed"]) == (20, 6, 300, 7)


def test_bootstrap_resamples_users_and_recomputes_method_means():
    """Two users: the resamples are {u0, u0}, {u1, u1} (1/4 each) and {u0, u1} (1/2), whose
    method means correlate with Pearson r = 1, 5/sqrt(28) and 2.25/sqrt(6.75)."""
    a = {"m0": {"u0": 1.0, "u1": 1.0}, "m1": {"u0": 2.0, "u1": 3.0}, "m2": {"u0": 3.0, "u1": 2.0}}
    b = {"m0": {"u0": 0.0, "u1": 0.0}, "m1": {"u0": 1.0, "u1": 5.0}, "m2": {"u0": 2.0, "u1": 1.0}}
    result = correlations_over_users(a, b, n_boot=400, seed=0)
    assert result["pearson"]["r"] == pytest.approx(2.25 / math.sqrt(6.75))
    assert result["pearson"]["ci"] == pytest.approx([2.25 / math.sqrt(6.75), 1.0])
    narrow = correlations_over_users(a, b, n_boot=400, seed=0, confidence=0.2)
    assert narrow["pearson"]["ci"] == pytest.approx([2.25 / math.sqrt(6.75), 5 / math.sqrt(28)])
    # undefined point estimate (a's method means all equal): NaN, a note, no bootstrap
    flat = {m: {"u0": 1.0, "u1": 3.0} for m in ("m0", "m1", "m2")}
    nan = correlations_over_users(flat, b, n_boot=50)
    assert math.isnan(nan["pearson"]["r"]) and math.isnan(nan["pearson"]["ci"][0])
    assert any("constant" in note for note in nan["notes"])


def test_missing_methods_and_users_are_left_out_with_notes():
    a, b = per_user_table(seed=1, methods=4, users=5)
    a["only-a"] = {"u0": 1.0}
    del b["m3"]["u4"]
    result = correlations_over_users(a, b, n_boot=50, seed=0)
    assert result["methods"] == ["m0", "m1", "m2", "m3"] and result["users"] == 4
    assert any("only-a" in n for n in result["notes"])
    assert any("1 user(s) missing" in n for n in result["notes"])
    want = [float(np.mean([a[m][f"u{u}"] for u in range(4)])) for m in ("m0", "m1", "m2", "m3")]
    assert list(result["means"]["a"].values()) == pytest.approx(want)
    tiny = correlations_over_users({"m": {"u": 1.0}}, {"m": {"u": 2.0}}, n_boot=10)
    assert math.isnan(tiny["kendall"]["r"]) and math.isnan(tiny["kendall"]["ci"][0])
