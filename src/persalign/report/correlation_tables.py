"""Correlation tables: ranking metrics against ROUGE-1 (the paper's Table 6) and the details.

    rouge_correlation_table(results, "pref-acl")      # key "rouge1_correlation"
    correlation_detail_table(results, "pref-acl", n_boot=1000)   # key "correlations"
    correlation_points(results, "pref-acl", "smol-135m", "rm_accuracy", "policy_accuracy")
    # (['global-rm', 'lore', ...], [0.71, 0.81, ...], [0.62, 0.77, ...])

Correlations are across the reward methods (baselines have no reward model), at one policy
scale, computed by persalign.metrics.correlation. A point is one *unit* (the run config's
``report.correlation_units``, or the ``units`` argument): ``methods`` (a method's mean over
seeds, the paper's), ``method-seed`` (one point per method and seed) or ``users`` (one point per
method and user, the user's value averaged over seeds). Every table and Fig. 1 says which units
it used. A method enters a pair only where it has both values: PAL (no RGD) has no policy
accuracy, ROUGE or win rate, P-DPO no RM accuracy, so each drops out of those pairs. The detail
table adds n and a percentile-bootstrap CI over users (``methods``: ``correlations_over_users``;
``users``: ``correlations_over_user_points``; ``method-seed``: none).
"""

from __future__ import annotations

import logging
from typing import Any

from persalign.metrics.correlation import (
    correlations,
    correlations_over_user_points,
    correlations_over_users,
)
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

log = logging.getLogger(__name__)

MIN_METHODS = 3  # fewer points than this: no correlation ("--")
UNITS = {
    "methods": "one point per reward method (its mean over seeds)",
    "method-seed": "one point per reward method and seed",
    "users": "one point per reward method and user (the user's value, mean over seeds)",
}
DEFAULT_UNITS = "methods"


def correlation_units(results: RunResults, units: str | None = None) -> str:
    """``units`` if given (an unknown value is an error naming the choices), else the run
    config's ``report.correlation_units`` (default, and for an unreadable value: methods)."""
    if units is None:
        config = (results.manifest or {}).get("config") or {}
        units = ((config.get("report") or {}).get("correlation_units")) or DEFAULT_UNITS
        if units not in UNITS:
            log.warning("manifest: unknown report.correlation_units %r; using methods", units)
            units = DEFAULT_UNITS
    if units not in UNITS:
        raise ValueError(f"unknown correlation units {units!r}; choose from {', '.join(UNITS)}")
    return units


def correlation_note(units: str) -> str:
    """The caption line that names the units of a correlation."""
    return (
        f"Correlation units ({units}): {UNITS[units]}, over the reward methods that have both "
        "values at that scale; two-sided p-values; -- where fewer than 3 points or a constant "
        "input."
    )


def method_means(
    results: RunResults, benchmark: str, policy: str, x: str, y: str
) -> tuple[list[str], list[float], list[float]]:
    """The reward methods with both metrics at this policy, and their means over seeds."""
    names, xs, ys = [], [], []
    for row in results.unit_rows(benchmark):
        sx = results.stat(benchmark, policy, row.label, x)
        sy = results.stat(benchmark, policy, row.label, y)
        if sx is not None and sy is not None:
            names.append(row.label)
            xs.append(sx.mean)
            ys.append(sy.mean)
    return names, xs, ys


def correlation_points(
    results: RunResults, benchmark: str, policy: str, x: str, y: str, units: str | None = None
) -> tuple[list[str], list[float], list[float]]:
    """(labels, x values, y values) of every unit with both metrics at this policy."""
    units = correlation_units(results, units)
    if units == "methods":
        return method_means(results, benchmark, policy, x, y)
    labels, xs, ys = [], [], []
    for row in results.unit_rows(benchmark):
        if units == "method-seed":
            a = results.seed_values(benchmark, policy, row.label, x)
            b = results.seed_values(benchmark, policy, row.label, y)
            keys = [(seed, f"{row.label} s{seed}") for seed in sorted(a.keys() & b.keys())]
        else:
            a = results.per_user(benchmark, policy, row.label, x)
            b = results.per_user(benchmark, policy, row.label, y)
            keys = [(user, f"{row.label} {user}") for user in sorted(a.keys() & b.keys())]
        for key, label in keys:
            labels.append(label)
            xs.append(a[key])
            ys.append(b[key])
    return labels, xs, ys


def correlate(xs: list[float], ys: list[float]) -> dict[str, Any] | None:
    """persalign.metrics.correlation.correlations, or None for fewer than MIN_METHODS points."""
    if len(xs) < MIN_METHODS:
        return None
    return correlations(xs, ys)


