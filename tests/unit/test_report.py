"""persalign report: tables, figures and report.html from a synthetic run with known numbers."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import statistics
from pathlib import Path
from typing import Any

import pytest
from scipy import stats
from typer.testing import CliRunner

from persalign.cli import app, main
from persalign.errors import DataError
from persalign.metrics.correlation import correlations_over_users
from persalign.metrics.schema import report_columns
from persalign.report.reading import load_run
from persalign.report.tabular import latex_escape
from persalign.report.writer import write_report

BENCH = "pref-acl"
POLICIES = {"smol-135m": ("135M", 135.0), "smol-360m": ("360M", 360.0)}
METHODS = ("global-rm", "lore", "mpu", "vpl")
SEEDS = (0, 1)
USERS = ("u1", "u2", "u3")
# Per-seed value = base + step * seed, so mean/std over seeds (0, 1) = base + step/2, step/2.
RM_BASE = {"global-rm": 0.70, "lore": 0.80, "mpu": 0.60, "vpl": 0.66}
POLICY_BASE = {
    ("global-rm", "smol-135m"): 0.60,
    ("lore", "smol-135m"): 0.75,
    ("mpu", "smol-135m"): 0.55,
    ("vpl", "smol-135m"): 0.70,
    ("global-rm", "smol-360m"): 0.66,
    ("lore", "smol-360m"): 0.62,
    ("mpu", "smol-360m"): 0.71,
    ("vpl", "smol-360m"): 0.58,
}
ROUGE_BASE = {"global-rm": 0.40, "lore": 0.42, "mpu": 0.35, "vpl": 0.37}
WIN_BASE = {"global-rm": 0.99, "lore": 0.74, "mpu": 0.62, "vpl": 0.51}
SCALE_BONUS = {"smol-135m": 0.0, "smol-360m": 0.03}
BERT_MODEL = "bundled:all-minilm-l6-v2"


def metric(value: float | None) -> dict[str, Any] | None:
    """A {"mean", "per_user"} block whose per-user values average to ``value``."""
    if value is None:
        return None
    d = (value * 37) % 0.02 - 0.01  # a different spread per value, so bootstraps vary
    return {"mean": value, "per_user": {"u1": value + d, "u2": value - d, "u3": value}}


WIN_PER_USER_GAP = 0.05  # the per-user mean of the synthetic win rates: the pooled rate - 0.05


def win_block(value: float | None) -> dict[str, Any] | None:
    """A win_rate block: the pooled ``rate`` and a per-user mean WIN_PER_USER_GAP below it."""
    if value is None:
        return None
    users = metric(value - WIN_PER_USER_GAP)
    return {
        "rate": value,
        "per_user_mean": users["mean"],
        "per_user": users["per_user"],
        "tie_weight": 0.5,
    }


def seed_mean_per_user(values: list[float]) -> dict[str, float]:
    """Per user, the mean over seeds (what the report bootstraps)."""
    blocks = [metric(v)["per_user"] for v in values]
    return {u: statistics.fmean(b[u] for b in blocks) for u in USERS}


def cell(policy: str, seed: int, kind: str, method: str, shots: int | None, **values: Any):
    scale, params = POLICIES[policy]
    row = method if shots is None else f"{method}-{shots}"
    rouge1 = values.get("rouge1")
    return {
        "cell": f"{BENCH}__{policy}__{row}__s{seed}",
        "kind": kind,
        "benchmark": values.get("benchmark", BENCH),
        "policy": policy,
        "scale": scale,
        "scale_params": params,
        "seed": seed,
        "method": method,
        "shots": shots,
        "rm_accuracy": metric(values.get("rm")),
        "policy_accuracy": metric(values.get("pacc")),
        "base_policy_accuracy": metric(0.5),
        "lambda": 1.0 if kind == "method" else None,
        "lambda_curve": None,
        "generation": None
        if rouge1 is None
        else {
            "rouge1": metric(rouge1),
            "rougeL": metric(rouge1 - 0.05),
            "bertscore_f1": metric(rouge1 + 0.3),
            "bertscore_model": BERT_MODEL,
            "bertscore_rescaled": False,
        },
        "win_rate": win_block(values.get("win")),
        "perplexity": {"mean": 12.5},
        "seconds": random.uniform(1, 100),  # wall clock: must never reach a table
        "cost": cost_block(kind, method, seed, shots),
    }


def cost_block(kind: str, method: str, seed: int, shots: int | None) -> dict[str, Any]:
    """A cell's cost: baselines train nothing; ARGS calls the RM per candidate; ICL is slower."""
    per_token = 0.02 + 0.01 * (shots or 0) + (0.05 if kind == "method" else 0.0) + 0.001 * seed
    return {
        "train_seconds": 30.0 + len(method) + seed if kind == "method" else None,
        "adapt_seconds_per_user": 0.5 if kind == "method" else None,
        "decode_seconds_per_token": per_token,
        "policy_forwards_per_token": 1.0,
        "reward_forwards_per_token": 5.0 if kind == "method" else None,
        "tokens_generated": 96,
        "peak_rss_mib": 2048.0 + 10 * seed,
        "peak_gpu_mib": None,
    }


