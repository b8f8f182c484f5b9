"""Findings that conclude: on a benchmark of simulated users, generation quality is measured.

    findings = sim_findings(results, "sim", n_boot=1000)    # [] unless the benchmark is a sim one
    findings[0].claim        # 'The oracle raises the true reward over zero-shot (the ceiling)'
    table = spread_table(results, "sim")                    # key "reward_spread" (or None)

A benchmark is a sim benchmark when its cells have ``true_reward`` (docs/simulated-users.md).
Per policy scale, stated in this order:

1. The oracle's true gain (``oracle`` row minus zero-shot, per user, mean over users, 95%
   bootstrap CI over users): if it is not above 0, no method can show a gain and every other
   null result is about the setup.
2. Which selection metric predicts true gain (and true win rate): Kendall tau over methods (each
   method's mean over seeds: the verdict), then over (method, seed) units, the oracle never a
   unit, CI over users and the leave-one-method-out range, as report.findings. The claim is that
   the metric predicts: tau >= PREDICTS_TAU with a CI that excludes 0 ("holds"); "does not hold"
   when the CI's upper end is below PREDICTS_TAU; "inconclusive" otherwise. RM accuracy comes
   first; ``true_rm_accuracy`` (noise-free) is shown beside it.
3. ICL-RAG vs the best reward-guided method on true gain: the paired per-user difference of true
   reward (the zero-shot term cancels), best = the highest mean true reward (oracle aside).
   Its CI's width is compared with a quarter of the oracle's gain (the study's decision bar).
4. The share of the oracle's gain each method, ICL and ICL-RAG capture: (mean r(row) - mean
   r(zero-shot)) / (mean r(oracle) - mean r(zero-shot)) over the users all three have, bootstrap
   CI over users; the claim is a share above 0.

``spread_table``: per method row and seed, the learned reward's spread over each user's candidates
(``true_rm_accuracy.spread``) and the users whose reward is nearly constant ("collapsed").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from persalign.io import read_json
from persalign.metrics.schema import METRICS_FILE
from persalign.metrics.study_size import Resampling
from persalign.report.findings import Finding, correlation_finding
from persalign.report.formatting import NA, fixed
from persalign.report.meta_evaluation import SELECTION, metric_label
from persalign.report.results import ORACLE_ROW, RunResults
from persalign.report.tabular import Table
from persalign.report.units import SEED, too_few, unit_correlation
from persalign.report.verdicts import (
    CONFIDENCE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    ORACLE_SHARE_BAR,
    mean_with_ci,
    paired_difference,
    paired_differences,
    sign_verdict,
)

PREDICTS_TAU = 0.6  # "predicts": Kendall tau at least this, with a CI that excludes 0
SIM_TARGETS = ("true_gain", "true_win_rate")
PAPER = "sim (no paper claim)"
ZERO_SHOT = "zero-shot"


def is_sim(results: RunResults, benchmark: str) -> bool:
    return any(c.benchmark == benchmark and "true_reward" in c.values for c in results.cells)


def predicts_verdict(
    r: float | None, ci: tuple[float, float] | None, users: int, methods: int
) -> tuple[str, str]:
    """The claim tau >= PREDICTS_TAU with a CI excluding 0: (verdict, reason); a verdict needs
    the findings' minimum of users and distinct reward methods (report.units.too_few)."""
    if r is None or ci is None:
        return INCONCLUSIVE, "no CI (too few units, a constant metric, or --bootstrap 0)"
    short = too_few(users, methods)
    if short:
        return INCONCLUSIVE, short
    if r >= PREDICTS_TAU and ci[0] > 0:
        return HOLDS, f"τ >= {PREDICTS_TAU:g} and the CI lies above 0"
    if ci[1] < PREDICTS_TAU:
        return FAILS, f"the whole CI lies below {PREDICTS_TAU:g}"
    return INCONCLUSIVE, f"the CI reaches {PREDICTS_TAU:g} but τ or the CI does not qualify"


