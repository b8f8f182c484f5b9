"""Cell metrics as plugins: the registry, compute_cell_metrics against direct calls of the
metric functions (with cells.py's arguments), the metrics.json schema, and a toy plugin that
reaches the report and ``persalign ls metrics`` with no other change."""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from typing import Any

import pytest

import persalign.rewards as rewards
from persalign.decoding import Policy
from persalign.metrics import (
    METRICS,
    CellContext,
    CellMetric,
    Column,
    ZeroShot,
    compute_cell_metrics,
    register_metric,
)
from persalign.metrics import generation as generation_module
from persalign.metrics import policy_accuracy as policy_module
from persalign.metrics.generation import behavioural_alignment, rouge
from persalign.metrics.perplexity import perplexity
from persalign.metrics.policy_accuracy import policy_accuracy
from persalign.metrics.ranking import rm_accuracy
from persalign.metrics.schema import FIELDS, METRICS_FILE, cell_record, report_columns
from persalign.metrics.text_scores import TextScores
from persalign.metrics.winrate import win_rate
from persalign.report.formatting import LABELS
from persalign.report.writer import write_report
from persalign.types import Benchmark

from .rewards_synthetic import adapted_lore, two_group_benchmark
from .test_cli import run as run_cli
from .test_report import make_run

# What runs/cells.py writes into every metrics.json today (besides the fixed fields).
RUN_METRIC_KEYS = {
    "rm_accuracy",
    "policy_accuracy",
    "base_policy_accuracy",
    "generation",
    "win_rate",
    "perplexity",
    "steering_accuracy",
    "ground_truth_rank",
    "prefix_accuracy",
    *("true_reward", "true_gain", "true_win_rate", "true_rm_accuracy", "captured"),
}
# sim benchmarks only (true_reward.json): tests/unit/test_sim_metrics.py tests them
SIM_KEYS = {"true_reward", "true_gain", "true_win_rate", "true_rm_accuracy", "captured"}
# off here (SETTINGS turns them off): tests/unit/test_selection_metrics.py tests them
SELECTION_KEYS = {"steering_accuracy", "ground_truth_rank", "prefix_accuracy"}
FIXED_FIELDS = {
    "cell", "kind", "benchmark", "policy", "scale", "scale_params", "seed", "method", "shots",
    "personalized", "lambda", "lambda_curve", "spec_hash", "seconds", "cost",
}  # fmt: skip
BATCH = 3
FAST = dict(device="cpu", eval_batch_size=8, seed=0, max_response_tokens=32)
SETTINGS = {  # a run config's metrics section
    "batch_size": BATCH,
    "generation": {"bertscore_model": None, "bertscore_num_layers": None},
    "perplexity": True,
    "win_rate": True,
    **dict.fromkeys(SELECTION_KEYS, False),
}


# ---------------------------------------------------------------- registry and schema
def test_the_registry_lists_exactly_what_a_run_writes_per_cell():
    assert set(METRICS.names()) == RUN_METRIC_KEYS
    assert set(FIELDS) == FIXED_FIELDS and not set(FIELDS) & RUN_METRIC_KEYS
    for entry in METRICS.entries():
        assert entry.obj.key == entry.name and len(entry.summary) > 20, entry.name
    for helper in ("rouge", "bertscore-f1", "correlation", "behavioural-alignment"):
        assert helper not in METRICS


def test_ls_metrics_lists_the_cell_metrics(capsys):
    code, out, _ = run_cli(["ls", "metrics"], capsys)
    # " name  summary" lines; a long summary wraps onto lines that start with more spaces
    listed = {line.split()[0] for line in out.splitlines()[1:] if line[:2].strip()}
    assert code == 0 and listed == RUN_METRIC_KEYS
    text = " ".join(out.split())  # rich wraps; each metric's options, defaults, descriptions
    assert ".ties = 'loss': What a tie" in text and ".negatives = 9: Hard negatives" in text
    assert ".batch_size = 8: Sequences per scoring pass" in text


