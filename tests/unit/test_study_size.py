"""Simulated study sizes (metrics.study_size): against a naive loop over drawn users, the 1/sqrt(n)
rule for a mean, and what the report's sizing table says with them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from persalign.metrics.study_size import (
    FACTORS,
    Resampling,
    simulated_ci_width,
    users_to_meet,
)
from persalign.report.findings import Finding
from persalign.report.sizing import Sizing

from .test_sizing import naive_anova


def naive_width(am: np.ndarray, bm: np.ndarray, users: int, draws: int, n_boot: int) -> float:
    """Draw ``users`` user indices, bootstrap them, τ of the methods' means: one loop each."""
    rng = np.random.default_rng(123)
    widths = []
    for _ in range(draws):
        study = rng.integers(0, am.shape[1], size=users)
        taus = []
        for _ in range(n_boot):
            picked = study[rng.integers(0, users, size=users)]
            taus.append(stats.kendalltau(am[:, picked].mean(1), bm[:, picked].mean(1)).statistic)
        lo, hi = np.percentile(taus, [2.5, 97.5])
        widths.append(hi - lo)
    return float(np.median(widths))


def close_methods(
    seed: int = 0, methods: int = 8, users: int = 40, spread: float = 0.25
) -> tuple[np.ndarray, ...]:
    """Methods whose means differ by less than one user's noise: τ's CI is wide at 40 users."""
    rng = np.random.default_rng(seed)
    truth = np.linspace(0.0, spread, methods)[:, None]
    am = truth + rng.normal(size=(methods, users))
    bm = truth + rng.normal(size=(methods, users))
    return am, bm


def naive_pull(values: np.ndarray) -> np.ndarray:
    """Each method's values moved so its mean's distance from the grand mean shrinks by
    sqrt(1 - 1/F), F from the ANOVA by hand (0 when F <= 1)."""
    f, _ = naive_anova(values.tolist())
    keep = math.sqrt(max(0.0, 1 - 1 / f))
    rows = []
    grand = sum(sum(r) for r in values.tolist()) / values.size
    for row in values.tolist():
        mean = sum(row) / len(row)
        rows.append([v - (1 - keep) * (mean - grand) for v in row])
    return np.array(rows)


@pytest.mark.parametrize("users", [40, 160])
def test_the_simulated_width_matches_a_naive_loop(users):
    am, bm = close_methods()
    plain = Resampling((am, bm), "kendall", shrink=False)
    fast = simulated_ci_width(plain, users, draws=40, n_boot=300)
    slow = naive_width(am, bm, users, draws=40, n_boot=300)
    assert fast == pytest.approx(slow, abs=0.08)
    pulled = simulated_ci_width(Resampling((am, bm), "kendall"), users, draws=40, n_boot=300)
    by_hand = naive_width(naive_pull(am), naive_pull(bm), users, draws=40, n_boot=300)
    assert pulled == pytest.approx(by_hand, abs=0.08)
    assert pulled >= fast  # the noise in the observed means no longer orders the methods


def test_the_pull_keeps_each_users_deviations_and_ties_flat_methods():
    am, bm = close_methods(methods=6, users=30, spread=2.0)
    population = Resampling((am, bm), "kendall").population()
    for before, after in zip((am, bm), population.samples, strict=True):
        np.testing.assert_allclose(after, naive_pull(before), atol=1e-12)
        centred = lambda x: x - x.mean(axis=1, keepdims=True)  # noqa: E731
        np.testing.assert_allclose(centred(after), centred(before), atol=1e-12)
        assert np.ptp(after.mean(axis=1)) < np.ptp(before.mean(axis=1))  # pulled together
    noise = np.random.default_rng(2).normal(size=(6, 30))
    flat = noise - noise.mean(axis=1, keepdims=True) + 0.01 * np.arange(6)[:, None]  # F < 1
    tied = Resampling((flat, bm), "kendall").population().samples[0]
    assert np.ptp(tied.mean(axis=1)) == pytest.approx(0.0, abs=1e-12)
    mean = Resampling((flat[:1],), "mean")
    assert mean.population() is mean  # a mean's width does not depend on where it lies


