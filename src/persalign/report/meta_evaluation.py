"""Meta-evaluation: which selection metric predicts generation quality?

    evaluation = meta_evaluation(results, "pref-acl", n_boot=1000)
    # {"smol-135m": MetaEvaluation(rows=[MetaCorrelation("policy_accuracy", "rouge1", ...), ...],
    #                              units=[...], users=[...], left_out=[...], best=...)}
    table = meta_evaluation_table(results, "pref-acl", evaluation)   # key "meta_evaluation"

Every selection metric of the run (RM accuracy, policy accuracy, win rate, and the plugins'
steering accuracy, ground-truth MRR and top-1, prefix accuracy where registered: SELECTION) is
correlated with every generation metric (ROUGE-1, ROUGE-L, BERTScore-F1: TARGETS) at each policy
scale. The points are (reward method, seed) units (report.units): one per method cell, its value
the mean over the users. Every correlation of a scale uses **one common set** of units and users:
the units that have every selection metric and target of the run, and the users each of those
has for every metric, so the metrics are ranked on the same data (the units and users left out
are counted in the notes). Kendall tau-b, Spearman rho and Pearson r, each with a 95% percentile
bootstrap CI over users (seed 0). Baselines have no reward model, so no unit. A metric the run
does not have (its plugin not registered, or every value null) is skipped and named.

"Best first": per scale, the selection metrics ordered by the mean of their Kendall tau over the
targets (undefined last). The best one is named with that mean and its CI (the same resamples
for every target, so the mean is taken resample by resample), but only where the CIs are trusted
(report.units: at least MIN_USERS users and MIN_METHODS distinct methods); below that every CI is
marked "‡" (not trusted) and no metric is named best.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from persalign.report.correlation_tables import ci_text
from persalign.report.formatting import LABELS, NA, STATISTICS, fixed
from persalign.report.results import RunResults
from persalign.report.tabular import Table
from persalign.report.units import (
    MIN_METHODS,
    MIN_POINTS,
    MIN_USERS,
    SEED,
    MetaCorrelation,
    method_of,
    too_few,
    unit_correlation,
    unit_values,
)

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
UNTRUSTED = "‡"


@dataclass(frozen=True)
class MetaEvaluation:
    """One scale's correlations (best selection metric first) over one common set."""

    rows: list[MetaCorrelation]
    units: list[str]  # the common (method, seed) units
    users: list[str]  # the common users
    left_out: list[str]  # what the common set left out, counted
    best: tuple[str, float, tuple[float, float] | None] | None  # metric, mean tau, its CI

    @property
    def methods(self) -> int:
        return len({method_of(u) for u in self.units})

    @property
    def untrusted(self) -> str | None:
        """Why this scale's CIs are not trusted (None: they are)."""
        return too_few(len(self.users), self.methods)


def metric_label(results: RunResults, key: str) -> str:
    """The report's name of a metric: LABELS, else its report column's label, else the key."""
    if key in LABELS:
        return LABELS[key]
    return next((c.label for c in results.columns if c.key == key), key)


def present(results: RunResults, benchmark: str, keys: tuple[str, ...]) -> list[str]:
    """The keys that some cell of the benchmark has a value for, in the order given."""
    have = {k for c in results.cells if c.benchmark == benchmark for k in c.values}
    return [k for k in keys if k in have]


