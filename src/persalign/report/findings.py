"""Findings: the paper's conclusions restated for the run's own users, each with a verdict.

    findings = benchmark_findings(results, "pref-acl", n_boot=1000)
    findings[0].verdict, findings[0].estimate, findings[0].ci, findings[0].users_to_halve
    # ('inconclusive', 0.21, (-0.33, 0.67), 12)
    table = findings_table(findings, "pref-acl")          # key "findings"

Per policy scale, three claims of the paper (docs/findings.md has the rules and their reasons):

1. RM accuracy is at most weakly related to policy accuracy (the paper: Kendall tau 0.08 to
   0.31): Kendall tau over (reward method, seed) units, 95% bootstrap CI over users (as in
   report.meta_evaluation); the claim is |tau| < WEAK_TAU.
2. RM accuracy is decoupled from generation quality (ROUGE-1, BERTScore-F1): the same, per target.
3. ICL-RAG beats the best reward-guided method on ROUGE-1 (the paper: from 3B): the paired
   per-user difference ICL-RAG minus the best method (highest mean ROUGE-1 at that scale; ICL-RAG
   at its largest shot count), each user's value the mean over seeds; its mean over users with a
   95% percentile bootstrap CI over users. The claim is difference > 0.

Verdicts: "holds" when the CI lies wholly where the claim says, "does not hold" when it lies
wholly on the other side, "inconclusive" otherwise, and always with fewer than MIN_USERS users
(or, for a correlation, fewer than MIN_UNITS units): a bootstrap over a handful of users gives a
CI too narrow to trust. An inconclusive finding says how many users would halve its CI (the width
scales as 1/sqrt(n), so 4n).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from persalign.report.formatting import NA, fixed
from persalign.report.meta_evaluation import SEED, MetaCorrelation, unit_correlation
from persalign.report.results import RunResults
from persalign.report.tabular import Table

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
WEAK_TAU = 0.5  # |tau| below this is "weak" (tau = 0.5 is Pearson r ~ 0.71 for a normal pair)
MIN_USERS = 10  # fewer users: no verdict
MIN_UNITS = 5  # fewer (method, seed) units: no verdict on a correlation
CONFIDENCE = 0.95
PAPER_ICL_RAG_PARAMS_M = 3000  # the paper: ICL-RAG wins from 3B parameters
COLUMNS = ["Scale", "Claim", "Paper", "Statistic", "Estimate", "95% CI", "n", "Verdict", "Why"]


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

    @property
    def users_to_halve(self) -> int | None:
        """Inconclusive with a CI of some width: about how many users would halve it."""
        if self.verdict != INCONCLUSIVE or self.ci is None or self.users <= 0:
            return None
        return halving_users(self.users) if self.ci[1] > self.ci[0] else None

    @property
    def why(self) -> str:
        more = self.users_to_halve
        return self.reason if more is None else f"{self.reason}; about {more} users would halve it"


def halving_users(n: int) -> int:
    """CI width ~ 1/sqrt(n): halving it takes n * (w / (w / 2))^2 = 4n users."""
    return 4 * n


def _too_few(users: int, units: int | None = None) -> str | None:
    if users < MIN_USERS:
        return f"only {users} users (a verdict needs at least {MIN_USERS}): the CI is not trusted"
    if units is not None and units < MIN_UNITS:
        return f"only {units} units (a verdict needs at least {MIN_UNITS})"
    return None


def band_verdict(
    ci: tuple[float, float] | None, users: int, units: int, bound: float = WEAK_TAU
) -> tuple[str, str]:
    """The claim |tau| < bound: (verdict, reason)."""
    if ci is None:
        return INCONCLUSIVE, "no CI (too few units, a constant metric, or --bootstrap 0)"
    too_few = _too_few(users, units)
    if too_few:
        return INCONCLUSIVE, too_few
    lo, hi = ci
    if -bound < lo and hi < bound:
        return HOLDS, f"the CI lies inside (-{bound:g}, {bound:g})"
    if lo >= bound or hi <= -bound:
        return FAILS, f"the CI lies outside (-{bound:g}, {bound:g})"
    return INCONCLUSIVE, f"the CI crosses ±{bound:g}"


def sign_verdict(ci: tuple[float, float] | None, users: int) -> tuple[str, str]:
    """The claim difference > 0: (verdict, reason)."""
    if ci is None:
        return INCONCLUSIVE, "no CI (no paired users, or --bootstrap 0)"
    too_few = _too_few(users)
    if too_few:
        return INCONCLUSIVE, too_few
    if ci[0] > 0:
        return HOLDS, "the CI lies above 0"
    if ci[1] < 0:
        return FAILS, "the CI lies below 0"
    return INCONCLUSIVE, "the CI contains 0"


def paired_difference(
    a: Mapping[str, float], b: Mapping[str, float], n_boot: int, seed: int = SEED
) -> tuple[float | None, tuple[float, float] | None, int]:
    """Mean over the common users of a - b, its percentile bootstrap CI over users, and n."""
    users = sorted(a.keys() & b.keys())
    if not users:
        return None, None, 0
    d = np.array([a[u] - b[u] for u in users], dtype=float)  # [n]
    if n_boot <= 0:
        return float(d.mean()), None, len(users)
    rng = np.random.default_rng(seed)
    n = len(users)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)  # [n_boot, n]
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(counts @ d / n, [tail, 100 - tail])
    return float(d.mean()), (float(lo), float(hi)), n


def _correlation_finding(scale: str, claim: str, paper: str, mc: MetaCorrelation) -> Finding:
    if mc.units == 0:
        verdict, reason = INCONCLUSIVE, "not measured: no method cell has both metrics"
    else:
        verdict, reason = band_verdict(mc.ci(), mc.users, mc.units)
    return Finding(
        scale, claim, paper, "Kendall τ", mc.r(), mc.ci(),
        f"{mc.units} (method, seed) units, {mc.users} users", mc.users, verdict, reason,
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
    methods = [r.label for r in results.rows(benchmark, "method") if r.label in rouge]
    rags = [
        r for r in results.rows(benchmark, "baseline") if r.method == "icl-rag" and r.label in rouge
    ]
    statistic = "ROUGE-1 difference (points)"
    if not methods or not rags:
        claim = "ICL-RAG beats the best reward-guided method on ROUGE-1"
        reason = "not measured: no " + ("ICL-RAG" if methods else "reward-method") + " ROUGE-1"
        return Finding(column.label, claim, paper, statistic, None, None, "0 users", 0,
                       INCONCLUSIVE, reason, 2)  # fmt: skip
    best = max(methods, key=lambda m: rouge[m].mean)  # the first of equal means
    rag = max(rags, key=lambda r: r.shots or 0).label
    mean, ci, n = paired_difference(
        results.per_user(benchmark, policy, rag, "rouge1"),
        results.per_user(benchmark, policy, best, "rouge1"),
        n_boot,
    )
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
    )


def benchmark_findings(results: RunResults, benchmark: str, n_boot: int = 1000) -> list[Finding]:
    """Every finding of one benchmark, per policy scale (smallest first)."""
    out = []
    for column in results.policies(benchmark):
        policy = column.policy
        mc = unit_correlation(results, benchmark, policy, "rm_accuracy", "policy_accuracy", n_boot)
        out.append(
            _correlation_finding(
                column.label,
                f"RM accuracy is at most weakly related to policy accuracy (|τ| < {WEAK_TAU:g})",
                "weak: Kendall τ 0.08 to 0.31",
                mc,
            )
        )
        for target, label in (("rouge1", "ROUGE-1"), ("bertscore_f1", "BERTScore-F1")):
            mc = unit_correlation(results, benchmark, policy, "rm_accuracy", target, n_boot)
            out.append(
                _correlation_finding(
                    column.label,
                    f"RM accuracy is decoupled from {label} (|τ| < {WEAK_TAU:g})",
                    "decoupled",
                    mc,
                )
            )
        out.append(_icl_rag_finding(results, benchmark, policy, n_boot))
    return out


def summary(findings: list[Finding]) -> str:
    """ "holds: 1, does not hold: 0, inconclusive: 7" """
    counts = Counter(f.verdict for f in findings)
    return ", ".join(f"{verdict}: {counts[verdict]}" for verdict in (HOLDS, FAILS, INCONCLUSIVE))


def _value(value: float | None, digits: int) -> str:
    return NA if value is None else fixed(value, digits)


def findings_table(findings: list[Finding], benchmark: str, n_boot: int) -> Table:
    rows = [
        [
            f.scale,
            f.claim,
            f.paper,
            f.statistic,
            _value(f.estimate, f.digits),
            NA if f.ci is None else f"[{fixed(f.ci[0], f.digits)}, {fixed(f.ci[1], f.digits)}]",
            f.n,
            f.verdict,
            f.why,
        ]
        for f in findings
    ]
    boot = f"{n_boot} resamples, seed {SEED}" if n_boot > 0 else "none (--bootstrap 0)"
    return Table(
        key="findings",
        title=f"Findings on {benchmark}: {summary(findings)}",
        caption=(
            "The paper's conclusions tested on this run's users, per policy scale, with a 95% "
            f"percentile bootstrap CI over users ({boot})."
        ),
        columns=COLUMNS,
        rows=rows,
        notes=[
            f"holds: the whole CI on the claimed side (|τ| < {WEAK_TAU:g}; difference > 0); "
            "does not hold: the whole CI on the other side; inconclusive: otherwise, or fewer "
            f"than {MIN_USERS} users (correlations: or fewer than {MIN_UNITS} units). The CI "
            "width scales as 1/sqrt(users): about 4x the users halve it. Rules: docs/findings.md.",
            "Correlations: Kendall τ-b over (reward method, seed) units, each unit's value its "
            "mean over the users both metrics have (as in the meta-evaluation table). ICL-RAG: "
            "its largest shot count; the best reward-guided method: the highest mean ROUGE-1 at "
            "that scale (chosen on the same data, which favours it); per-user values are means "
            "over seeds; the difference is in ROUGE-1 points (x 100).",
        ],
    )