def synthetic_cells() -> list[dict[str, Any]]:
    cells = []
    for policy in POLICIES:
        bonus = SCALE_BONUS[policy]
        for seed in SEEDS:
            for m in METHODS:
                win = WIN_BASE[m] - 0.02 * seed
                if (m, policy, seed) == ("mpu", "smol-360m", 1):
                    win = None  # partial: only seed 0 has a win rate here
                cells.append(
                    cell(
                        policy, seed, "method", m, None,
                        rm=RM_BASE[m] + 0.02 * seed,
                        pacc=POLICY_BASE[(m, policy)] + 0.04 * seed,
                        rouge1=ROUGE_BASE[m] + bonus + 0.01 * seed,
                        win=win,
                    )
                )  # fmt: skip
            cells.append(
                cell(policy, seed, "baseline", "zero-shot", None, pacc=0.52, rouge1=0.38 + bonus)
            )
            for shots in (2, 4):
                cells.append(
                    cell(
                        policy, seed, "baseline", "icl", shots,
                        pacc=0.6 + 0.01 * shots, rouge1=0.36 + 0.01 * shots + bonus,
                    )
                )  # fmt: skip
                cells.append(
                    cell(
                        policy, seed, "baseline", "icl-rag", shots,
                        rouge1=0.39 + 0.01 * shots + bonus + 0.002 * seed,
                    )
                )  # fmt: skip
    # A second benchmark: one policy, one seed, no generation at all (every ROUGE is "--").
    for m in METHODS:
        extra = cell("smol-135m", 0, "method", m, None, benchmark="tldr", rm=RM_BASE[m], pacc=0.6)
        extra["cell"] = f"tldr__{m}"
        cells.append(extra)
    return cells


MANIFEST = {
    "name": "synthetic",
    "config": {"name": "synthetic", "seeds": list(SEEDS)},
    "config_hash": "cafe1234",
    "git_commit": "0123abcd",
    "versions": {"persalign": "0.1.0", "torch": "2.13.0"},
    "hardware": {"cpu": "test cpu", "gpus": []},
    "created": "2024-01-01T00:00:00",
}


def make_run(root: Path, order_seed: int = 0, unfinished: bool = True) -> Path:
    run = root / "runs" / "synthetic"
    cells = synthetic_cells()
    random.Random(order_seed).shuffle(cells)  # creation order must not matter
    for data in cells:
        folder = run / "cells" / data["cell"]
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(data), encoding="utf-8")
    if unfinished:
        (run / "cells" / "pref-acl__smol-360m__pref__s0").mkdir()  # started, never finished
    (run / "manifest.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    run = make_run(tmp_path_factory.mktemp("report"))
    return write_report(run, n_boot=50)


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def rows_by_label(path: Path) -> dict[tuple[str, str], list[str]]:
    header, *rows = read_csv(path)
    return {(r[0], r[1]): r for r in rows} | {("header", ""): header}


def pct(values: list[float]) -> str:
    """The expected 'mean ± std' of per-seed fractions, written independently of the code."""
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.pstdev(values):.2f}"


TABLES = ("findings", "meta_evaluation", "ranking", "win_rate", "rouge1_correlation",
          "correlations", "metrics", "cost")  # fmt: skip


