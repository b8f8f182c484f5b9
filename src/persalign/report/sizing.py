"""How many users would decide: each verdict's CI against the study's decision bar, whether the
methods differ at all on each metric, and the users a study like this run would need.

    table = sizing_table(findings, "sim", n_boot=1000, cell_seconds=4373.0)  # "study_sizing"
    sizings(findings)[0].users_text                         # "none projected: on ... (F <= 1)"

The bars (docs/simulated-users.md, the simulated-users study; report.verdicts): every Kendall tau
verdict's 95% CI at most TAU_CI_BAR (0.30) wide, and ICL-RAG's difference from the best method on
true gain with a CI at most ORACLE_SHARE_BAR (a quarter) of the oracle's gain. Each finding
carries its own bar (``Finding.bar``, set where the finding is made).

**Do the methods differ?** A correlation over methods needs methods that differ on both metrics:
each Kendall verdict carries metrics.method_differences' test of each of its metrics (the
findings compute it with the correlation). F <= 1 (``flat``): the methods' means spread no more
than noise would, so no number of users like these is projected to decide it.

**Users to meet a bar.** Simulated (metrics.study_size): studies of 1.5x, 2x, 3x, ... up to 32x
the users are drawn from the run's own users (for a Kendall tau, the methods' means first
pulled together by the share of their spread that is noise), each bootstrapped as the report
does, and the fewest users whose median CI width is within the bar are shown, beside the
1/sqrt(n) rule's
n (width / bar)^2. The rule is right for a mean (ICL-RAG's difference) and optimistic for a
Kendall tau over methods whose means are close: such a CI narrows more slowly until enough users
order them, which only the simulation sees. A finding without its per-user values falls back to
the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from persalign.metrics.method_differences import MethodDifferences
from persalign.metrics.study_size import DRAWS, FACTORS, Projection, users_to_meet
from persalign.report.findings import Finding
from persalign.report.formatting import NA, fixed
from persalign.report.tabular import Table
from persalign.report.units import SEED
from persalign.report.verdicts import ORACLE_SHARE_BAR, TAU_CI_BAR


def users_for_width(users: int, width: float, bar: float) -> int:
    """Users whose CI would be ``bar`` wide, if it narrows as 1/sqrt(n) from ``width``."""
    return max(users, math.ceil(users * (width / bar) ** 2))


def hours(seconds: float) -> str:
    """ "19.4 h", "52 min": a wall time as read in a table."""
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def times(users: int, base: int) -> str:
    """ "16x", "1.5x": how many times the run's users."""
    return f"{round(users / base, 1):g}x"


@dataclass(frozen=True)
class Sizing:
    """One verdict with a bar (``Finding.bar``): its CI width, the methods' tests (a Kendall tau:
    ``Finding.differences``) and what would meet the bar."""

    finding: Finding
    n_boot: int = 400  # resamples per simulated study (report.sizing: the report's, at most 400)
    cell_seconds: float | None = None  # the run's cells' wall time on this benchmark, summed

    @property
    def width(self) -> float:
        lo, hi = self.finding.ci or (0.0, 0.0)
        return hi - lo

    @property
    def bar(self) -> float:
        return self.finding.bar or 0.0

    @property
    def tests(self) -> tuple[tuple[str, MethodDifferences], ...]:
        return self.finding.differences

    @property
    def met(self) -> bool:
        return self.width <= self.bar

    @property
    def rule(self) -> int:
        """Users the 1/sqrt(n) rule says would meet the bar."""
        return users_for_width(self.finding.users, self.width, self.bar)

    @property
    def needed(self) -> tuple[str, int] | None:
        """("about", n) users that would meet the bar, or ("more than", n) when no size tried
        did; None when it is met, there is no bar, or the methods do not differ (flat)."""
        if self.met or self.bar <= 0 or self.finding.flat:
            return None
        projection = self.projection
        if projection is None:  # no per-user values: the rule
            return "about", self.rule
        if projection.users is None:
            return "more than", projection.tried
        return "about", projection.users

    @property
    def users_text(self) -> str:
        users = self.finding.users
        if self.met:
            return f"met with {users} users"
        if self.bar <= 0:
            return "no bar: the oracle gains nothing over zero-shot"
        flat = self.finding.flat
        if flat:
            return (
                f"none projected: on {' and '.join(flat)} the methods differ by no more than "
                "noise (F <= 1)"
            )
        projection, rule = self.projection, self.rule
        if projection is None:
            more = "; more while the methods are close" if self.tests else ""
            return f"about {rule:,} ({rule / users:.1f}x, by 1/sqrt(n){more})"
        word, count = self.needed  # not None: met, no bar and flat returned above
        there = " there" if projection.users is None else ""
        return (
            f"{word} {count:,} ({times(count, users)}, simulated: median CI width "
            f"{fixed(projection.width, 3)}{there}; 1/sqrt(n) says {rule:,})"
        )

    @property
    def time_text(self) -> str:
        """The run's cell time at the projected size: it grows with the users the cells decode
        and score for ("about 19.4 h (this run: 1.2 h)"); NA without cell times or a size."""
        if not self.cell_seconds or self.finding.users <= 0:
            return NA
        now = f"this run: {hours(self.cell_seconds)}"
        if self.met:
            return now
        if self.needed is None:
            return NA  # no size is projected
        word, count = self.needed
        return f"{word} {hours(self.cell_seconds * count / self.finding.users)} ({now})"

    @cached_property
    def projection(self) -> Projection | None:
        """Studies of more users simulated from this run's (None without its per-user values)."""
        sample = self.finding.resampling
        if sample is None or self.met or self.bar <= 0 or self.finding.flat:
            return None
        return users_to_meet(sample, self.bar, FACTORS[1:], n_boot=self.n_boot, seed=SEED)