def test_report_columns_are_what_the_report_read_before():
    """The report's former key -> path table and EXPECTED, now derived from the plugins."""
    columns = report_columns()
    assert [(c.key, c.path) for c in columns] == [
        ("rm_accuracy", ("rm_accuracy",)),
        ("prefix_accuracy", ("prefix_accuracy",)),
        ("policy_accuracy", ("policy_accuracy",)),
        ("gt_mrr", ("ground_truth_rank", "mrr")),
        ("gt_top1", ("ground_truth_rank", "top1")),
        ("base_policy_accuracy", ("base_policy_accuracy",)),
        ("win_rate", ("win_rate", "rate")),
        ("win_rate_per_user", ("win_rate", "per_user_mean")),
        ("steering_accuracy", ("steering_accuracy",)),
        ("rouge1", ("generation", "rouge1")),
        ("rougeL", ("generation", "rougeL")),
        ("bertscore_f1", ("generation", "bertscore_f1")),
        ("perplexity", ("perplexity",)),
        ("true_reward", ("true_reward",)),
        ("true_gain", ("true_gain",)),
        ("true_win_rate", ("true_win_rate", "rate")),
        ("true_rm_accuracy", ("true_rm_accuracy",)),
        ("captured", ("captured", "share")),
        ("lambda", ("lambda",)),
    ]
    expected = {c.key: c.expected_for for c in columns if c.expected_for}
    assert expected == {
        "rm_accuracy": ("method",),
        "policy_accuracy": ("method",),
        "win_rate": ("method",),
        "win_rate_per_user": ("method",),
        "rouge1": ("method", "baseline"),
        "rougeL": ("method", "baseline"),
        "bertscore_f1": ("method", "baseline"),
    }
    labels = {c.key: c.label for c in columns}
    assert {k: labels[k] for k in LABELS} == LABELS  # the paper tables' names agree
    units = {c.key: c.unit for c in columns}
    assert units["perplexity"] == units["lambda"] == "number" and units["rouge1"] == "fraction"


def test_cell_record_has_every_key_null_where_absent():
    fields = {name: None for name in FIELDS}
    record = cell_record(fields, {"policy_accuracy": {"mean": 0.5}})
    assert set(record) == FIXED_FIELDS | RUN_METRIC_KEYS
    assert record["policy_accuracy"] == {"mean": 0.5} and record["win_rate"] is None
    assert METRICS_FILE == "metrics.json"
    with pytest.raises(ValueError, match="missing \\['seconds'\\]"):
        cell_record({k: v for k, v in fields.items() if k != "seconds"}, {})
    with pytest.raises(ValueError, match="not registered"):
        cell_record(fields, {"typo_metric": 1})


def test_register_metric_checks_the_plugin():
    with pytest.raises(TypeError, match="not a CellMetric"):
        register_metric("nope")(dict)  # type: ignore[arg-type]

    class Bad(CellMetric):
        needs = frozenset({"gpu"})

    with pytest.raises(ValueError, match="unknown needs"):
        register_metric("bad")(Bad)

    class Elsewhere(CellMetric):
        columns = (Column("x", ("other", "x"), "X", True),)

    with pytest.raises(ValueError, match="do not read from 'elsewhere'"):
        register_metric("elsewhere")(Elsewhere)
    assert "bad" not in METRICS and "elsewhere" not in METRICS
    with pytest.raises(ValueError, match="unit"):
        Column("x", ("x",), "X", True, "percent")


# ---------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def bench() -> Benchmark:
    """2 train users, 2 adaptation users x (3 support, 3 query), completions for user new0 and
    for all but one of new1's queries."""
    return two_group_benchmark(support=3, query=3, edit=lambda completions: completions[:-1])


@pytest.fixture(scope="module")
def policy(tiny_lm_other: str) -> Policy:
    return Policy.load(tiny_lm_other, device="cpu")


@pytest.fixture(scope="module")
def lore(tiny_lm: str, bench: Benchmark):
    return adapted_lore(tiny_lm, bench, adapt_steps=10, **FAST)


@pytest.fixture(scope="module")
def global_rm(tiny_lm: str):
    return rewards.create("global-rm", backbone=tiny_lm, **FAST)


def generations(bench: Benchmark, which: str) -> list[dict[str, str]]:
    """One generation per query prompt: the chosen (or rejected) response, with a twist."""
    return [
        {"user": q.user, "id": q.id, "text": getattr(q, which) + (" and more" if i % 2 else "")}
        for i, q in enumerate(bench.query)
    ]