def test_every_file_is_written(report):
    expected = {"report.html", "report.md", "results.csv"}
    for bench, policies in ((BENCH, POLICIES), ("tldr", ["smol-135m"])):
        for key in [*TABLES, *[f"policy_{p}" for p in policies]]:
            expected |= {f"{bench}/{key}.{ext}" for ext in ("md", "tex", "csv")}
    # no study_sizing: too few users for a verdict to size (tests/unit/test_sizing.py has one)
    expected |= {
        f"{BENCH}/fig1_rm_vs_policy.png",
        f"{BENCH}/fig2_generation_vs_scale.png",
        f"{BENCH}/fig3_icl_shots.png",
        f"{BENCH}/fig4_quality_cost.png",
        "tldr/fig1_rm_vs_policy.png",  # tldr has no generations: no Fig. 2, 3 or 4
    }
    assert set(report) == expected
    for relative, path in report.items():
        assert path == report["report.html"].parent / relative
        assert path.is_file() and path.stat().st_size > 0
    assert report["report.html"].parent.name == "report"


def test_ranking_table_rows_columns_and_values(report):
    table = rows_by_label(report[f"{BENCH}/ranking.csv"])
    assert table[("header", "")] == [
        "Group", "Method", "RM Acc", "Policy Acc 135M", "Policy Acc 360M"
    ]  # fmt: skip
    labels = [key[1] for key in table if key[0] != "header"]
    assert labels == [
        "global-rm", "lore", "mpu", "vpl", "zero-shot", "icl-2", "icl-4", "icl-rag-2", "icl-rag-4",
        "Pearson r", "Spearman ρ", "Kendall τ",
    ]  # fmt: skip
    lore = table[("Reward models + ARGS", "lore")]
    assert lore[2] == pct([0.80, 0.82]) == "81.00 ± 1.00"
    assert lore[3] == pct([0.75, 0.79]) == "77.00 ± 2.00"
    assert lore[4] == pct([0.62, 0.66])
    assert table[("Baselines", "zero-shot")][2:] == ["--", "52.00 ± 0.00", "52.00 ± 0.00"]
    assert table[("Baselines", "icl-4")][3] == "64.00 ± 0.00"
    assert table[("Baselines", "icl-rag-2")][2:] == ["--", "--", "--"]  # no policy accuracy


@pytest.mark.parametrize("column, policy", [(3, "smol-135m"), (4, "smol-360m")])
def test_ranking_correlation_rows_match_scipy(report, column, policy):
    table = rows_by_label(report[f"{BENCH}/ranking.csv"])
    rm = [RM_BASE[m] + 0.01 for m in METHODS]
    pol = [POLICY_BASE[(m, policy)] + 0.02 for m in METHODS]
    group = "RM vs policy acc."
    for label, fn in (
        ("Pearson r", stats.pearsonr),
        ("Spearman ρ", stats.spearmanr),
        ("Kendall τ", stats.kendalltau),
    ):
        r, p = fn(rm, pol)
        assert table[(group, label)][column] == f"{r:.3f} (p={p:.3f})"
        assert table[(group, label)][2] == "--"


def test_markdown_and_latex_show_the_same_cells(report):
    md = report[f"{BENCH}/ranking.md"].read_text(encoding="utf-8")
    assert "| Group | Method | RM Acc | Policy Acc 135M | Policy Acc 360M |" in md
    assert "| Reward models + ARGS | global-rm |" in md
    assert "|  | lore | 81.00 ± 1.00 | 77.00 ± 2.00 |" in md  # group shown once
    assert "| Baselines | zero-shot | -- | 52.00 ± 0.00 | 52.00 ± 0.00 |" in md
    tex = report[f"{BENCH}/ranking.tex"].read_text(encoding="utf-8")
    assert r"\begin{tabular}{llrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r" & lore & 81.00 $\pm$ 1.00 & 77.00 $\pm$ 2.00 & " in tex
    assert r"Spearman $\rho$" in tex and r"\label{tab:pref-acl:ranking}" in tex
    assert latex_escape("icl_rag & 5% #1 {x}") == r"icl\_rag \& 5\% \#1 \{x\}"


def test_win_rate_partial_seeds_are_marked(report):
    table = rows_by_label(report[f"{BENCH}/win_rate.csv"])
    assert table[("header", "")] == [
        "Group", "Method", "135M", "135M (per-user mean)", "360M", "360M (per-user mean)"
    ]  # fmt: skip
    assert [k[1] for k in table if k[0] != "header"] == list(METHODS)
    gap = WIN_PER_USER_GAP
    assert table[("Reward models + ARGS", "global-rm")][2] == pct([0.99, 0.97])
    assert table[("Reward models + ARGS", "global-rm")][3] == pct([0.99 - gap, 0.97 - gap])
    assert table[("Reward models + ARGS", "mpu")][2] == pct([0.62, 0.60])
    mpu_360m = table[("Reward models + ARGS", "mpu")][4:]
    assert mpu_360m == ["62.00 ± 0.00†", "57.00 ± 0.00†"]  # seed 1 is null
    md = report[f"{BENCH}/win_rate.md"].read_text("utf-8")
    assert "†: mean over fewer seeds" in md
    assert "A tie (equal rewards, or the same text) counts as half a win" in md


