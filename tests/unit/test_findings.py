"""The report's findings: each claim's verdict (holds / does not hold / inconclusive) from cells
with known per-user values, the users that would halve an inconclusive CI, and the report's order
(findings and meta-evaluation first, run metadata last) in report.html and report.md."""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scipy import stats

from persalign.report.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    decoupled_verdict,
    halving_users,
    sign_verdict,
    weak_verdict,
)
from persalign.report.writer import write_report

BENCH = "pref-acl"
METHODS = ("m1", "m2", "m3", "m4", "m5", "m6")
USERS = tuple(f"u{i:02d}" for i in range(12))
PerUser = Mapping[str, float]


def block(per_user: PerUser | None) -> dict[str, Any] | None:
    if per_user is None:
        return None
    return {"mean": statistics.fmean(per_user.values()), "per_user": dict(per_user)}


def cell_data(
    seed: int,
    kind: str,
    method: str,
    shots: int | None = None,
    policy: str = "smol-135m",
    cost: dict[str, Any] | None = None,
    **metrics: PerUser,
) -> dict[str, Any]:
    """A metrics.json with the given per-user values (key -> user -> value), means from them."""
    row = method if shots is None else f"{method}-{shots}"
    generation = None
    if "rouge1" in metrics:
        generation = {
            key: block(metrics.get(key)) for key in ("rouge1", "rougeL", "bertscore_f1")
        } | {"bertscore_model": "bundled:all-minilm-l6-v2", "bertscore_rescaled": False}
    win = block(metrics.get("win_rate"))
    return {
        "cell": f"{BENCH}__{policy}__{row}__s{seed}",
        "kind": kind, "benchmark": BENCH, "policy": policy, "scale": policy.split("-")[-1].upper(),
        "scale_params": float(policy.split("-")[-1].rstrip("m")), "seed": seed, "method": method,
        "shots": shots, "personalized": True if kind == "method" else None,
        "lambda": 1.0 if kind == "method" else None, "lambda_curve": None, "spec_hash": "x",
        "seconds": 1.0,
        "rm_accuracy": block(metrics.get("rm_accuracy")),
        "policy_accuracy": block(metrics.get("policy_accuracy")),
        "base_policy_accuracy": None, "generation": generation,
        "win_rate": None if win is None else {
            "rate": win["mean"], "per_user_mean": win["mean"], "per_user": win["per_user"],
            "tie_weight": 0.5,
        },
        "steering_accuracy": block(metrics.get("steering_accuracy")),
        "ground_truth_rank": None if "gt_mrr" not in metrics else {
            "mrr": block(metrics["gt_mrr"]), "top1": block(metrics.get("gt_top1")), "negatives": 5
        },
        "prefix_accuracy": block(metrics.get("prefix_accuracy")),
        "perplexity": None, "cost": cost,
    }  # fmt: skip


def write_run(root: Path, cells: list[dict[str, Any]]) -> Path:
    run = root / "runs" / "fixture"
    for data in cells:
        folder = run / "cells" / data["cell"]
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(data), encoding="utf-8")
    manifest = {"name": "fixture", "config_hash": "feed5678", "versions": {"torch": "9.9.9"}}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


def around(mean: float, users: tuple[str, ...], spread: float, seed: int) -> dict[str, float]:
    """Per-user values scattered around ``mean`` (seeded), recentred so they average to it."""
    rng = random.Random(seed)
    raw = {u: rng.uniform(-spread, spread) for u in users}
    shift = statistics.fmean(raw.values())
    return {u: mean + v - shift for u, v in raw.items()}


