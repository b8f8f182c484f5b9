"""Meta-evaluation: which selection metric predicts generation quality?

    evaluation = meta_evaluation(results, "pref-acl", n_boot=1000)
    # {"smol-135m": [MetaCorrelation("policy_accuracy", "rouge1", {...}, units=10, users=3), ...]}
    table = meta_evaluation_table(results, "pref-acl", evaluation)   # key "meta_evaluation"

Every selection metric of the run (RM accuracy, policy accuracy, win rate, and the plugins'
steering accuracy, ground-truth MRR and top-1, prefix accuracy where registered: SELECTION) is
correlated with every generation metric (ROUGE-1, ROUGE-L, BERTScore-F1: TARGETS) at each policy
scale. The points are (reward method, seed) units: one per method cell, its value the mean over
the users both metrics have (persalign.metrics.correlation.correlations_over_users with the units
as its "methods"). Kendall tau-b, Spearman rho and Pearson r, each with a 95% percentile
bootstrap CI over users (resample the users, recompute every unit's mean, recompute the
correlation; seed 0). Baselines have no reward model, so no unit. A metric the run does not
have (its plugin not registered, or every value null) is skipped and named in the notes.

"Best first": per scale, the selection metrics ordered by the mean of their Kendall tau over the
targets (undefined last), each with its targets in TARGETS order.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from persalign.metrics.correlation import correlations_over_users
from persalign.report.correlation_tables import MIN_METHODS, ci_text
from persalign.report.formatting import LABELS, NA, STATISTICS, finite, fixed
from persalign.report.results import RunResults
from persalign.report.tabular import Table

SELECTION = (
    "rm_accuracy",
    "policy_accuracy",
    "win_rate",
    "steering_accuracy",
    "gt_mrr",
    "gt_top1",
    "prefix_accuracy",
)
TARGETS = ("rouge1", "rougeL", "bertscore_f1", "true_gain", "true_win_rate")  # true_*: sim only
UNITS_NOTE = "(method, seed) units: one point per reward-method cell"
SEED = 0  # of every bootstrap in the report's findings and meta-evaluation


@dataclass(frozen=True)
class MetaCorrelation:
    """One selection metric against one target at one scale; ``result`` is
    correlations_over_users' (None with fewer than MIN_METHODS units)."""

    metric: str
    target: str
    result: dict[str, Any] | None
    units: int
    users: int

    def r(self, statistic: str = "kendall") -> float | None:
        return finite(((self.result or {}).get(statistic) or {}).get("r"))

    def ci(self, statistic: str = "kendall") -> tuple[float, float] | None:
        ci = ((self.result or {}).get(statistic) or {}).get("ci") or ()
        bounds = [finite(v) for v in ci]
        if len(bounds) != 2 or bounds[0] is None or bounds[1] is None:
            return None
        return bounds[0], bounds[1]


def metric_label(results: RunResults, key: str) -> str:
    """The report's name of a metric: LABELS, else its report column's label, else the key."""
    if key in LABELS:
        return LABELS[key]
    return next((c.label for c in results.columns if c.key == key), key)


def present(results: RunResults, benchmark: str, keys: tuple[str, ...]) -> list[str]:
    """The keys that some cell of the benchmark has a value for, in the order given."""
    have = {k for c in results.cells if c.benchmark == benchmark for k in c.values}
    return [k for k in keys if k in have]


def unit_correlation(
    results: RunResults, benchmark: str, policy: str, x: str, y: str, n_boot: int
) -> MetaCorrelation:
    """Correlation of ``x`` and ``y`` over the (method, seed) units with both, CI over users."""
    a = results.unit_per_user(benchmark, policy, x)
    b = results.unit_per_user(benchmark, policy, y)
    units = sorted(a.keys() & b.keys())
    if len(units) < MIN_METHODS:
        return MetaCorrelation(x, y, None, len(units), 0)
    result = correlations_over_users(
        {u: a[u] for u in units}, {u: b[u] for u in units}, n_boot=n_boot, seed=SEED
    )
    return MetaCorrelation(x, y, result, int(result["n"]), int(result["users"]))


def _score(rows: list[MetaCorrelation]) -> float:
    taus = [t for row in rows if (t := row.r()) is not None]
    return statistics.fmean(taus) if taus else -math.inf


def meta_evaluation(
    results: RunResults, benchmark: str, n_boot: int = 1000
) -> dict[str, list[MetaCorrelation]]:
    """Per policy, every (selection metric, target) correlation, best selection metric first."""
    metrics = present(results, benchmark, SELECTION)
    targets = present(results, benchmark, TARGETS)
    out = {}
    for column in results.policies(benchmark):
        by_metric = [
            [unit_correlation(results, benchmark, column.policy, m, t, n_boot) for t in targets]
            for m in metrics
        ]
        ranked = sorted(range(len(metrics)), key=lambda i: (-_score(by_metric[i]), i))
        out[column.policy] = [row for i in ranked for row in by_metric[i]]
    return out


def _cell(row: MetaCorrelation, statistic: str) -> str:
    r = row.r(statistic)
    if r is None:
        return NA
    ci = ci_text(row.result, statistic)
    return fixed(r, 3) if ci == NA else f"{fixed(r, 3)} {ci}"


def meta_evaluation_table(
    results: RunResults, benchmark: str, evaluation: Mapping[str, list[MetaCorrelation]]
) -> Table:
    """The "Which metric predicts generation quality?" table of :func:`meta_evaluation`."""
    labels = {c.policy: c.label for c in results.policies(benchmark)}
    order = ("kendall", "spearman", "pearson")
    rows, notes = [], []
    for policy, correlations in evaluation.items():
        for row in correlations:
            rows.append(
                [
                    labels[policy],
                    metric_label(results, row.metric),
                    metric_label(results, row.target),
                    *[_cell(row, s) for s in order],
                    str(row.units),
                    str(row.users) if row.result is not None else NA,
                ]
            )
        best = next((row for row in correlations if row.r() is not None), None)
        if best is not None:
            notes.append(
                f"Best at {labels[policy]}: {metric_label(results, best.metric)} "
                f"(mean Kendall τ over the targets; τ with {metric_label(results, best.target)} "
                f"= {_cell(best, 'kendall')}, {best.units} units, {best.users} users)."
            )
    missing = [k for k in SELECTION if k not in present(results, benchmark, SELECTION)]
    if missing:
        notes.append(f"Not in this run (plugin not registered or no value): {', '.join(missing)}.")
    if not present(results, benchmark, TARGETS):
        notes.append("No generation metric in this benchmark (decoding.generate: false).")
    n_boot = next(
        (r.result.get("n_boot") for rs in evaluation.values() for r in rs if r.result), None
    )
    boot = f"{n_boot} resamples, seed {SEED}" if n_boot else "none"
    notes.append(
        f"Units: {UNITS_NOTE}, its value the mean over the users both metrics have; -- where "
        f"fewer than {MIN_METHODS} units or a constant input. 95% CI: percentile bootstrap over "
        f"users ({boot}). Best first: by the mean Kendall τ over the targets."
    )
    return Table(
        key="meta_evaluation",
        title=f"Which metric predicts generation quality? ({benchmark})",
        caption=(
            "Each selection metric against each generation metric across (reward method, seed) "
            "units at each scale: Kendall τ, Spearman ρ and Pearson r with a 95% bootstrap CI "
            "over users; best selection metric first."
        ),
        columns=[
            "Scale",
            "Selection metric",
            "Target",
            *[f"{STATISTICS[s]} [95% CI]" for s in order],
            "Units",
            "Users",
        ],
        rows=rows,
        notes=notes,
    )