def test_rouge1_correlation_table_matches_scipy(report):
    header, *rows = read_csv(report[f"{BENCH}/rouge1_correlation.csv"])
    assert header == ["Scale", "Statistic", "RM Acc", "Policy Acc", "Win Rate"]
    assert [(r[0], r[1]) for r in rows] == [
        (s, st) for s in ("135M", "360M") for st in ("Pearson r", "Spearman ρ", "Kendall τ")
    ]
    rouge = [ROUGE_BASE[m] + 0.005 for m in METHODS]
    rm = [RM_BASE[m] + 0.01 for m in METHODS]
    pol = [POLICY_BASE[(m, "smol-135m")] + 0.02 for m in METHODS]
    tau_rm, p_rm = stats.kendalltau(rm, rouge)
    tau_pol, p_pol = stats.kendalltau(pol, rouge)
    kendall = rows[2]
    assert kendall[2] == f"{tau_rm:.3f} (p={p_rm:.3f})"
    assert kendall[3] == f"{tau_pol:.3f} (p={p_pol:.3f})"


def test_correlation_details_include_bootstrap_ci(report):
    header, *rows = read_csv(report[f"{BENCH}/correlations.csv"])
    assert header == ["Scale", "Pair", "Statistic", "r", "p", "95% CI", "n"]
    assert len(rows) == 2 * 4 * 3
    row = next(r for r in rows if r[:3] == ["135M", "RM Acc vs Policy Acc", "Pearson r"])
    rm = {m: seed_mean_per_user([RM_BASE[m], RM_BASE[m] + 0.02]) for m in METHODS}
    base = {m: POLICY_BASE[(m, "smol-135m")] for m in METHODS}
    pol = {m: seed_mean_per_user([base[m], base[m] + 0.04]) for m in METHODS}
    boot = correlations_over_users(rm, pol, n_boot=50, seed=0)
    lo, hi = boot["pearson"]["ci"]
    assert lo < hi  # the users' spread makes the bootstrap vary
    r, p = stats.pearsonr([RM_BASE[m] for m in METHODS], list(base.values()))
    assert row[3:] == [f"{r:.3f}", f"{p:.4f}", f"[{lo:.3f}, {hi:.3f}]", "4"]


def test_policy_tables_every_metric_and_bertscore_model(report):
    table = rows_by_label(report[f"{BENCH}/policy_smol-360m.csv"])
    assert table[("header", "")] == [
        "Group", "Method", "RM Acc", "Policy Acc", "ROUGE-1", "ROUGE-L",
        "BERTScore-F1 (raw, all-minilm-l6-v2)",
    ]  # fmt: skip
    mpu = table[("Reward models + ARGS", "mpu")]
    assert mpu[2:] == [
        pct([0.60, 0.62]),
        pct([0.71, 0.75]),
        pct([0.38, 0.39]),
        pct([0.33, 0.34]),
        pct([0.68, 0.69]),
    ]
    assert table[("Baselines", "icl-rag-4")][2:5] == ["--", "--", pct([0.46, 0.462])]
    assert table[("Baselines", "zero-shot")][4] == "41.00 ± 0.00"
    for ext in ("md", "tex"):
        assert "all-minilm-l6-v2" in report[f"{BENCH}/policy_smol-360m.{ext}"].read_text("utf-8")
    # tldr has no generations: its ROUGE and BERTScore columns are "--", one seed shows ± 0.00.
    tldr = rows_by_label(report["tldr/policy_smol-135m.csv"])
    assert (
        tldr[("Reward models + ARGS", "lore")][2:] == ["80.00 ± 0.00", "60.00 ± 0.00"] + ["--"] * 3
    )


