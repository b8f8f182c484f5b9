"""Findings: the paper's conclusions restated for the run's own users, each with a verdict.

    findings = benchmark_findings(results, "pref-acl", n_boot=1000)
    findings[0].verdict, findings[0].estimate, findings[0].ci, findings[0].halving
    # ('inconclusive', 0.21, (-0.33, 0.67), 'about 12 users would halve it')
    table = findings_table(findings, "pref-acl", n_boot=1000)   # report.findings_table

Findings come from *finding sets*: functions ``(results, benchmark, n_boot) -> [Finding]``
registered with ``@register_findings("name")``; ``benchmark_findings`` runs every set in
registration order ("paper" first). A module of findings of its own (simulated users, say)
registers a set and is imported by whoever builds the report.

The "paper" set, per policy scale (docs/findings.md has the rules and their reasons):

1. RM accuracy is at most weakly related to policy accuracy (the paper: Kendall tau 0.08 to
   0.31): Kendall tau with a 95% bootstrap CI over users. *Weak* holds when the whole CI lies
   within |tau| <= WEAK_TAU (0.31, the paper's largest value), does not hold when it lies wholly
   beyond it on one side.
2. RM accuracy is decoupled from generation quality (ROUGE-1, BERTScore-F1): holds when the CI
   contains 0 and lies within |tau| <= WEAK_TAU; does not hold when the CI excludes 0.
3. ICL-RAG beats the best reward-guided method on ROUGE-1 (the paper: from 3B): the paired
   per-user difference ICL-RAG minus the best method (highest mean ROUGE-1 at that scale; ICL-RAG
   at its largest shot count), each user's value the mean over seeds; its mean over users with a
   95% percentile bootstrap CI over users. The claim is difference > 0.

Each correlation claim is stated twice, over the paper's units (methods: each method's mean over
seeds) first, then over (method, seed) units; the first is the claim's verdict (the title's
count), and each gives Kendall tau's range with one reward method left out. Any other case is
"inconclusive", and always with fewer than MIN_USERS users or, for a correlation, fewer than
MIN_METHODS distinct methods (report.units). An inconclusive finding says how many users would
halve its CI: a trusted Kendall tau's count simulated from its own users (metrics.study_size),
any other's by the 1/sqrt(n) rule, 4n.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from persalign.metrics.method_differences import MethodDifferences
from persalign.metrics.study_size import FACTORS, Resampling, users_to_meet
from persalign.report.formatting import NA, fixed
from persalign.report.meta_evaluation import metric_label
from persalign.report.results import RunResults
from persalign.report.units import (
    SEED,
    SHORT,
    MetaCorrelation,
    too_few,
    unit_correlation,
)
from persalign.report.verdicts import (
    INCONCLUSIVE,
    TAU_CI_BAR,
    decoupled_verdict,
    halving_users,
    paired_difference,
    sign_verdict,
    weak_verdict,
)

PAPER_ICL_RAG_PARAMS_M = 3000  # the paper: ICL-RAG wins from 3B parameters
FindingSet = Callable[[RunResults, str, int], list["Finding"]]
FINDING_SETS: dict[str, FindingSet] = {}


def register_findings(name: str) -> Callable[[FindingSet], FindingSet]:
    """Add a finding set to every report (``benchmark_findings`` runs them in this order)."""

    def decorate(fn: FindingSet) -> FindingSet:
        FINDING_SETS[name] = fn
        return fn

    return decorate


@dataclass(frozen=True)
class Finding:
    """One claim at one scale: the estimate, its CI, the sample sizes, the verdict and why."""

    scale: str
    claim: str
    paper: str
    statistic: str
    estimate: float | None
    ci: tuple[float, float] | None
    n: str  # the sample sizes, as shown ("10 (method, seed) units, 3 users")
    users: int
    verdict: str
    reason: str
    digits: int = 3
    units: str = NA  # what a point is ("methods", "(method, seed) units"); NA: not a correlation
    loo: str = NA  # the leave-one-method-out range of a correlation, as shown
    primary: bool = True  # the claim's verdict (False: the same claim on other units)
    left_out: list[str] = field(default_factory=list)  # what the estimate left out, counted
    bar: float | None = None  # the study's bar on the CI's width (report.sizing); None: none
    # a correlation over units: (metric label, do the units differ on it?) for its two metrics
    differences: tuple[tuple[str, MethodDifferences], ...] = ()
    # the per-user values its CI resampled: report.sizing simulates larger studies from them
    resampling: Resampling | None = field(default=None, compare=False, repr=False)

    @property
    def flat(self) -> list[str]:
        """The metrics on which the units differ by no more than noise (F <= 1)."""
        return [label for label, test in self.differences if test.flat]

    @property
    def trusted(self) -> bool:
        """Enough users (a correlation: and distinct methods) for a verdict (report.units)."""
        methods = self.differences[0][1].methods if self.differences else None
        return too_few(self.users, methods) is None

    @cached_property
    def halving(self) -> str | None:
        """Inconclusive with a CI of some width: about how many users would halve it ("about 192
        users would halve it"); None where the units do not differ on a metric (more users would
        not order them). A trusted Kendall tau's count is simulated from its own users
        (metrics.study_size, as report.sizing), any other is the 1/sqrt(n) rule's 4n."""
        if self.verdict != INCONCLUSIVE or self.ci is None or self.users <= 0 or self.flat:
            return None
        width = self.ci[1] - self.ci[0]
        if width <= 0:
            return None
        sample = self.resampling
        if sample is None or sample.statistic != "kendall" or not self.trusted:
            return f"about {halving_users(self.users)} users would halve it"
        projection = users_to_meet(sample, width / 2, FACTORS[1:], seed=SEED)
        if projection.users is None:
            return f"even {projection.tried:,} users would not halve it (simulated)"
        return f"about {projection.users:,} users would halve it (simulated)"

    @property
    def why(self) -> str:
        if self.verdict == INCONCLUSIVE and self.flat:
            return (
                f"{self.reason}; on {' and '.join(self.flat)} the methods differ by no more "
                "than noise (F <= 1), so more users like these would not decide it"
            )
        more = self.halving
        return self.reason if more is None else f"{self.reason}; {more}"