def common_set(
    results: RunResults, benchmark: str, policy: str, keys: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """(units, users, left out): the units with every metric of ``keys`` and the users every
    such unit has for every metric; what that leaves out, counted."""
    values = {k: unit_values(results, benchmark, policy, k, "method-seed") for k in keys}
    every = sorted(set().union(*values.values())) if values else []
    units = [u for u in every if all(u in values[k] for k in keys)]
    left_out = []
    lacking = {u: [k for k in keys if u not in values[k]] for u in every if u not in units}
    if lacking:
        named = "; ".join(f"{u} (no {', '.join(ks)})" for u, ks in lacking.items())
        left_out.append(f"{len(lacking)} unit(s) without every metric, left out: {named}")
    users: set[str] | None = None
    for k in keys:
        for u in units:
            have = {user for user, v in values[k][u].items() if math.isfinite(v)}
            users = have if users is None else users & have
    all_users = {user for k in keys for u in units for user in values[k][u]}
    common = sorted(users or ())
    if len(all_users) > len(common):
        left_out.append(
            f"{len(all_users) - len(common)} user(s) missing for some unit or metric, left out "
            f"(every correlation is over the {len(common)} common users)"
        )
    return units, common, left_out


def _score(rows: list[MetaCorrelation]) -> float:
    taus = [t for row in rows if (t := row.r()) is not None]
    return statistics.fmean(taus) if taus else -math.inf


def _mean_tau_ci(rows: list[MetaCorrelation]) -> tuple[float, float] | None:
    """95% percentile CI of the mean Kendall tau over targets, resample by resample."""
    boots = [
        np.asarray(r.result["boot"]["kendall"]) for r in rows if r.result and "boot" in r.result
    ]
    if not boots or any(b.size == 0 for b in boots):
        return None
    mean = np.nanmean(np.stack(boots), axis=0)  # [n_boot]
    mean = mean[np.isfinite(mean)]
    if not mean.size:
        return None
    lo, hi = np.percentile(mean, [2.5, 97.5])
    return float(lo), float(hi)


def meta_evaluation(
    results: RunResults, benchmark: str, n_boot: int = 1000
) -> dict[str, MetaEvaluation]:
    """Per policy, every (selection metric, target) correlation over one common set of units
    and users, best selection metric first."""
    metrics = present(results, benchmark, SELECTION)
    targets = present(results, benchmark, TARGETS)
    out = {}
    for column in results.policies(benchmark):
        units, users, left_out = common_set(results, benchmark, column.policy, metrics + targets)
        by_metric = [
            [
                unit_correlation(results, benchmark, column.policy, m, t, n_boot,
                                 keep_units=set(units), keep_users=set(users), keep_boot=True)
                for t in targets
            ]
            for m in metrics
        ]  # fmt: skip
        undefined = sum(
            int((r.result or {}).get("boot_undefined") or 0) for rs in by_metric for r in rs
        )
        if undefined:
            left_out.append(
                f"{undefined} bootstrap resample(s) with an undefined correlation (a constant "
                "metric in the resample), left out of their CIs"
            )
        ranked = sorted(range(len(metrics)), key=lambda i: (-_score(by_metric[i]), i))
        rows = [row for i in ranked for row in by_metric[i]]
        best = None
        if ranked and _score(by_metric[ranked[0]]) > -math.inf:
            top = by_metric[ranked[0]]
            best = (metrics[ranked[0]], _score(top), _mean_tau_ci(top))
        out[column.policy] = MetaEvaluation(rows, units, users, left_out, best)
    return out


def _cell(row: MetaCorrelation, statistic: str, mark: str = "") -> str:
    r = row.r(statistic)
    if r is None:
        return NA
    ci = ci_text(row.result, statistic)
    return fixed(r, 3) if ci == NA else f"{fixed(r, 3)} {ci}{mark}"


def _best_note(results: RunResults, label: str, ev: MetaEvaluation) -> str:
    if ev.untrusted:
        return (
            f"No best metric named at {label}: {ev.untrusted} ({UNTRUSTED}: every CI of this "
            f"scale; {len(ev.users)} users, {ev.methods} methods)."
        )
    if ev.best is None:
        return f"No best metric at {label}: no correlation is defined."
    metric, tau, ci = ev.best
    ci_shown = NA if ci is None else f"[{fixed(ci[0], 3)}, {fixed(ci[1], 3)}]"
    return (
        f"Best at {label}: {metric_label(results, metric)} (mean Kendall τ over the targets "
        f"{fixed(tau, 3)}, 95% CI {ci_shown}; {len(ev.units)} units of {ev.methods} methods, "
        f"{len(ev.users)} users)."
    )


def meta_evaluation_table(
    results: RunResults, benchmark: str, evaluation: Mapping[str, MetaEvaluation]
) -> Table:
    """The "Which metric predicts generation quality?" table of :func:`meta_evaluation`."""
    labels = {c.policy: c.label for c in results.policies(benchmark)}
    order = ("kendall", "spearman", "pearson")
    rows, notes = [], []
    for policy, ev in evaluation.items():
        mark = UNTRUSTED if ev.untrusted else ""
        for row in ev.rows:
            rows.append(
                [
                    labels[policy],
                    metric_label(results, row.metric),
                    metric_label(results, row.target),
                    *[_cell(row, s, mark) for s in order],
                    str(row.units),
                    str(row.users) if row.result is not None else NA,
                ]
            )
        notes.append(_best_note(results, labels[policy], ev))
        notes += [f"Left out at {labels[policy]}: {what}." for what in ev.left_out] or [
            f"Left out at {labels[policy]}: nothing (every unit has every metric and user)."
        ]
    missing = [k for k in SELECTION if k not in present(results, benchmark, SELECTION)]
    if missing:
        notes.append(f"Not in this run (plugin not registered or no value): {', '.join(missing)}.")
    if not present(results, benchmark, TARGETS):
        notes.append("No generation metric in this benchmark (decoding.generate: false).")
    n_boot = next(
        (r.result.get("n_boot") for ev in evaluation.values() for r in ev.rows if r.result), None
    )
    boot = f"{n_boot} resamples, seed {SEED}" if n_boot else "none"
    notes.append(
        f"Units: {UNITS_NOTE}, the same units and users for every metric of a scale, each unit's "
        f"value its mean over those users; -- where fewer than {MIN_POINTS} units or a constant "
        f"input. 95% CI: percentile bootstrap over users ({boot}); {UNTRUSTED}: not trusted "
        f"(fewer than {MIN_USERS} users or {MIN_METHODS} distinct methods). Best first: by the "
        "mean Kendall τ over the targets."
    )
    return Table(
        key="meta_evaluation",
        title=f"Which metric predicts generation quality? ({benchmark})",
        caption=(
            "Each selection metric against each generation metric across (reward method, seed) "
            "units at each scale, one common set of units and users per scale: Kendall τ, "
            "Spearman ρ and Pearson r with a 95% bootstrap CI over users; best selection "
            "metric first."
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