def naive_rouge_only(bench: Benchmark, gens: list[dict[str, str]]) -> dict[str, Any]:
    """cells.py's ROUGE-only block, written out: per user, then the mean over users."""
    refs = {(c.user, c.id): c.reference for c in bench.completions}
    scored = [g for g in gens if (g["user"], g["id"]) in refs]
    pairs = rouge([g["text"] for g in scored], [refs[g["user"], g["id"]] for g in scored])
    out: dict[str, Any] = {"bertscore_f1": None, "bertscore_model": None, "n": len(scored)}
    for name in ("rouge1", "rougeL"):
        by_user: dict[str, list[float]] = {}
        for g, p in zip(scored, pairs, strict=True):
            by_user.setdefault(g["user"], []).append(p[name])
        per_user = {u: statistics.fmean(v) for u, v in sorted(by_user.items())}
        out[name] = {
            "mean": statistics.fmean(per_user.values()),
            "pooled": statistics.fmean(p[name] for p in pairs),
            "per_user": per_user,
        }
    return out


@pytest.fixture
def calls(monkeypatch) -> list[dict[str, Any]]:
    """Every policy_accuracy call the plugins make (keyword arguments but the memo: the cell's
    TextScores where given, tests/unit/test_text_scores.py), passed through."""
    seen: list[dict[str, Any]] = []

    def spy(policy, prefs, memo=None, **kwargs):
        assert memo is None or isinstance(memo, TextScores)
        seen.append(kwargs)
        return policy_accuracy(policy, prefs, memo=memo, **kwargs)

    monkeypatch.setattr(policy_module, "policy_accuracy", spy)
    return seen


def context(bench: Benchmark, policy: Policy, **fields: Any) -> CellContext:
    base: dict[str, Any] = dict(
        kind="method", method="lore", decoder="args", seed=1, settings=dict(SETTINGS)
    )
    return CellContext(**(base | fields), benchmark=bench, policy=policy)


def test_method_cell_equals_direct_calls(bench, policy, lore, calls):
    gens, zs_gens = generations(bench, "chosen"), generations(bench, "rejected")
    zs_metrics = {"policy_accuracy": {"mean": 0.25, "scorer": "base"}}
    ctx = context(
        bench,
        policy,
        reward_model=lore,
        lam=0.5,
        generations=gens,
        zero_shot=ZeroShot(zs_metrics, zs_gens),
    )
    got = compute_cell_metrics(ctx)
    assert list(got) == [
        "rm_accuracy", "policy_accuracy", "base_policy_accuracy", "win_rate", "generation",
        "perplexity",
    ]  # fmt: skip
    query = bench.query
    assert got["rm_accuracy"] == rm_accuracy(lore, query)
    assert calls == [dict(scorer="personal-rgd", reward_model=lore, lam=0.5, batch_size=BATCH)]
    assert got["policy_accuracy"] == policy_accuracy(
        policy, query, scorer="personal-rgd", reward_model=lore, lam=0.5, batch_size=BATCH
    )
    assert got["base_policy_accuracy"] == zs_metrics["policy_accuracy"]  # the zero-shot cell's
    prompts = {(q.user, q.id): q.prompt for q in query}
    assert got["win_rate"] == win_rate(lore, gens, zs_gens, prompts)
    assert got["win_rate"]["n"] == len(query)
    assert got["generation"] == naive_rouge_only(bench, gens)
    direct = perplexity(
        policy,
        [q.prompt for q in query],
        [g["text"] for g in gens],
        users=[g["user"] for g in gens],
        batch_size=BATCH,
        progress=False,
    )
    assert "values" not in got["perplexity"] and "values" in direct
    assert got["perplexity"] == {k: v for k, v in direct.items() if k != "values"}
    assert ctx.results == got  # later metrics could read earlier ones


def test_method_cell_reads_the_model_job_and_global_scorer(bench, policy, global_rm, calls):
    """rm_accuracy.json of the model job is used as is; a global RM uses the global-rgd scorer;
    without a zero-shot cell: base scorer, no win rate; perplexity off: none."""
    written = {"mean": 0.123, "per_user": {"new0": 0.123}}
    ctx = context(
        bench,
        policy,
        method="global-rm",
        reward_model=global_rm,
        lam=2.0,
        generations=generations(bench, "chosen"),
        model_results={"rm_accuracy": written},
        settings=dict(SETTINGS, perplexity=False),
    )
    got = compute_cell_metrics(ctx)
    assert set(got) == {"rm_accuracy", "policy_accuracy", "base_policy_accuracy", "generation"}
    assert got["rm_accuracy"] is written
    assert calls == [
        dict(scorer="global-rgd", reward_model=global_rm, lam=2.0, batch_size=BATCH),
        dict(scorer="base", batch_size=BATCH),
    ]
    assert got["policy_accuracy"]["scorer"] == "global-rgd"
    assert got["base_policy_accuracy"] == policy_accuracy(
        policy, bench.query, scorer="base", batch_size=BATCH
    )