def test_a_mean_narrows_as_one_over_root_n():
    rng = np.random.default_rng(1)
    d = rng.normal(loc=0.3, scale=1.0, size=(1, 64))
    sample = Resampling((d,), "mean")
    sd = d.std()
    for users in (64, 256, 1024):
        expected = 2 * 1.96 * sd / np.sqrt(users)
        width = simulated_ci_width(sample, users, draws=30, n_boot=400)
        assert width == pytest.approx(expected, rel=0.12)
    # the rule's users for a bar half the width at 64 users: 4x, the simulation agrees
    at_64 = simulated_ci_width(sample, 64, draws=30, n_boot=400)
    projection = users_to_meet(sample, bar=at_64 / 2 * 1.05, factors=(2.0, 3.0, 4.0, 6.0))
    assert projection.users == 256 and projection.width <= at_64 / 2 * 1.05


def test_close_methods_need_more_users_than_the_rule_and_tied_ones_never_decide():
    am, bm = close_methods(methods=9, users=48, spread=1.0)
    sample = Resampling((am, bm), "kendall")
    widths = [simulated_ci_width(sample, n) for n in (48, 192, 768)]
    assert widths[0] > widths[1] > widths[2]  # more users, narrower
    at_48 = widths[0]
    rule = 48 * (at_48 / 0.3) ** 2
    projection = users_to_meet(sample, 0.3, FACTORS[1:])
    assert projection.users is not None and projection.users > 2 * rule  # slower than 1/sqrt(n)
    # every method the same on x: no study orders them, whatever its size
    noise = np.random.default_rng(5).normal(size=(9, 48))
    tied = Resampling((noise - noise.mean(axis=1, keepdims=True), bm), "kendall")
    never = users_to_meet(tied, 0.3, FACTORS[1:])
    assert never.users is None and never.tried == 48 * 32 and never.width > 0.6
    # far apart on both: met at the first size tried
    apart = Resampling((np.arange(9.0)[:, None] + am * 0.01, np.arange(9.0)[:, None] + bm * 0.01),
                       "kendall")  # fmt: skip
    assert users_to_meet(apart, 0.3) == users_to_meet(apart, 0.3)  # seeded: reproducible
    assert users_to_meet(apart, 0.3).users == 48


def test_bad_samples_are_refused():
    with pytest.raises(ValueError, match="unknown statistic"):
        Resampling((np.zeros((1, 3)),), "median")
    with pytest.raises(ValueError, match="kendall needs 2 arrays"):
        Resampling((np.zeros((3, 5)),), "kendall")
    with pytest.raises(ValueError, match="same users"):
        Resampling((np.zeros((3, 5)), np.zeros((3, 6))), "kendall")
    with pytest.raises(ValueError, match="at least 1"):
        simulated_ci_width(Resampling((np.zeros((1, 3)),), "mean"), 0)


def _finding(width: float, resampling: Resampling) -> Finding:
    return Finding("135M", "claim", "paper", "Kendall τ", 0.1, (0.0, width), "n", 48,
                   "inconclusive", "why", bar=0.3, resampling=resampling)  # fmt: skip


def test_sizing_reports_the_simulated_users_beside_the_rule():
    am, bm = close_methods(methods=9, users=48)
    shifted = (np.arange(9.0)[:, None] * 0.2 + am, np.arange(9.0)[:, None] * 0.2 + bm)
    sizing = Sizing(_finding(0.45, Resampling(shifted, "kendall")))
    projection = sizing.projection
    assert projection is not None and projection.users is not None and projection.users > 48
    assert sizing.users_text == (
        f"about {projection.users:,} ({projection.users / 48:g}x, simulated: median CI width "
        f"{projection.width:.3f}; 1/sqrt(n) says {int(np.ceil(48 * (0.45 / 0.3) ** 2))})"
    )
    noise = np.random.default_rng(6).normal(size=(9, 48))
    same = noise - noise.mean(axis=1, keepdims=True)  # every method's mean exactly 0
    tied = Sizing(_finding(0.9, Resampling((same, bm), "kendall")))
    assert tied.users_text.startswith("more than 1,536 (32x, simulated: median CI width ")
    assert Sizing(_finding(0.2, Resampling(shifted, "kendall"))).projection is None  # met