def test_metrics_table_has_every_report_column(report):
    """One row per policy and row, one column per registered metric's column (and lambda);
    metrics registered since (steering, ground-truth rank, ...) sit among them, "--" here."""
    header, *rows = read_csv(report[f"{BENCH}/metrics.csv"])
    core_names = [
        "RM Acc (%) ↑", "Policy Acc (%) ↑", "Base Policy Acc (%) ↑",
        "Win Rate (%) ↑", "Win Rate (per-user mean) (%) ↑", "ROUGE-1 (%) ↑", "ROUGE-L (%) ↑",
        "BERTScore-F1 (raw, all-minilm-l6-v2) (%) ↑", "Perplexity ↓", "λ",
    ]  # fmt: skip
    assert header[:2] == ["Policy", "Method"] and len(header) == 2 + len(report_columns())
    core = [i for i, name in enumerate(header) if name in core_names]
    assert [header[i] for i in core] == core_names and header[-1] == "λ"
    assert all(r[i] == "--" for r in rows for i in range(2, len(header)) if i not in core)
    labels = ["global-rm", "lore", "mpu", "vpl", "zero-shot", "icl-2", "icl-4"]
    labels += ["icl-rag-2", "icl-rag-4"]
    assert [(r[0], r[1]) for r in rows] == [(p, m) for p in ("135M", "360M") for m in labels]
    table = {(r[0], r[1]): [r[i] for i in core] for r in rows}
    assert table[("360M", "mpu")] == [
        pct([0.60, 0.62]), pct([0.71, 0.75]), "50.00 ± 0.00", "62.00 ± 0.00†", "57.00 ± 0.00†",
        pct([0.38, 0.39]), pct([0.33, 0.34]), pct([0.68, 0.69]), "12.50 ± 0.00", "1.00 ± 0.00",
    ]  # fmt: skip
    assert table[("135M", "icl-rag-2")][:5] == ["--", "--", "50.00 ± 0.00", "--", "--"]
    assert table[("135M", "zero-shot")][-2:] == ["12.50 ± 0.00", "--"]  # no lambda for baselines
    tex = report[f"{BENCH}/metrics.tex"].read_text(encoding="utf-8")
    assert r"Perplexity $\downarrow$ & " in tex and r" & $\lambda$ \\" in tex
    md = report[f"{BENCH}/metrics.md"].read_text("utf-8")
    assert "(%): in %, other columns as they are" in md


def test_results_csv_has_raw_aggregates(report):
    header, *rows = read_csv(report["results.csv"])
    index = {(r[0], r[1], r[7], r[8]): r for r in rows}
    lore = index[(BENCH, "smol-135m", "lore", "policy_accuracy")]
    assert dict(zip(header, lore, strict=True)) | {} == {
        "benchmark": BENCH, "policy": "smol-135m", "scale": "135M", "scale_params": "135",
        "kind": "method", "method": "lore", "shots": "", "row": "lore",
        "metric": "policy_accuracy", "mean": "0.770000", "std": "0.020000", "n_seeds": "2",
        "bertscore_model": "", "bertscore_scale": "",
    }  # fmt: skip
    bert = dict(zip(header, index[(BENCH, "smol-135m", "lore", "bertscore_f1")], strict=True))
    assert (bert["bertscore_model"], bert["bertscore_scale"]) == (BERT_MODEL, "raw")
    assert index[(BENCH, "smol-135m", "icl-4", "rouge1")][6] == "4"
    assert not any(r[8] == "seconds" for r in rows)
    metrics = [r[8] for r in rows if r[:2] == [BENCH, "smol-135m"] and r[7] == "lore"]
    assert metrics == [
        "rm_accuracy", "policy_accuracy", "base_policy_accuracy", "win_rate", "win_rate_per_user",
        "rouge1", "rougeL", "bertscore_f1", "perplexity", "lambda",
    ]  # fmt: skip


def test_html_is_self_contained_with_every_table_and_figure(report):
    page = report["report.html"].read_text(encoding="utf-8")
    pngs = [k for k in report if k.endswith(".png")]
    assert page.count('src="data:image/png;base64,') == len(pngs) == 5
    for bad in ("<script", "<link", "http://", "https://", 'src="/', "src='/"):
        assert bad not in page
    for key in report:
        if key.endswith(".md") and key != "report.md":
            title = report[key].read_text("utf-8").split(".**")[0].removeprefix("**")
            assert title in page, key
    for fact in ("cafe1234", "0123abcd", "2.13.0", "test cpu", "Resolved config"):
        assert fact in page
    assert "81.00 ± 1.00" in page and "not finished" in page