def test_switches_and_missing_inputs_leave_metrics_out(bench, policy, lore):
    zero_shot = ZeroShot({"policy_accuracy": {"mean": 0.5}}, generations(bench, "rejected"))
    gens = generations(bench, "chosen")
    win_off = context(
        bench, policy, reward_model=lore, lam=1.0, generations=gens, zero_shot=zero_shot,
        settings=dict(SETTINGS, win_rate=False, perplexity=False),
    )  # fmt: skip
    off = {"win_rate", "perplexity", *SELECTION_KEYS}
    assert set(compute_cell_metrics(win_off)) == RUN_METRIC_KEYS - off - SIM_KEYS
    no_gens = context(bench, policy, reward_model=lore, lam=1.0, zero_shot=zero_shot)
    assert set(compute_cell_metrics(no_gens)) == {
        "rm_accuracy", "policy_accuracy", "base_policy_accuracy"
    }  # fmt: skip
    zs_without_gens = context(
        bench, policy, reward_model=lore, lam=1.0, generations=gens,
        zero_shot=ZeroShot(zero_shot.metrics, None), settings=dict(SETTINGS, perplexity=False),
    )  # fmt: skip
    assert "win_rate" not in compute_cell_metrics(zs_without_gens)
    no_refs = Benchmark("nr", bench.train, bench.support, bench.query)
    ctx = context(no_refs, policy, kind="baseline", method="zero-shot", decoder="zero-shot",
                  generations=gens, settings=dict(SETTINGS, perplexity=False))  # fmt: skip
    assert set(compute_cell_metrics(ctx)) == {"policy_accuracy", "base_policy_accuracy"}


def test_zero_shot_and_icl_cells_equal_direct_calls(bench, policy, calls):
    gens = generations(bench, "rejected")
    zero = context(
        bench, policy, kind="baseline", method="zero-shot", decoder="zero-shot", generations=gens
    )
    got = compute_cell_metrics(zero)
    assert list(got) == ["policy_accuracy", "base_policy_accuracy", "generation", "perplexity"]
    assert got["policy_accuracy"] == policy_accuracy(
        policy, bench.query, scorer="base", batch_size=BATCH
    )
    assert got["base_policy_accuracy"] is got["policy_accuracy"]
    assert got["generation"] == naive_rouge_only(bench, gens)
    icl_settings = {"max_prompt_tokens": 256}
    icl = context(
        bench, policy, kind="baseline", method="icl", decoder="icl", shots=2, icl=icl_settings,
        settings=dict(SETTINGS, perplexity=False),
    )  # fmt: skip
    got = compute_cell_metrics(icl)
    assert list(got) == ["policy_accuracy"]  # no generations; no base accuracy in ICL cells
    support = {u.user: list(u.support) for u in bench.adapt_users()}
    want = dict(
        scorer="icl", support=support, shots=2, seed=1, batch_size=BATCH, icl_decoder="icl",
        icl_settings=icl_settings,
    )  # fmt: skip
    assert calls[-1] == want
    assert got["policy_accuracy"] == policy_accuracy(policy, bench.query, **want)


def test_bertscore_model_gives_behavioural_alignment(bench, monkeypatch):
    seen: list[dict[str, Any]] = []

    def fake_bertscore(predictions, references, **kwargs):
        seen.append(kwargs)
        return [0.25 + 0.5 * (p == r) for p, r in zip(predictions, references, strict=True)]

    monkeypatch.setattr(generation_module, "bertscore_f1", fake_bertscore)
    gens = generations(bench, "chosen")
    settings = dict(
        SETTINGS, generation={"bertscore_model": "some/encoder", "bertscore_num_layers": 3}
    )
    ctx = context(bench, None, kind="baseline", method="icl-rag", decoder="icl-rag",
                  generations=gens, settings=settings)  # fmt: skip
    got = compute_cell_metrics(ctx)
    assert set(got) == {"generation"}  # no policy: no policy accuracy, no perplexity
    want = behavioural_alignment(gens, bench.completions, "some/encoder", num_layers=3)
    assert got["generation"] == want
    assert want["bertscore_model"] == "some/encoder" and want["bertscore_layers"] == 3
    assert want["missing"] == 1 and seen[0]["model"] == "some/encoder"
    assert seen[0]["num_layers"] == 3