def loo_text(mc: MetaCorrelation) -> str:
    """ "-0.06 to 0.45 (most: without p-dpo, 0.45)": Kendall tau with each method left out."""
    span = mc.loo_range()
    if span is None:
        return NA
    lo, hi, moved = span
    return (
        f"{fixed(lo, 3)} to {fixed(hi, 3)} (most moved without {moved}: {fixed(mc.loo[moved], 3)})"
    )


Rule = Callable[[tuple[float, float] | None, int, int], tuple[str, str]]
OUTSIDE_CI = (
    "the estimate lies outside its percentile CI: resampling users moves the units' means, "
    "which pulls τ towards 0 when they differ little (a biased bootstrap); the verdict reads the CI"
)


def correlation_finding(
    scale: str,
    claim: str,
    paper: str,
    mc: MetaCorrelation,
    rule: Rule,
    primary: bool,
    labels: tuple[str, str] | None = None,
) -> Finding:
    if mc.units == 0:
        verdict, reason = INCONCLUSIVE, "not measured: no method cell has both metrics"
    else:
        verdict, reason = rule(mc.ci(), mc.users, mc.methods)
    count = f"{mc.units} {SHORT[mc.kind]}" if mc.kind != "methods" else f"{mc.units} methods"
    if mc.kind != "methods":
        count += f" of {mc.methods} methods"
    notes, tau, ci = mc.left_out, mc.r(), mc.ci()
    if tau is not None and ci is not None and not ci[0] <= tau <= ci[1]:
        notes = [*notes, OUTSIDE_CI]
    return Finding(
        scale, claim, paper, "Kendall τ", tau, ci, f"{count}, {mc.users} users",
        mc.users, verdict, reason, units=SHORT[mc.kind], loo=loo_text(mc), primary=primary,
        left_out=notes, bar=TAU_CI_BAR,
        differences=tuple(zip(labels or (mc.metric, mc.target), mc.differences, strict=False)),
        resampling=mc.resampling,
    )  # fmt: skip