def test_check_sizing_projects_each_sized_finding_from_halves(tmp_path, monkeypatch, capsys):
    """benchmarks/check_sizing.py on a run of six methods and 12 users: one row per row of the
    report's study_sizing table, the target its CI width, and the three projections' errors."""
    import csv
    import io
    import json
    import sys

    from persalign.report.writer import write_report

    from .test_findings import BENCH, METHODS, USERS, around, cell_data, write_run
    from .test_sim_pilots import script

    cells = [
        cell_data(
            0, "method", method,
            rm_accuracy=around(0.50 + 0.05 * i, USERS, 0.2, i),
            policy_accuracy=around(0.55 + 0.02 * i, USERS, 0.2, 50 + i),
            rouge1=around(0.30 + 0.01 * i, USERS, 0.05, 100 + i),
            bertscore_f1=around(0.5 + 0.01 * i, USERS, 0.05, 70 + i),
        )
        for i, method in enumerate(METHODS)
    ]  # fmt: skip
    run = write_run(tmp_path, cells)
    files = write_report(run, n_boot=1000)
    table = files[f"{BENCH}/study_sizing.csv"].read_text("utf-8")
    sized = list(csv.DictReader(io.StringIO(table)))
    assert len(sized) == 3  # the paper's three Kendall claims (no sim benchmark here)
    monkeypatch.setattr(sys, "argv", ["check_sizing.py", str(run), "--halves", "3"])
    script("check_sizing").main()
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == BENCH and out["halves"] == 3
    assert [r["claim"] for r in out["findings"]] == [r["Claim"] for r in sized]
    for row, want in zip(out["findings"], sized, strict=True):
        assert row["users"] == len(USERS)
        assert row["target_width"] == pytest.approx(float(want["CI width"]), abs=1e-3)
        for key in ("simulated_from_half", "simulated_without_pull", "rule_from_half"):
            assert 0.0 <= row[key] <= 2.0
    errors = [abs(r["rule_from_half"] - r["target_width"]) for r in out["findings"]]
    assert out["rule"]["mean_abs_error"] == pytest.approx(sum(errors) / len(errors), abs=1e-3)
    assert out["rule"]["underestimates"].endswith(f"of {len(sized)}")


def test_an_inconclusive_tau_says_how_many_simulated_users_would_halve_it():
    from persalign.metrics.method_differences import method_differences

    am, bm = close_methods(methods=9, users=48, spread=1.0)
    sample = Resampling((am, bm), "kendall")
    tests = (("A", method_differences(am)), ("B", method_differences(bm)))

    def finding(users: int, resampling: Resampling | None, differences=tests) -> Finding:
        return Finding("135M", "claim", "paper", "Kendall τ", 0.1, (-0.2, 0.4), "n", users,
                       "inconclusive", "the CI reaches 0.6", resampling=resampling,
                       differences=differences)  # fmt: skip

    expected = users_to_meet(sample, 0.3, FACTORS[1:], seed=0)
    assert expected.users is not None and expected.users > 4 * 48  # slower than the rule
    assert finding(48, sample).why == (
        f"the CI reaches 0.6; about {expected.users:,} users would halve it (simulated)"
    )
    assert finding(48, None).halving == "about 192 users would halve it"  # no values: the rule
    assert finding(9, sample).halving == "about 36 users would halve it"  # untrusted: the rule
    noise = np.random.default_rng(7).normal(size=(9, 48))
    same = noise - noise.mean(axis=1, keepdims=True)
    tied_on_x = Resampling((same, bm), "kendall")  # the pull ties the methods: none orders them
    assert finding(48, tied_on_x).halving == "even 1,536 users would not halve it (simulated)"