def share_of_oracle(
    row: Mapping[str, float],
    zero: Mapping[str, float],
    oracle: Mapping[str, float],
    n_boot: int,
) -> tuple[float | None, tuple[float, float] | None, int]:
    """(share, its percentile bootstrap CI over users, n) of the oracle's gain a row captures."""
    users = sorted(row.keys() & zero.keys() & oracle.keys())
    if not users:
        return None, None, 0
    d_row = np.array([row[u] - zero[u] for u in users])  # [n]
    d_or = np.array([oracle[u] - zero[u] for u in users])  # [n]
    if d_or.mean() <= 0:
        return None, None, len(users)
    share = float(d_row.mean() / d_or.mean())
    if n_boot <= 0:
        return share, None, len(users)
    n = len(users)
    counts = np.random.default_rng(SEED).multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    num, den = counts @ d_row / n, counts @ d_or / n  # [n_boot]
    ok = den > 0
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(num[ok] / den[ok], [tail, 100 - tail]) if ok.any() else (np.nan,) * 2
    return share, (float(lo), float(hi)) if ok.any() else None, n


def sim_findings(results: RunResults, benchmark: str, n_boot: int = 1000) -> list[Finding]:
    """Every sim finding of one benchmark, per policy scale (empty for other benchmarks)."""
    if not is_sim(results, benchmark):
        return []
    out: list[Finding] = []
    for column in results.policies(benchmark):
        out += _policy_findings(results, benchmark, column.policy, column.label, n_boot)
    return out


def _true(results: RunResults, benchmark: str, policy: str, row: str) -> dict[str, float]:
    return results.per_user(benchmark, policy, row, "true_reward")


def _policy_findings(
    results: RunResults, benchmark: str, policy: str, scale: str, n_boot: int
) -> list[Finding]:
    zero = _true(results, benchmark, policy, ZERO_SHOT)
    oracle = _true(results, benchmark, policy, ORACLE_ROW)
    mean, ci, n = paired_difference(oracle, zero, n_boot)
    verdict, reason = sign_verdict(ci, n)
    if not oracle:
        reason = "not measured: no oracle row (add the oracle method to the run)"
    out = [
        Finding(
            scale,
            "The oracle raises the true reward over zero-shot (the ceiling)",
            PAPER,
            "true gain",
            mean,
            ci,
            f"{n} paired users",
            n,
            verdict,
            reason,
        )
    ]
    oracle_gain = mean
    for metric in ("rm_accuracy", "true_rm_accuracy", *(m for m in SELECTION[1:])):
        for target in SIM_TARGETS:
            claim = (
                f"{metric_label(results, metric)} predicts {metric_label(results, target)} "
                f"(τ >= {PREDICTS_TAU:g}, CI above 0)"
            )
            # the verdict over methods (each method's mean over seeds), then (method, seed) units
            for units, primary in (("methods", True), ("method-seed", False)):
                mc = unit_correlation(results, benchmark, policy, metric, target, n_boot, units)
                if mc.units == 0 or (not primary and mc.units == mc.methods):
                    continue  # nothing, or one seed: the (method, seed) row repeats the methods row

                def rule(ci, users, methods, mc=mc):
                    return predicts_verdict(mc.r(), ci, users, methods)

                labels = (metric_label(results, metric), metric_label(results, target))
                out.append(correlation_finding(scale, claim, PAPER, mc, rule, primary, labels))
    out.append(_icl_rag(results, benchmark, policy, scale, oracle_gain, n_boot))
    rows = [r.label for r in results.rows(benchmark) if r.label not in (ORACLE_ROW, ZERO_SHOT)]
    for row in rows:
        share, ci, n = share_of_oracle(_true(results, benchmark, policy, row), zero, oracle, n_boot)
        if n == 0:
            continue
        verdict, reason = sign_verdict(ci, n)
        if share is None:
            verdict, reason = INCONCLUSIVE, "undefined: the oracle gains nothing over zero-shot"
        out.append(
            Finding(
                scale,
                f"{row} captures a positive share of the oracle's gain",
                PAPER,
                "share of the oracle",
                share,
                ci,
                f"{n} users",
                n,
                verdict,
                reason,
            )
        )
    return out