def test_pngs_are_valid_and_carry_no_software_metadata(report):
    for key, path in report.items():
        if key.endswith(".png"):
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
            assert b"Software" not in data and b"matplotlib" not in data.lower()


def test_rerun_is_byte_identical_whatever_the_order_and_wall_clock(tmp_path, report):
    run = make_run(tmp_path, order_seed=7)  # other creation order, other "seconds"
    again = write_report(run, tmp_path / "out", n_boot=50)
    assert set(again) == set(report)
    for key in again:
        assert again[key].read_bytes() == report[key].read_bytes(), key


def test_missing_data_is_logged_not_fatal(tmp_path, caplog):
    run = make_run(tmp_path)
    (run / "cells" / "broken").mkdir()
    (run / "cells" / "broken" / "metrics.json").write_text("{}", encoding="utf-8")
    (run / "cells" / "listed").mkdir()
    (run / "cells" / "listed" / "metrics.json").write_text("[1, 2]", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="persalign"):
        files = write_report(run, n_boot=0)
    text = caplog.text
    assert "1 cell(s) not finished: pref-acl__smol-360m__pref__s0" in text
    assert "cell broken: metrics.json skipped (missing field 'benchmark')" in text
    assert "cell listed: metrics.json skipped (expected a JSON object, got list)" in text
    assert "win_rate missing in 5 cell(s): pref-acl__smol-360m__mpu__s1, tldr__global-rm" in text
    assert "rouge1 missing in 4 cell(s): tldr__global-rm, tldr__lore, tldr__mpu, tldr__vpl" in text
    assert "tldr: generation_vs_scale has no data to plot" in text
    detail = read_csv(files[f"{BENCH}/correlations.csv"])
    assert {r[5] for r in detail[1:]} == {"--"}  # no bootstrap requested


def test_rouge_only_runs_and_same_size_policies(tmp_path, caplog):
    """BERTScore switched off is not 'missing'; two policies of one size get distinct columns."""
    run = tmp_path / "run"
    for policy in ("qwen-1b", "llama-1b"):
        for m in METHODS:
            data = cell("smol-135m", 0, "method", m, None, rm=RM_BASE[m], pacc=0.6, rouge1=0.4)
            data.update(policy=policy, scale="1B", scale_params=None, cell=f"{policy}-{m}")
            data["generation"].update(bertscore_f1=None, bertscore_model=None)
            (run / "cells" / data["cell"]).mkdir(parents=True)
            (run / "cells" / data["cell"] / "metrics.json").write_text(json.dumps(data), "utf-8")
    with caplog.at_level(logging.WARNING, logger="persalign"):
        files = write_report(run, n_boot=0)
    assert "bertscore_f1 missing" not in caplog.text
    assert "manifest.json unreadable or missing" in caplog.text
    header = read_csv(files[f"{BENCH}/ranking.csv"])[0]
    assert header[3:] == ["Policy Acc 1B (llama-1b)", "Policy Acc 1B (qwen-1b)"]
    table = rows_by_label(files[f"{BENCH}/policy_qwen-1b.csv"])
    assert table[("Reward models + ARGS", "lore")][4:] == ["40.00 ± 0.00", "35.00 ± 0.00", "--"]
    assert "BERTScore: not computed" in files[f"{BENCH}/policy_qwen-1b.md"].read_text("utf-8")
    assert f"{BENCH}/fig2_generation_vs_scale.png" in files  # no scale_params: even spacing
    assert "<th>config_hash</th><td>--</td>" in files["report.html"].read_text("utf-8")


def test_a_run_without_finished_cells_is_a_clear_error(tmp_path):
    run = tmp_path / "runs" / "empty"
    (run / "cells" / "a").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    with pytest.raises(DataError, match=r"runs/empty: no finished cells"):
        write_report(run)
    with pytest.raises(DataError, match="no such run folder"):
        write_report(tmp_path / "missing")


def test_cli_writes_the_report(tmp_path):
    run = make_run(tmp_path, unfinished=False)
    result = CliRunner().invoke(
        app, ["report", str(run), "--out", str(tmp_path / "r"), "--bootstrap", "20"]
    )
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "r" / "report.html") in result.output.replace("\n", "")
    for name in (
        "report.html",
        "results.csv",
        f"{BENCH}/ranking.tex",
        f"{BENCH}/fig3_icl_shots.png",
    ):
        assert (tmp_path / "r" / name).is_file()
    default = CliRunner().invoke(app, ["report", str(run), "--bootstrap", "0"])
    assert default.exit_code == 0, default.output
    assert (run / "report" / f"{BENCH}" / "ranking.md").is_file()


