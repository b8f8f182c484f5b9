"""How many users would decide: each verdict's CI against the study's decision bar, whether the
methods differ at all on each metric, and the users a study like this run would need.

    table = sizing_table(results, "sim", findings, n_boot=1000)     # key "study_sizing" (or None)
    test = method_differences(values)      # values: [methods, users] of one metric
    test.f, test.p, test.kept              # 0.62, 0.79, 0.0: the methods do not differ here

The bars (docs/simulated-users.md, the simulated-users study): every Kendall tau verdict's 95% CI
at most TAU_CI_BAR (0.30) wide, and ICL-RAG's difference from the best method on true gain with a
CI at most ORACLE_SHARE_BAR (a quarter) of the oracle's gain.

**Do the methods differ?** A correlation over methods needs methods that differ on both metrics.
``method_differences`` is the two-way ANOVA without replication on the methods x users values
(each user's effect removed, as resampling users moves every method alike): F = MS_methods /
MS_residual with (m - 1, (m - 1)(n - 1)) degrees of freedom, its p-value (H0: every method has
the same mean), and ``kept = max(0, 1 - 1/F)``, the share of the spread of the methods' means
that is not sampling noise (the moment estimate). Kept 0 (F <= 1): the methods' means spread no
more than noise alone would spread them, so there is no order of the methods to predict, and
no number of users like these is projected to decide a Kendall tau on that metric.

**Users to meet a bar.** A mean's CI narrows as 1/sqrt(n): n (width / bar)^2 users. For a
Kendall tau this is optimistic while the methods' means are close to each other: a tau over
methods narrows more slowly until enough users order them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from persalign.metrics.correlation import aligned_matrices
from persalign.report.findings import Finding
from persalign.report.formatting import NA, fixed
from persalign.report.meta_evaluation import metric_label
from persalign.report.results import RunResults
from persalign.report.tabular import Table
from persalign.report.units import unit_values

TAU_CI_BAR = 0.30  # a Kendall tau verdict's 95% CI at most this wide
ORACLE_SHARE_BAR = 0.25  # ICL-RAG's difference: a CI at most this share of the oracle's gain
KENDALL = "Kendall τ"
ICL_RAG_TRUE = "true reward difference"  # the sim finding ICL-RAG vs the best method
ORACLE_GAIN = "true gain"  # the sim finding the oracle vs zero-shot


@dataclass(frozen=True)
class MethodDifferences:
    """Do the methods' means differ beyond noise? (two-way ANOVA, methods x users)"""

    f: float  # MS_methods / MS_residual (inf: no residual noise)
    p: float  # P(F >= f) if every method had the same mean
    kept: float  # the share of the methods' spread that is not noise: max(0, 1 - 1/F)
    methods: int
    users: int

    @property
    def text(self) -> str:
        f = "inf" if math.isinf(self.f) else fixed(self.f, 2)
        return f"F {f}, p {'< 0.001' if self.p < 0.001 else fixed(self.p, 3)}"


def method_differences(values: np.ndarray) -> MethodDifferences:
    """[methods, users] values of one metric -> the ANOVA test that the methods differ."""
    methods, users = values.shape
    if methods < 2 or users < 2:
        raise ValueError(f"need at least 2 methods and 2 users, got {methods} x {users}")
    means = values.mean(axis=1)  # [methods]
    residual = values - means[:, None] - values.mean(axis=0)[None, :] + values.mean()
    df_methods, df_residual = methods - 1, (methods - 1) * (users - 1)
    ms_methods = users * float(((means - means.mean()) ** 2).sum()) / df_methods
    ms_residual = float((residual**2).sum()) / df_residual
    tiny = 1e-12 * (float(np.square(values - values.mean()).mean()) or 1.0)  # float rounding
    if ms_residual <= tiny:  # no noise at all: the methods differ exactly, or not at all
        differ = ms_methods > tiny
        f = math.inf if differ else 0.0
        return MethodDifferences(f, 0.0 if differ else 1.0, float(differ), methods, users)
    f = ms_methods / ms_residual
    p = float(stats.f.sf(f, df_methods, df_residual))
    return MethodDifferences(f, p, max(0.0, 1.0 - 1.0 / f) if f > 0 else 0.0, methods, users)


def users_for_width(users: int, width: float, bar: float) -> int:
    """Users whose CI would be ``bar`` wide, if it narrows as 1/sqrt(n) from ``width``."""
    return max(users, math.ceil(users * (width / bar) ** 2))