# ---------------------------------------------------------------- a plugin reaches the report
@pytest.fixture
def toy_metric(monkeypatch):
    """A metric registered for one test only (the registry's entries are restored after)."""
    METRICS.names()  # import the real plugins first
    monkeypatch.setattr(METRICS, "_entries", dict(METRICS._entries))

    @register_metric("toy_score", summary="Characters per generation, a toy plugin for tests")
    class Toy(CellMetric):
        needs = frozenset({"generations"})
        kinds = frozenset({"baseline"})
        order = 70
        columns = (
            Column("toy_score", ("toy_score",), "Toy", None, "number", ("baseline",)),
            Column("toy_share", ("toy_score", "share"), "Toy share", False, "fraction"),
        )

        def compute(self, ctx: CellContext) -> dict[str, Any]:
            texts = [g["text"] for g in ctx.generations or []]
            return {"mean": statistics.fmean(map(len, texts)), "share": {"mean": 0.5}}

    return Toy


def test_a_registered_metric_is_computed_listed_and_reported(
    toy_metric, bench, tmp_path, caplog, capsys
):
    assert "toy_score" in METRICS
    assert [c.key for c in report_columns()][-3:] == ["toy_score", "toy_share", "lambda"]
    gens = [{"user": "u", "id": "1", "text": "abcd"}, {"user": "u", "id": "2", "text": "ab"}]
    ctx = context(bench, None, kind="baseline", method="zero-shot", decoder="zero-shot",
                  generations=gens, settings=dict(SETTINGS, perplexity=False))  # fmt: skip
    assert compute_cell_metrics(ctx)["toy_score"] == {"mean": 3.0, "share": {"mean": 0.5}}

    run = make_run(tmp_path, unfinished=False)
    for path in sorted((run / "cells").glob(f"*/{METRICS_FILE}")):
        data = json.loads(path.read_text("utf-8"))
        if data["kind"] == "baseline" and path.parent.name != "pref-acl__smol-135m__icl-2__s1":
            data["toy_score"] = {"mean": 10.0 + data["seed"], "share": {"mean": 0.25}}
            path.write_text(json.dumps(data), "utf-8")
    with caplog.at_level(logging.WARNING, logger="persalign"):
        files = write_report(run, tmp_path / "report", n_boot=0)
    assert "toy_score missing in 1 cell(s): pref-acl__smol-135m__icl-2__s1" in caplog.text
    header, *rows = csv.reader(io.StringIO(files["pref-acl/metrics.csv"].read_text("utf-8")))
    assert header[-3:] == ["Toy", "Toy share (%) ↓", "λ"]
    table = {(r[0], r[1]): r for r in rows}
    assert table[("135M", "zero-shot")][-3:] == ["10.50 ± 0.50", "25.00 ± 0.00", "--"]
    assert table[("135M", "icl-2")][-3] == "10.00 ± 0.00†"
    assert table[("135M", "lore")][-3:] == ["--", "--", "1.00 ± 0.00"]
    assert "Toy share (\\%) $\\downarrow$" in files["pref-acl/metrics.tex"].read_text("utf-8")
    assert "Toy share (%) ↓" in files["report.html"].read_text("utf-8")
    results = list(csv.reader(io.StringIO(files["results.csv"].read_text("utf-8"))))
    toy = [
        r for r in results if r[8] == "toy_score" and r[7] == "zero-shot" and r[1] == "smol-135m"
    ]
    assert [r[9:12] for r in toy] == [["10.500000", "0.500000", "2"]]
    order = [r[8] for r in results[1:] if r[1] == "smol-135m" and r[7] == "zero-shot"]
    assert order == [
        "policy_accuracy", "base_policy_accuracy", "rouge1", "rougeL", "bertscore_f1",
        "perplexity", "toy_score", "toy_share",
    ]  # fmt: skip
    code, out, _ = run_cli(["ls", "metrics"], capsys)  # last: the CLI sets up logging
    assert code == 0 and "toy_score" in out and "a toy plugin" in out