def test_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "empty")])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error:" in err and "empty: no finished cells" in err and "Traceback" not in err


def test_cells_the_current_plan_dropped_are_skipped_and_reported(tmp_path, caplog):
    """A config that no longer runs 'vpl' leaves its old cells behind: the report skips them."""
    from persalign.report.reading import load_run

    run = make_run(tmp_path, unfinished=False)
    names = sorted(p.name for p in (run / "cells").iterdir())
    planned = [n for n in names if "vpl" not in n]
    (run / "manifest.json").write_text(json.dumps(MANIFEST | {"cells": planned}), "utf-8")
    with caplog.at_level(logging.WARNING, logger="persalign"):
        results = load_run(run)
    dropped = len(names) - len(planned)
    assert dropped == 5  # 2 policies x 2 seeds on pref-acl, and tldr__vpl
    assert sorted(c.cell for c in results.cells) == planned
    assert f"{dropped} cell(s) not in the current plan" in caplog.text
    assert any("--all-cells" in issue for issue in results.issues)
    assert len(load_run(run, all_cells=True).cells) == len(names)
    files = write_report(run, tmp_path / "r", n_boot=0)
    assert "vpl" not in files[f"{BENCH}/ranking.md"].read_text("utf-8")
    result = CliRunner().invoke(
        app, ["report", str(run), "--out", str(tmp_path / "all"), "--bootstrap", "0", "--all-cells"]
    )
    assert result.exit_code == 0, result.output
    assert "vpl" in (tmp_path / "all" / BENCH / "ranking.md").read_text("utf-8")


def test_rows_are_grouped_personalized_then_global_then_baselines(tmp_path):
    """With ``personalized`` recorded (the runner writes it), rows split as the paper's tables."""
    run = make_run(tmp_path, unfinished=False)
    for path in (run / "cells").glob("*/metrics.json"):
        data = json.loads(path.read_text("utf-8"))
        if data["kind"] == "method":
            data["personalized"] = data["method"] != "global-rm"
            path.write_text(json.dumps(data), "utf-8")
    files = write_report(run, n_boot=0)
    rows = read_csv(files[f"{BENCH}/ranking.csv"])[1:]
    labelled = [(r[0], r[1]) for r in rows if r[0] != "RM vs policy acc."]
    assert labelled == [
        ("Personalized RMs + ARGS", "lore"),
        ("Personalized RMs + ARGS", "mpu"),
        ("Personalized RMs + ARGS", "vpl"),
        ("Global RMs + ARGS", "global-rm"),
        ("Baselines", "zero-shot"),
        ("Baselines", "icl-2"),
        ("Baselines", "icl-4"),
        ("Baselines", "icl-rag-2"),
        ("Baselines", "icl-rag-4"),
    ]
    policy = rows_by_label(files[f"{BENCH}/policy_smol-135m.csv"])
    assert policy[("Global RMs + ARGS", "global-rm")][2] == pct([0.70, 0.72])
    win = rows_by_label(files[f"{BENCH}/win_rate.csv"])
    assert ("Personalized RMs + ARGS", "vpl") in win


def test_win_rate_bootstrap_reads_the_blocks_per_user_values(report):
    """The Win Rate column reads a number inside the block; its per-user values still come along."""
    rows = read_csv(report[f"{BENCH}/correlations.csv"])[1:]
    row = next(r for r in rows if r[:3] == ["135M", "Win Rate vs ROUGE-1", "Pearson r"])
    assert row[5] != "--" and row[6] == "4"


