"""Correlation tables: ranking metrics against ROUGE-1 (the paper's Table 6) and the details.

    rouge_correlation_table(results, "pref-acl")      # key "rouge1_correlation"
    correlation_detail_table(results, "pref-acl", n_boot=1000)   # key "correlations"

Correlations are across the reward methods (baselines have no reward model), from each method's
mean over seeds at one policy scale, computed by persalign.metrics.correlation; the detail table
adds n and a percentile-bootstrap CI over users (``correlations_over_users``).
"""

from __future__ import annotations

from typing import Any

from persalign.metrics.correlation import correlations, correlations_over_users
from persalign.report.formatting import (
    LABELS,
    NA,
    STATISTICS,
    finite,
    fixed,
    fmt_corr,
)
from persalign.report.results import RunResults
from persalign.report.tabular import Table

MIN_METHODS = 3  # fewer methods than this: no correlation ("--")
CORR_NOTE = (
    "Correlations across the reward methods that have both values at that scale (method means "
    "over seeds), two-sided p-values; -- where fewer than 3 methods or a constant input."
)


def method_means(
    results: RunResults, benchmark: str, policy: str, x: str, y: str
) -> tuple[list[str], list[float], list[float]]:
    """The reward methods with both metrics at this policy, and their means over seeds."""
    names, xs, ys = [], [], []
    for row in results.rows(benchmark, "method"):
        sx = results.stat(benchmark, policy, row.label, x)
        sy = results.stat(benchmark, policy, row.label, y)
        if sx is not None and sy is not None:
            names.append(row.label)
            xs.append(sx.mean)
            ys.append(sy.mean)
    return names, xs, ys


def correlate(xs: list[float], ys: list[float]) -> dict[str, Any] | None:
    """persalign.metrics.correlation.correlations, or None for fewer than MIN_METHODS points."""
    if len(xs) < MIN_METHODS:
        return None
    return correlations(xs, ys)


def rouge_correlation_table(results: RunResults, benchmark: str) -> Table:
    """Table 6: correlation of each ranking metric with ROUGE-1 across methods, per scale."""
    metrics = ("rm_accuracy", "policy_accuracy", "win_rate")
    rows = []
    for column in results.policies(benchmark):
        corrs = [
            correlate(*method_means(results, benchmark, column.policy, m, "rouge1")[1:])
            for m in metrics
        ]
        for statistic, label in STATISTICS.items():
            rows.append([column.label, label, *[fmt_corr(r, statistic) for r in corrs]])
    return Table(
        key="rouge1_correlation",
        title=f"Ranking metrics against generation quality on {benchmark}",
        caption=(
            "Correlation of each ranking metric with ROUGE-1 across reward methods "
            "(cf. the paper's Table 6)."
        ),
        columns=["Scale", "Statistic", *[LABELS[m] for m in metrics]],
        rows=rows,
        notes=[CORR_NOTE],
    )


PAIRS = (
    ("rm_accuracy", "policy_accuracy"),
    ("rm_accuracy", "rouge1"),
    ("policy_accuracy", "rouge1"),
    ("win_rate", "rouge1"),
)


def _ci(result: dict[str, Any] | None, statistic: str) -> str:
    ci = ((result or {}).get(statistic) or {}).get("ci")
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return NA
    lo, hi = finite(ci[0]), finite(ci[1])
    return NA if lo is None or hi is None else f"[{fixed(lo, 3)}, {fixed(hi, 3)}]"


def correlation_detail_table(results: RunResults, benchmark: str, n_boot: int = 1000) -> Table:
    """Every correlation of the ranking tables, with n and a bootstrap CI over users."""
    rows = []
    for column in results.policies(benchmark):
        for x, y in PAIRS:
            names, xs, ys = method_means(results, benchmark, column.policy, x, y)
            result = correlate(xs, ys)
            boot = None
            if result is not None and n_boot > 0:
                a = {m: results.per_user(benchmark, column.policy, m, x) for m in names}
                b = {m: results.per_user(benchmark, column.policy, m, y) for m in names}
                boot = correlations_over_users(a, b, n_boot=n_boot, seed=0)
            pair = f"{LABELS[x]} vs {LABELS[y]}"
            for statistic, label in STATISTICS.items():
                entry = (result or {}).get(statistic) or {}
                r, p = finite(entry.get("r")), finite(entry.get("p"))
                rows.append(
                    [
                        column.label,
                        pair,
                        label,
                        NA if r is None else fixed(r, 3),
                        NA if p is None else f"{p:.4f}",
                        _ci(boot, statistic),
                        str(len(xs)),
                    ]
                )
    return Table(
        key="correlations",
        title=f"Correlations across reward methods on {benchmark}",
        caption=(
            "r and two-sided p from the method means over seeds; 95% CI: bootstrap over users "
            f"({n_boot} resamples, seed 0) of the per-user values averaged over seeds."
        ),
        columns=["Scale", "Pair", "Statistic", "r", "p", "95% CI", "n"],
        rows=rows,
        notes=[f"n: reward methods with both values; -- where n < {MIN_METHODS}."],
    )