def _icl_rag_finding(results: RunResults, benchmark: str, policy: str, n_boot: int) -> Finding:
    column = next(c for c in results.policies(benchmark) if c.policy == policy)
    big = column.scale_params is not None and column.scale_params >= PAPER_ICL_RAG_PARAMS_M
    paper = f"ICL-RAG wins from 3B ({'this scale' if big else 'not claimed below 3B'})"
    rouge = {
        row.label: stat
        for row in results.rows(benchmark)
        if (stat := results.stat(benchmark, policy, row.label, "rouge1")) is not None
    }
    methods = [r.label for r in results.unit_rows(benchmark) if r.label in rouge]
    rags = [
        r for r in results.rows(benchmark, "baseline") if r.method == "icl-rag" and r.label in rouge
    ]
    statistic = "ROUGE-1 difference (points)"
    if not methods or not rags:
        claim = "ICL-RAG beats the best reward-guided method on ROUGE-1"
        reason = "not measured: no " + ("ICL-RAG" if methods else "reward-method") + " ROUGE-1"
        return Finding(column.label, claim, paper, statistic, None, None, "0 users", 0,
                       INCONCLUSIVE, reason, 2, units="users")  # fmt: skip
    best = max(methods, key=lambda m: rouge[m].mean)  # the first of equal means
    rag = max(rags, key=lambda r: r.shots or 0).label
    a = results.per_user(benchmark, policy, rag, "rouge1")
    b = results.per_user(benchmark, policy, best, "rouge1")
    mean, ci, n = paired_difference(a, b, n_boot)
    unpaired = len(a.keys() ^ b.keys())
    verdict, reason = sign_verdict(ci, n)
    return Finding(
        column.label,
        f"ICL-RAG ({rag}) beats the best reward-guided method ({best}) on ROUGE-1",
        paper,
        statistic,
        None if mean is None else 100 * mean,
        None if ci is None else (100 * ci[0], 100 * ci[1]),
        f"{n} paired users",
        n,
        verdict,
        reason,
        2,
        units="users",
        left_out=[f"{unpaired} user(s) with ROUGE-1 for only one side, left out"]
        if unpaired
        else [],
    )


CORRELATION_CLAIMS = (
    ("policy_accuracy", "RM accuracy is at most weakly related to policy accuracy",
     "weak: Kendall τ 0.08 to 0.31", weak_verdict),
    ("rouge1", "RM accuracy is decoupled from ROUGE-1", "decoupled", decoupled_verdict),
    ("bertscore_f1", "RM accuracy is decoupled from BERTScore-F1", "decoupled",
     decoupled_verdict),
)  # fmt: skip


@register_findings("paper")
def paper_findings(results: RunResults, benchmark: str, n_boot: int = 1000) -> list[Finding]:
    """The paper's claims at every policy scale (smallest first): each correlation over methods
    (the verdict) and over (method, seed) units (where a method has several seeds); then ICL-RAG
    against the best method."""
    out = []
    for column in results.policies(benchmark):
        for target, claim, paper, rule in CORRELATION_CLAIMS:
            for units in ("methods", "method-seed"):
                mc = unit_correlation(
                    results, benchmark, column.policy, "rm_accuracy", target, n_boot, units
                )
                primary = units == "methods"
                if not primary and mc.units == mc.methods:
                    continue  # one seed: the (method, seed) units are the methods row again
                labels = (metric_label(results, "rm_accuracy"), metric_label(results, target))
                finding = correlation_finding(column.label, claim, paper, mc, rule, primary, labels)
                out.append(finding)
        out.append(_icl_rag_finding(results, benchmark, column.policy, n_boot))
    return out


def benchmark_findings(results: RunResults, benchmark: str, n_boot: int = 1000) -> list[Finding]:
    """Every registered finding set's findings for one benchmark, in registration order."""
    return [f for fn in FINDING_SETS.values() for f in fn(results, benchmark, n_boot)]