def test_cells_from_before_the_pooled_win_rate_and_the_bertscore_scale(tmp_path, caplog):
    """Old metrics.json: a win_rate without "rate" shows "--" in both win-rate columns (and is
    reported); a generation block without bertscore_rescaled was raw, and is named so."""
    run = make_run(tmp_path, unfinished=False)
    for path in (run / "cells").glob("*/metrics.json"):
        data = json.loads(path.read_text("utf-8"))
        if data["win_rate"] is not None:
            old = metric(data["win_rate"]["rate"])
            data["win_rate"] = {**old, "pooled": old["mean"], "n": 3}
        if data["generation"] is not None:
            del data["generation"]["bertscore_rescaled"]
        path.write_text(json.dumps(data), "utf-8")
    with caplog.at_level(logging.WARNING, logger="persalign"):
        files = write_report(run, tmp_path / "out", n_boot=0)
    win = rows_by_label(files[f"{BENCH}/win_rate.csv"])
    assert win[("Reward models + ARGS", "lore")][2:] == ["--"] * 4
    assert "15 cell(s) have a win rate from an older persalign" in caplog.text
    header = read_csv(files[f"{BENCH}/policy_smol-135m.csv"])[0]
    assert header[-1] == "BERTScore-F1 (raw, all-minilm-l6-v2)"


def test_rescaled_bertscore_is_named_and_a_mix_is_flagged(tmp_path, caplog):
    run = make_run(tmp_path, unfinished=False)
    for path in (run / "cells").glob("*/metrics.json"):
        data = json.loads(path.read_text("utf-8"))
        if data["generation"] is not None:
            # smol-135m: roberta-large rescaled (the paper's); smol-360m: one raw cell among them
            mixed = data["policy"] == "smol-360m" and data["cell"].endswith("lore__s1")
            data["generation"]["bertscore_model"] = "roberta-large"
            data["generation"]["bertscore_rescaled"] = not mixed
        path.write_text(json.dumps(data), "utf-8")
    with caplog.at_level(logging.WARNING, logger="persalign"):
        files = write_report(run, tmp_path / "out", n_boot=0)
    small = files[f"{BENCH}/policy_smol-135m.md"].read_text("utf-8")
    assert "| BERTScore-F1 (rescaled, roberta-large) |" in small
    assert "BERTScore model: roberta-large (rescaled)" in small
    large = files[f"{BENCH}/policy_smol-360m.md"].read_text("utf-8")
    assert "| BERTScore-F1 (several models or scales) |" in large
    assert "roberta-large (raw), roberta-large (rescaled)" in large and "not comparable" in large
    assert "several models or scales (roberta-large (raw), roberta-large (rescaled))" in caplog.text
    results = list(csv.reader(io.StringIO(files["results.csv"].read_text("utf-8"))))
    scales = {(r[1], r[12], r[13]) for r in results[1:] if r[8] == "bertscore_f1"}
    assert scales == {
        ("smol-135m", "roberta-large", "rescaled"),
        ("smol-360m", "roberta-large", "raw;rescaled"),
    }


def test_a_seed_free_baseline_planned_once_is_not_marked_partial(tmp_path):
    """Zero-shot planned once (greedy: its spec.json says so) serves both seeds: no †; an ICL
    cell (a seeded draw) missing at seed 1 keeps its †."""
    run = tmp_path / "runs" / "once"
    specs = {"zero-shot": ("zero-shot", "greedy"), "icl": ("icl", "greedy")}
    cells = [cell("smol-135m", s, "method", "mpu", None, rm=0.6, pacc=0.6) for s in SEEDS]
    cells += [
        cell("smol-135m", 0, "baseline", "zero-shot", None, pacc=0.52),
        cell("smol-135m", 0, "baseline", "icl", 2, pacc=0.62),  # seed 1 unfinished
        *[cell("smol-135m", s, "baseline", "icl", 4, pacc=0.64) for s in SEEDS],
    ]
    for data in cells:
        folder = run / "cells" / data["cell"]
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(data), encoding="utf-8")
        if data["method"] in specs:
            decoder, mode = specs[data["method"]]
            spec = {"spec": {"decoder": decoder, "decoder_settings": {"mode": mode}}}
            (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    (run / "manifest.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    results = load_run(run)
    assert results.expected_seeds(BENCH, "baseline", "zero-shot") == 1
    assert results.expected_seeds(BENCH, "baseline", "icl-2") == len(SEEDS)
    assert results.expected_seeds(BENCH, "method", "mpu") == len(SEEDS)
    ranking = write_report(run, n_boot=20)[f"{BENCH}/ranking.csv"]
    rows = {r[1]: r for r in read_csv(ranking)[1:]}
    assert rows["zero-shot"][3] == "52.00 ± 0.00"  # one seed serves both: no †
    assert rows["icl-2"][3] == "62.00 ± 0.00†" and rows["icl-4"][3] == "64.00 ± 0.00"