def _icl_rag(
    results: RunResults,
    benchmark: str,
    policy: str,
    scale: str,
    oracle_gain: float | None,
    n_boot: int,
) -> Finding:
    means = {
        r.label: stat.mean
        for r in results.rows(benchmark)
        if (stat := results.stat(benchmark, policy, r.label, "true_reward")) is not None
    }
    methods = [r.label for r in results.rows(benchmark, "method") if r.label in means]
    methods = [m for m in methods if m != ORACLE_ROW]
    rags = [r for r in results.rows(benchmark, "baseline") if r.method == "icl-rag"]
    rags = [r for r in rags if r.label in means]
    statistic = "true reward difference"
    if not methods or not rags:
        reason = "not measured: no " + ("ICL-RAG" if methods else "reward-method") + " true reward"
        return Finding(
            scale,
            "ICL-RAG beats the best reward-guided method on true gain",
            PAPER,
            statistic,
            None,
            None,
            "0 users",
            0,
            INCONCLUSIVE,
            reason,
        )
    best = max(methods, key=lambda m: means[m])
    rag = max(rags, key=lambda r: r.shots or 0).label
    differences = paired_differences(  # [users]: the finding's values, resampled below
        _true(results, benchmark, policy, rag), _true(results, benchmark, policy, best)
    )
    mean, ci, n = mean_with_ci(differences, n_boot)
    verdict, reason = sign_verdict(ci, n)
    bar = None if oracle_gain is None else ORACLE_SHARE_BAR * max(0.0, oracle_gain)
    if ci is not None and bar:
        fits = "within" if ci[1] - ci[0] <= bar else "wider than"
        reason += f"; CI width {fixed(ci[1] - ci[0], 3)} is {fits} a quarter of the oracle's gain"
    claim = f"ICL-RAG ({rag}) beats the best reward-guided method ({best}) on true gain"
    return Finding(
        scale, claim, PAPER, statistic, mean, ci, f"{n} paired users", n, verdict, reason,
        bar=bar, resampling=Resampling((differences[None, :],), "mean") if n else None,
    )  # fmt: skip


def spread_table(results: RunResults, benchmark: str) -> Table | None:
    """Per (method, seed) cell: mean and min spread of the learned reward over users' candidates,
    and the collapsed users (nearly constant reward); None without true_rm_accuracy."""
    rows = []
    for cell in sorted(results.cells, key=lambda c: (c.policy, c.row_key, c.seed)):
        if cell.benchmark != benchmark or "true_rm_accuracy" not in cell.values:
            continue
        path = results.run_dir / "cells" / cell.cell / METRICS_FILE
        spread = (
            (read_json(path).get("true_rm_accuracy") or {}).get("spread")
            if path.is_file()
            else None
        )
        if not isinstance(spread, dict) or not spread.get("per_user"):
            continue
        values = list(spread["per_user"].values())
        collapsed = list(spread.get("collapsed") or [])
        more = f" (+{len(collapsed) - 10})" if len(collapsed) > 10 else ""
        rows.append(
            [
                cell.scale,
                cell.row,
                str(cell.seed),
                fixed(float(np.mean(values)), 3),
                fixed(float(np.min(values)), 3),
                f"{len(collapsed)}/{len(values)}",
                ", ".join(collapsed[:10]) + more or NA,
            ]
        )
    if not rows:
        return None
    return Table(
        key="reward_spread",
        title=f"Reward spread per user on {benchmark}: collapsed users",
        caption="The learned reward's standard deviation over each user's query candidates "
        "(both responses of each query pair), mean and minimum over users; a user whose spread "
        "is at most 1% of the pooled one is collapsed (its reward is nearly constant).",
        columns=["Scale", "Method", "Seed", "Mean spread", "Min spread", "Collapsed", "Users"],
        rows=rows,
    )