def rouge_correlation_table(results: RunResults, benchmark: str, units: str | None = None) -> Table:
    """Table 6: correlation of each ranking metric with ROUGE-1 across methods, per scale."""
    units = correlation_units(results, units)
    metrics = ("rm_accuracy", "policy_accuracy", "win_rate")
    rows = []
    for column in results.policies(benchmark):
        points = [
            correlation_points(results, benchmark, column.policy, m, "rouge1", units)
            for m in metrics
        ]
        corrs = [correlate(xs, ys) for _, xs, ys in points]
        for statistic, label in STATISTICS.items():
            rows.append([column.label, label, *[fmt_corr(r, statistic) for r in corrs]])
    return Table(
        key="rouge1_correlation",
        title=f"Ranking metrics against generation quality on {benchmark}",
        caption=(
            "Correlation of each ranking metric with ROUGE-1 across reward methods "
            f"(cf. the paper's Table 6); units: {units} ({UNITS[units]})."
        ),
        columns=["Scale", "Statistic", *[LABELS[m] for m in metrics]],
        rows=rows,
        notes=[correlation_note(units)],
    )


PAIRS = (
    ("rm_accuracy", "policy_accuracy"),
    ("rm_accuracy", "rouge1"),
    ("policy_accuracy", "rouge1"),
    ("win_rate", "rouge1"),
)


def ci_text(result: dict[str, Any] | None, statistic: str) -> str:
    """ "[0.105, 0.633]": the bootstrap CI of a statistic of a correlations result; "--" if none."""
    ci = ((result or {}).get(statistic) or {}).get("ci")
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return NA
    lo, hi = finite(ci[0]), finite(ci[1])
    return NA if lo is None or hi is None else f"[{fixed(lo, 3)}, {fixed(hi, 3)}]"


def _bootstrap(
    results: RunResults,
    benchmark: str,
    policy: str,
    pair: tuple[str, str],
    names: list[str],
    units: str,
    n_boot: int,
) -> dict[str, Any] | None:
    """The bootstrap over users for ``methods`` and ``users`` units (None for method-seed)."""
    if units == "method-seed" or n_boot <= 0:
        return None
    rows = names if units == "methods" else [r.label for r in results.unit_rows(benchmark)]
    a = {m: results.per_user(benchmark, policy, m, pair[0]) for m in rows}
    b = {m: results.per_user(benchmark, policy, m, pair[1]) for m in rows}
    if units == "methods":
        return correlations_over_users(a, b, n_boot=n_boot, seed=0)
    return correlations_over_user_points(a, b, n_boot=n_boot, seed=0)


def correlation_detail_table(
    results: RunResults, benchmark: str, n_boot: int = 1000, units: str | None = None
) -> Table:
    """Every correlation of the ranking tables, with n and a bootstrap CI over users."""
    units = correlation_units(results, units)
    rows, left_out = [], []
    for column in results.policies(benchmark):
        for x, y in PAIRS:
            names, xs, ys = correlation_points(results, benchmark, column.policy, x, y, units)
            result = correlate(xs, ys)
            boot = None
            if result is not None:
                boot = _bootstrap(results, benchmark, column.policy, (x, y), names, units, n_boot)
            pair = f"{LABELS[x]} vs {LABELS[y]}"
            left_out += [f"{column.label}, {pair}: {what}." for what in _left_out(
                results, benchmark, column.policy, (x, y), boot)]  # fmt: skip
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
                        ci_text(boot, statistic),
                        str(len(xs)),
                    ]
                )
    ci = {
        "methods": f"bootstrap over users ({n_boot} resamples, seed 0) of the per-user values "
        "averaged over seeds",
        "users": f"bootstrap over users as clusters ({n_boot} resamples, seed 0)",
        "method-seed": "none for (method, seed) units",
    }[units]
    source = {
        "methods": "the method means over seeds",
        "method-seed": "one point per (method, seed)",
        "users": "one point per (method, user)",
    }[units]
    return Table(
        key="correlations",
        title=f"Correlations across reward methods on {benchmark}",
        caption=f"r and two-sided p from {source}; 95% CI: {ci}. Units: {units} ({UNITS[units]}).",
        columns=["Scale", "Pair", "Statistic", "r", "p", "95% CI", "n"],
        rows=rows,
        notes=[
            f"n: points with both values; -- where n < {MIN_METHODS}.",
            correlation_note(units),
            *(left_out or ["Left out: nothing."]),
        ],
    )


def _left_out(
    results: RunResults,
    benchmark: str,
    policy: str,
    pair: tuple[str, str],
    boot: dict[str, Any] | None,
) -> list[str]:
    """What a correlation left out, counted: methods with one value only (and why), users and
    bootstrap resamples (the bootstrap's notes)."""
    out = []
    one_sided = []
    for row in results.unit_rows(benchmark):
        have = [results.stat(benchmark, policy, row.label, m) is not None for m in pair]
        if any(have) and not all(have):
            lacking = pair[have.index(False)]
            why = results.status(benchmark, policy, row.label, lacking) or "missing"
            one_sided.append(f"{row.label} ({LABELS[lacking]} {why})")
    if one_sided:
        out.append(f"{len(one_sided)} method(s) with one value only: {', '.join(one_sided)}")
    notes = [n for n in (boot or {}).get("notes", []) if not n.startswith("methods in only")]
    return out + notes