def findings_rows(files: dict[str, Path]) -> list[dict[str, str]]:
    text = files[f"{BENCH}/findings.csv"].read_text("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def scenario(
    tmp_path: Path, pacc: list[float], rag_gap: float, users: tuple[str, ...] = USERS
) -> tuple[dict[str, Path], dict[str, dict[str, float]]]:
    """Six methods (one seed) with RM accuracy 0.60..0.70, the given policy accuracies; ICL-RAG
    (4 shots) ``rag_gap`` above the best method's ROUGE-1 per user, +-0.01 around it."""
    cells, rouge = [], {}
    for i, method in enumerate(METHODS):
        rouge[method] = around(0.30 + 0.01 * i, users, 0.004, 100 + i)
        cells.append(
            cell_data(
                0, "method", method,
                rm_accuracy=around(0.60 + 0.02 * i, users, 0.004, i),
                policy_accuracy=around(pacc[i], users, 0.03, 50 + i),
                rouge1=rouge[method], bertscore_f1=around(0.5 + 0.01 * i, users, 0.004, 70 + i),
            )
        )  # fmt: skip
    best = rouge[METHODS[-1]]
    jitter = around(0.0, users, 0.01, 999)
    rouge["icl-rag-4"] = {u: best[u] + rag_gap + jitter[u] for u in users}
    cells.append(cell_data(0, "baseline", "icl-rag", 4, rouge1=rouge["icl-rag-4"]))
    cells.append(cell_data(0, "baseline", "zero-shot", rouge1=around(0.2, users, 0.01, 5)))
    return write_report(write_run(tmp_path, cells), n_boot=300), rouge


UNRELATED = [0.54, 0.51, 0.56, 0.50, 0.55, 0.52]  # Kendall tau with RM accuracy: small
ALIGNED = [0.50, 0.52, 0.54, 0.56, 0.58, 0.60]  # tau = 1


def test_the_decision_rules():
    """The paper's terms: weak is |tau| <= 0.31 (its largest value); decoupled contains 0."""
    assert weak_verdict((-0.2, 0.3), 12, 6)[0] == HOLDS
    assert weak_verdict((-0.31, 0.31), 12, 6)[0] == HOLDS
    assert weak_verdict((0.35, 0.9), 12, 6)[0] == FAILS
    assert weak_verdict((-1.0, -0.32), 12, 6)[0] == FAILS
    # the review's case: a clear positive relation is not "weak" and not "decoupled"
    assert weak_verdict((0.10, 0.45), 12, 6)[0] == INCONCLUSIVE
    assert decoupled_verdict((0.10, 0.45), 12, 6) == (FAILS, "the CI excludes 0")
    assert decoupled_verdict((0.05, 0.2), 12, 6)[0] == FAILS  # weak but not decoupled
    assert weak_verdict((0.05, 0.2), 12, 6)[0] == HOLDS
    assert decoupled_verdict((-0.2, 0.3), 12, 6)[0] == HOLDS
    assert decoupled_verdict((-0.2, 0.45), 12, 6)[0] == INCONCLUSIVE
    assert weak_verdict((-0.2, 0.3), 9, 6)[0] == INCONCLUSIVE  # too few users
    assert weak_verdict((-0.2, 0.3), 12, 4)[0] == INCONCLUSIVE  # too few methods
    assert weak_verdict(None, 12, 6)[0] == INCONCLUSIVE
    assert sign_verdict((0.01, 0.2), 10)[0] == HOLDS
    assert sign_verdict((-0.2, -0.01), 10)[0] == FAILS
    assert sign_verdict((-0.01, 0.2), 10)[0] == INCONCLUSIVE
    assert sign_verdict((0.01, 0.2), 9)[0] == INCONCLUSIVE
    assert halving_users(3) == 12 and halving_users(25) == 100


def test_holds(tmp_path):
    files, rouge = scenario(tmp_path, UNRELATED, rag_gap=0.05)
    rows = findings_rows(files)
    weak, rouge_row, bert_row, icl = rows  # one seed: no (method, seed) row repeating each
    tau = stats.kendalltau([0.60 + 0.02 * i for i in range(6)], UNRELATED).statistic
    assert abs(tau) < 0.31
    assert weak["Estimate"] == f"{tau:.3f}" and weak["n"] == "6 methods, 12 users"
    assert weak["Units"] == "methods"
    assert all(r["Units"] != "(method, seed) units" for r in rows)
    html = files["report.html"].read_text("utf-8")
    assert "(one seed per method: no (method, seed) row)" in html and "on the next row" not in html
    assert weak["Verdict"] == HOLDS, weak
    diffs = [rouge["icl-rag-4"][u] - rouge["m6"][u] for u in USERS]
    assert icl["Claim"] == "ICL-RAG (icl-rag-4) beats the best reward-guided method (m6) on ROUGE-1"
    assert icl["Estimate"] == f"{100 * statistics.fmean(diffs):.2f}"
    lo, hi = (float(v) for v in icl["95% CI"].strip("[]").split(", "))
    assert 0 < lo < float(icl["Estimate"]) < hi <= 100 * max(diffs)
    assert (icl["n"], icl["Verdict"]) == ("12 paired users", HOLDS)
    assert icl["Why"] == "the CI lies above 0"
    # RM accuracy and ROUGE-1 rise together here (tau = 1): "decoupled" does not hold
    assert rouge_row["Estimate"] == "1.000" and rouge_row["Verdict"] == FAILS
    assert rouge_row["Why"] == "the CI excludes 0"
    assert bert_row["Verdict"] == FAILS


