"""Does the report's sizing predict? Project a run's CI widths from half its users and compare
with what all of them gave (prints one JSON object).

    python benchmarks/check_sizing.py runs/v6/study-sim                 # the sim study
    python benchmarks/check_sizing.py runs/v6/study-sim --halves 20 --benchmark sim

The report's ``study_sizing`` table projects how many users would meet a bar, by simulating
larger studies from the run's own users (``metrics.study_size``) and, beside it, by the
1/sqrt(n) rule. Both can be checked on a finished run: for each finding with a bar (the Kendall
τ verdicts over methods and ICL-RAG against the best method; the same findings the table sizes),
draw ``--halves`` random halves of its users, and from each half project the CI width at the
full number of users: by the report's simulation (the median over studies of n drawn from the
half, the methods' means first pulled together by their noise share), by the same without the
pull, and by the rule (the half's own bootstrap CI width times sqrt(1/2)). The target is the CI
width the report gives with every user (its percentile bootstrap, 1000 resamples, seed 0).

Per finding: the target, each projection's median over halves, and over the findings each
projection's mean absolute error and how often it underestimates the target (an optimistic
projection says too few users).
"""

from __future__ import annotations

import argparse
import json
import math
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="A run folder with a report's inputs (cells/).")
    parser.add_argument("--benchmark", default=None, help="Default: the run's only benchmark.")
    parser.add_argument("--halves", type=int, default=10, help="Random halves per finding.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np

    from persalign.logs import setup_logging
    from persalign.metrics.study_size import Resampling, ci_width, simulated_ci_width
    from persalign.report.findings import benchmark_findings
    from persalign.report.reading import load_run
    from persalign.report.sim_findings import sim_findings
    from persalign.report.sizing import sizings

    setup_logging(0)
    started = time.perf_counter()
    results = load_run(args.run)
    benchmarks = results.benchmarks()
    benchmark = args.benchmark or (benchmarks[0] if len(benchmarks) == 1 else None)
    if benchmark not in benchmarks:
        raise SystemExit(f"--benchmark: choose one of {', '.join(benchmarks)}")
    rng = np.random.default_rng(args.seed)
    rows = []
    findings = sim_findings(results, benchmark) + benchmark_findings(results, benchmark)
    for sizing in sizings(findings):  # as the report's study_sizing table
        sample = sizing.finding.resampling
        if sample is None:
            continue
        users = sample.users
        simulated, unpulled, rule = [], [], []
        for h in range(args.halves):
            half = np.sort(rng.choice(users, size=users // 2, replace=False))
            part = Resampling(tuple(s[:, half] for s in sample.samples), sample.statistic)
            plain = Resampling(part.samples, part.statistic, shrink=False)
            simulated.append(simulated_ci_width(part, users, seed=args.seed + h))
            unpulled.append(simulated_ci_width(plain, users, seed=args.seed + h))
            own = ci_width(part, np.ones(part.users), 1000, rng)  # the half's own CI width
            rule.append(own * math.sqrt((users // 2) / users))
        rows.append({
            "claim": sizing.finding.claim,
            "users": users,
            "target_width": round(sizing.width, 4),
            "simulated_from_half": round(float(np.nanmedian(simulated)), 4),
            "simulated_without_pull": round(float(np.nanmedian(unpulled)), 4),
            "rule_from_half": round(float(np.nanmedian(rule)), 4),
        })  # fmt: skip

    def summary(key: str) -> dict[str, float]:
        errors = [r[key] - r["target_width"] for r in rows]
        return {
            "mean_abs_error": round(float(np.mean(np.abs(errors))), 4),
            "underestimates": f"{sum(e < 0 for e in errors)} of {len(errors)}",
        }

    print(json.dumps({
        "run": args.run,
        "benchmark": benchmark,
        "halves": args.halves,
        "findings": rows,
        "simulated": summary("simulated_from_half") if rows else None,
        "simulated_without_pull": summary("simulated_without_pull") if rows else None,
        "rule": summary("rule_from_half") if rows else None,
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