def sizings(
    findings: Sequence[Finding], n_boot: int = 400, cell_seconds: float | None = None
) -> list[Sizing]:
    """Every verdict with a bar and a CI (the Kendall tau verdicts over methods; on a sim
    benchmark ICL-RAG against the best method on true gain); none with fewer users (or methods)
    than a verdict needs."""
    out = []
    for f in findings:
        if not f.primary or f.ci is None or f.bar is None:
            continue
        if f.trusted:  # else no verdict: the findings say what it needs
            out.append(Sizing(f, min(n_boot, 400), cell_seconds))
    return out


COLUMNS = ["Scale", "Claim", "CI width", "Bar", "Methods differ on x?", "On y?",
           "Users to meet the bar", "Cell time at that size"]  # fmt: skip


def _row(s: Sizing) -> list[str]:
    cells = [s.finding.scale, s.finding.claim, fixed(s.width, 3), fixed(s.bar, 3)]
    return [*cells, _test_cell(s, 0), _test_cell(s, 1), s.users_text, s.time_text]


def _test_cell(sizing: Sizing, index: int) -> str:
    if len(sizing.tests) <= index:
        return NA
    label, test = sizing.tests[index]
    return f"{label}: {test.text}"


def sizing_table(
    findings: Sequence[Finding], benchmark: str, n_boot: int, cell_seconds: float | None = None
) -> Table | None:
    """The verdicts with a decision bar: CI width, bar, whether the methods differ on each
    metric, the users that would meet the bar and the run's cell time at that size
    (``cell_seconds``: its cells' wall time on the benchmark); None without a verdict with a bar
    (or without a bootstrap)."""
    rows = sizings(findings, n_boot, cell_seconds) if n_boot > 0 else []
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
            f"Users: the fewest of {', '.join(f'{f:g}x' for f in FACTORS[1:])} this run's "
            f"users whose simulated studies ({DRAWS} drawn from this run's users with "
            "replacement, each bootstrapped as here; for a Kendall τ the methods' means first "
            "pulled together by sqrt(1 - 1/F), so that noise does not order them) have a median "
            "CI width within the bar; "
            "beside it the "
            "1/sqrt(n) rule, n (width / bar)^2, which is optimistic for a Kendall τ while the "
            "methods are close. Rules: docs/findings.md.",
            "Cell time: this run's cells' wall time on this benchmark (each cell's "
            "metrics.json seconds, summed) times the users needed over this run's users, since "
            "cells decode and score for each user; model training, which does not grow with "
            "the adaptation users, is not in it. Jobs run side by side divide it.",
        ],
    )