def test_does_not_hold(tmp_path):
    files, _ = scenario(tmp_path, ALIGNED, rag_gap=-0.05)
    weak, *_, icl = findings_rows(files)
    assert weak["Estimate"] == "1.000" and weak["Verdict"] == FAILS
    assert weak["Why"] == "the CI lies beyond |τ| = 0.31 on one side"
    assert float(icl["Estimate"]) < 0 and icl["Verdict"] == FAILS
    assert icl["Why"] == "the CI lies below 0"


def test_leave_one_method_out_range_matches_a_naive_recomputation(tmp_path):
    files, _ = scenario(tmp_path, [*ALIGNED[:5], 0.0], rag_gap=0.05)
    weak = findings_rows(files)[0]
    rm = [0.60 + 0.02 * i for i in range(6)]
    pacc = [*ALIGNED[:5], 0.0]
    taus = []
    for left in range(6):
        keep = [i for i in range(6) if i != left]
        taus.append(stats.kendalltau([rm[i] for i in keep], [pacc[i] for i in keep]).statistic)
    assert weak["Leave one method out"] == (
        f"{min(taus):.3f} to {max(taus):.3f} (most moved without m6: {taus[5]:.3f})"
    )  # m6 alone pulls tau from 1 down to 0.333


def test_two_methods_times_three_seeds_stay_inconclusive(tmp_path):
    """6 (method, seed) units but 2 methods: below the minimum of 5 distinct methods."""
    cells = []
    for seed in (0, 1, 2):
        for i, method in enumerate(("m1", "m2")):
            q = 0.3 + 0.1 * i + 0.01 * seed
            cells.append(cell_data(
                seed, "method", method, rm_accuracy=around(0.6 + 0.1 * i + 0.01 * seed, USERS,
                0.004, i), policy_accuracy=around(q, USERS, 0.004, 9 + i),
                rouge1=around(q, USERS, 0.004, 20 + i), bertscore_f1=around(q, USERS, 0.004, 30),
            ))  # fmt: skip
    rows = findings_rows(write_report(write_run(tmp_path, cells), n_boot=200))
    seed_rows = [r for r in rows if r["Units"] == "(method, seed) units"]
    assert seed_rows and all(r["Verdict"] == INCONCLUSIVE for r in seed_rows)
    assert all(r["Why"].startswith("only 2 reward methods") for r in seed_rows), seed_rows


def test_inconclusive_says_how_many_users_would_halve_the_ci(tmp_path):
    files, _ = scenario(tmp_path, UNRELATED, rag_gap=0.0)
    icl = findings_rows(files)[-1]
    lo, hi = (float(v) for v in icl["95% CI"].strip("[]").split(", "))
    assert lo < 0 < hi and icl["Verdict"] == INCONCLUSIVE
    assert icl["Why"] == "the CI contains 0; about 48 users would halve it"


def test_three_users_are_inconclusive_whatever_the_effect(tmp_path):
    """The demo's size (3 users): nothing is claimed, however clear the numbers look."""
    files, _ = scenario(tmp_path, ALIGNED, rag_gap=0.2, users=USERS[:3])
    rows = findings_rows(files)
    assert {r["Verdict"] for r in rows} == {INCONCLUSIVE}
    icl = rows[-1]
    assert float(icl["95% CI"].strip("[]").split(", ")[0]) > 0  # the CI alone would say "holds"
    assert icl["Why"].startswith("only 3 users (a verdict needs at least 10)")
    assert icl["Why"].endswith("about 12 users would halve it")
    assert "inconclusive" in files["report.html"].read_text("utf-8")


