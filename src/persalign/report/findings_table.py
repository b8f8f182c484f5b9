"""The findings table: every finding of a benchmark with its verdict, and the count in the title.

    table = findings_table(benchmark_findings(results, "pref-acl"), "pref-acl", n_boot=1000)
    summary(findings)          # "holds: 1, does not hold: 0, inconclusive: 7" (primary rows)

Rows in the findings' order (report.findings: the paper's set, then any registered set); a
correlation claim's (method, seed) row follows its methods row as "(same claim, ...)". Under the
table: the decision rules, what leave-one-method-out means, and what each estimate left out.
"""

from __future__ import annotations

from collections import Counter

from persalign.report.findings import Finding
from persalign.report.formatting import NA, fixed
from persalign.report.tabular import Table
from persalign.report.units import MIN_METHODS, MIN_USERS, SEED
from persalign.report.verdicts import FAILS, HOLDS, INCONCLUSIVE, WEAK_TAU

COLUMNS = ["Scale", "Claim", "Paper", "Statistic", "Units", "Estimate", "95% CI", "n",
           "Leave one method out", "Verdict", "Why"]  # fmt: skip
VERDICT_UNITS = "(verdicts over methods, as in the paper)"


def summary(findings: list[Finding]) -> str:
    """ "holds: 1, does not hold: 0, inconclusive: 7" over the claims' verdicts (primary rows)."""
    counts = Counter(f.verdict for f in findings if f.primary)
    return ", ".join(f"{verdict}: {counts[verdict]}" for verdict in (HOLDS, FAILS, INCONCLUSIVE))


def _value(value: float | None, digits: int) -> str:
    return NA if value is None else fixed(value, digits)


def _left_out_notes(findings: list[Finding]) -> list[str]:
    notes = []
    for f in findings:
        for what in f.left_out:
            notes.append(f"{f.scale}, {f.claim} ({f.units}): {what}.")
    return notes or ["Left out: nothing (every unit had every user, every resample was defined)."]


def findings_table(findings: list[Finding], benchmark: str, n_boot: int) -> Table:
    rows = [
        [
            f.scale,
            f.claim if f.primary else f"(same claim, {f.units})",
            f.paper,
            f.statistic,
            f.units,
            _value(f.estimate, f.digits),
            NA if f.ci is None else f"[{fixed(f.ci[0], f.digits)}, {fixed(f.ci[1], f.digits)}]",
            f.n,
            f.loo,
            f.verdict,
            f.why,
        ]
        for f in findings
    ]
    boot = f"{n_boot} resamples, seed {SEED}" if n_boot > 0 else "none (--bootstrap 0)"
    return Table(
        key="findings",
        title=f"Findings on {benchmark}: {summary(findings)} {VERDICT_UNITS}",
        caption=(
            "The paper's conclusions tested on this run's users, per policy scale, with a 95% "
            f"percentile bootstrap CI over users ({boot}). Correlations over methods (each "
            "method's mean over seeds, the paper's units: the claim's verdict)"
            + (
                " and, on the next row, over (method, seed) units."
                if any(not f.primary for f in findings)
                else " (one seed per method: no (method, seed) row)."
            )
        ),
        columns=COLUMNS,
        rows=rows,
        notes=[
            f"weak holds: the whole CI within |τ| <= {WEAK_TAU:g} (the paper's largest value); "
            f"does not hold: the whole CI beyond it on one side. decoupled holds: the CI "
            f"contains 0 and lies within |τ| <= {WEAK_TAU:g}; does not hold: the CI excludes 0. "
            "ICL-RAG: holds above 0, does not hold below. Inconclusive: otherwise, or fewer than "
            f"{MIN_USERS} users (correlations: or fewer than {MIN_METHODS} distinct reward "
            "methods). Users to halve a CI: a Kendall τ's simulated from its own users (its "
            "methods' means pulled together by their noise share, as study_sizing), any other's "
            "4x (the width scales as 1/sqrt(users)); none where a correlation's methods do not "
            "differ on one of its metrics (F <= 1). Rules: docs/findings.md.",
            "Leave one method out: Kendall τ with each reward method's points removed, lowest "
            "to highest, and the method whose removal moves it most. Correlation units name "
            "their points; each unit's value is its mean over the users both metrics have. "
            "ICL-RAG: its largest shot count; the best reward-guided method: the highest mean "
            "ROUGE-1 at that scale (chosen on the same data, which favours it); per-user values "
            "are means over seeds; the difference is in ROUGE-1 points (x 100).",
            *_left_out_notes(findings),
        ],
    )