@dataclass(frozen=True)
class Sizing:
    """One verdict: its CI width now, its bar, the methods' tests and what would meet the bar."""

    finding: Finding
    width: float
    bar: float
    tests: tuple[tuple[str, MethodDifferences], ...] = ()  # (metric label, test) of a tau

    @property
    def met(self) -> bool:
        return self.width <= self.bar

    @property
    def users_text(self) -> str:
        users = self.finding.users
        if self.met:
            return f"met with {users} users"
        if self.bar <= 0:
            return "no bar: the oracle gains nothing over zero-shot"
        flat = [label for label, test in self.tests if test.kept == 0.0]
        if flat:
            return (
                f"none projected: on {' and '.join(flat)} the methods differ by no more than "
                "noise (F <= 1)"
            )
        needed = users_for_width(users, self.width, self.bar)
        more = "; more while the methods are close" if self.tests else ""
        return f"about {needed:,} ({needed / users:.1f}x, by 1/sqrt(n){more})"


def _tests(
    results: RunResults, benchmark: str, policy: str, inputs: tuple[str, ...]
) -> tuple[tuple[str, MethodDifferences], ...]:
    a, b = (unit_values(results, benchmark, policy, metric, "methods") for metric in inputs)
    methods, users, am, bm, _ = aligned_matrices(a, b)  # [methods, users] each
    if len(methods) < 2 or len(users) < 2:
        return ()
    labels = [metric_label(results, metric) for metric in inputs]
    return tuple(zip(labels, (method_differences(am), method_differences(bm)), strict=True))


def sizings(results: RunResults, benchmark: str, findings: Sequence[Finding]) -> list[Sizing]:
    """Every verdict with a bar and a CI: the Kendall tau verdicts (over methods), and on a sim
    benchmark ICL-RAG against the best method on true gain."""
    policies = {c.label: c.policy for c in results.policies(benchmark)}
    oracle = {f.scale: f.estimate for f in findings if f.statistic == ORACLE_GAIN}
    out = []
    for f in findings:
        if not f.primary or f.ci is None or len(f.inputs) != 2 or f.scale not in policies:
            continue
        width = f.ci[1] - f.ci[0]
        if f.statistic == KENDALL:
            tests = _tests(results, benchmark, policies[f.scale], f.inputs)
            out.append(Sizing(f, width, TAU_CI_BAR, tests))
        elif f.statistic == ICL_RAG_TRUE and oracle.get(f.scale) is not None:
            out.append(Sizing(f, width, ORACLE_SHARE_BAR * max(0.0, oracle[f.scale] or 0.0)))
    return out


COLUMNS = ["Scale", "Claim", "CI width", "Bar", "Methods differ on x?", "On y?",
           "Users to meet the bar"]  # fmt: skip


def _row(s: Sizing) -> list[str]:
    cells = [s.finding.scale, s.finding.claim, fixed(s.width, 3), fixed(s.bar, 3)]
    return [*cells, _test_cell(s, 0), _test_cell(s, 1), s.users_text]


def _test_cell(sizing: Sizing, index: int) -> str:
    if len(sizing.tests) <= index:
        return NA
    label, test = sizing.tests[index]
    return f"{label}: {test.text}"


def sizing_table(
    results: RunResults, benchmark: str, findings: Sequence[Finding], n_boot: int
) -> Table | None:
    """The verdicts with a decision bar: CI width, bar, whether the methods differ on each
    metric, and the users that would meet the bar; None without one (or without a bootstrap)."""
    rows = sizings(results, benchmark, findings) if n_boot > 0 else []
    if not rows:
        return None
    met = sum(s.met for s in rows)
    return Table(
        key="study_sizing",
        title=f"How many users would decide on {benchmark}: {met} of {len(rows)} CIs within "
        "their bar",
        caption=(
            f"Each verdict with a decision bar: a Kendall τ over methods needs a 95% CI at most "
            f"{TAU_CI_BAR:g} wide"
            + (
                f"; ICL-RAG against the best method on true gain, a CI at most "
                f"{ORACLE_SHARE_BAR:g} of the oracle's gain"
                if any(not s.tests for s in rows)
                else ""
            )
            + ". A correlation over methods also needs methods that differ on both of its "
            "metrics: the F test beside it says whether they do."
        ),
        columns=COLUMNS,
        rows=[_row(s) for s in rows],
        notes=[
            "Methods differ: two-way ANOVA on the methods x users values (each method's mean "
            "over seeds per user; each user's effect removed), F = MS_methods / MS_residual and "
            "its p-value under equal means. F <= 1: the methods' means spread no more than "
            "noise would, so no number of users like these is projected to order them.",
            "Users: a CI narrows as 1/sqrt(users), n (width / bar)^2; for a Kendall τ that is "
            "optimistic while the methods are close. Rules: docs/findings.md.",
        ],
    )