def test_report_opens_with_findings_and_meta_evaluation_and_ends_with_the_run(tmp_path):
    files, _ = scenario(tmp_path, UNRELATED, rag_gap=0.05)
    page = files["report.html"].read_text("utf-8")
    md = files["report.md"].read_text("utf-8")
    html_marks = ["<h2>Findings</h2>", "<h2>Which metric predicts generation quality?</h2>",
                  f"<h2>{BENCH}</h2>", "Quality vs cost on", "<h2>Data notes</h2>",
                  "<h2>Run</h2>", "feed5678", "9.9.9"]  # fmt: skip
    md_marks = ["## Findings", "## Which metric predicts generation quality?", f"## {BENCH}",
                "**RM accuracy and policy accuracy on", "**Quality vs cost on", "## Data notes",
                "## Run", "| config_hash | feed5678 |", "| versions.torch | 9.9.9 |"]  # fmt: skip
    for text, marks in ((page, html_marks), (md, md_marks)):
        positions = {mark: text.find(mark) for mark in marks}
        found = list(positions.values())
        assert -1 not in found and found == sorted(found), positions
    title = (
        "**Findings on pref-acl: holds: 2, does not hold: 2, inconclusive: 0 "
        "(verdicts over methods, as in the paper).**"
    )
    assert -1 < md.find(title) < md.find("**Which metric predicts")


def test_an_estimate_outside_its_ci_says_so():
    """A percentile CI need not contain the point estimate (the Pref-ACL study's RM accuracy vs
    BERTScore-F1: 0.686 [-0.310, 0.648]); the finding then says why in its notes."""
    from persalign.report.findings import OUTSIDE_CI, correlation_finding
    from persalign.report.units import MetaCorrelation
    from persalign.report.verdicts import weak_verdict

    def finding(tau: float, ci: list[float]):
        result = {"kendall": {"r": tau, "ci": ci}, "notes": []}
        mc = MetaCorrelation("rm_accuracy", "bertscore_f1", result, 9, 32, 9, "methods")
        return correlation_finding("135M", "claim", "paper", mc, weak_verdict, True)

    assert finding(0.686, [-0.310, 0.648]).left_out == [OUTSIDE_CI]
    assert finding(0.2, [-0.310, 0.648]).left_out == []


def test_the_oracle_is_never_a_correlation_unit_nor_the_best_method(tmp_path):
    """On a sim benchmark the oracle row is the ceiling: the findings' correlations over methods,
    the correlation tables and the best reward-guided method leave it out (the first sim study
    counted it as a tenth method, and 'most moved without oracle' was the tell)."""
    from persalign.report.reading import load_run
    from persalign.report.units import unit_values

    cells = []
    for i, method in enumerate((*METHODS, "oracle")):
        best = method == "oracle"  # the oracle writes the best titles by far
        cells.append(cell_data(
            0, "method", method, rm_accuracy=around(0.6 + 0.02 * i, USERS, 0.004, i),
            policy_accuracy=around(0.5 + 0.01 * i, USERS, 0.004, 40 + i),
            rouge1=around(0.9 if best else 0.3 + 0.01 * i, USERS, 0.004, 80 + i),
            bertscore_f1=around(0.5, USERS, 0.004, 90 + i),
        ))  # fmt: skip
    cells.append(cell_data(0, "baseline", "icl-rag", 4, rouge1=around(0.3, USERS, 0.01, 7)))
    run = write_run(tmp_path, cells)
    results = load_run(run)
    assert "oracle" not in unit_values(results, BENCH, "p", "rouge1", "methods")
    assert [r.label for r in results.unit_rows(BENCH)] == list(METHODS)
    rows = findings_rows(write_report(run, n_boot=100))
    by_methods = [r for r in rows if r["Units"] == "methods"]
    assert by_methods and all(r["n"].startswith(f"{len(METHODS)} methods") for r in by_methods)
    assert "(m6)" in rows[-1]["Claim"]  # the best reward-guided method, not the oracle
