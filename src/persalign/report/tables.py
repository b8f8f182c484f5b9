"""The paper's tables, built from a run's results (see :mod:`persalign.report.results`).

    results = load_run("runs/demo")
    for table in benchmark_tables(results, "pref-acl"):
        print(to_markdown(table))

Per benchmark:

- ``ranking``: RM accuracy and policy accuracy per method (rows) and scale (columns), with
  Pearson / Spearman / Kendall rows across the reward methods (the paper's Tables 2, 4, 7);
- ``win_rate``: each method's RM judging its RGD output against zero-shot (Table 5), pooled over
  examples with a tie as half a win, and the per-user mean beside it, per scale;
- ``rouge1_correlation``: each ranking metric against ROUGE-1 across methods, per scale (Table 6);
- ``correlations``: every correlation above with its p-value, n and a bootstrap CI over users;
- ``policy_<name>``: RM accuracy, policy accuracy, ROUGE-1, ROUGE-L, BERTScore-F1 per method and
  baseline for one policy (Tables 9-12); the BERTScore header names its scale and model
  ("BERTScore-F1 (rescaled, roberta-large)", "BERTScore-F1 (raw, all-minilm-l6-v2)"), as in
  ``metrics``;
- ``metrics``: every report column (each registered cell metric's, then lambda) per policy,
  method and baseline, so a metric added as a plugin shows up with no change here.

Scores are percentages, "mean ± std" over seeds (population std, so one seed shows "± 0.00");
correlations use the method means over seeds and show three decimals with the p-value. "--" is a
value that is not available; "†" marks a mean over fewer seeds than the run has.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from persalign.metrics.schema import report_columns
from persalign.metrics.winrate import DEFAULT_TIES, TIES, tie_rule
from persalign.report.cell_parsing import OWN_POLICY
from persalign.report.correlation_tables import (
    correlate,
    correlation_detail_table,
    correlation_note,
    correlation_points,
    correlation_units,
    rouge_correlation_table,
)
from persalign.report.formatting import (
    DAGGER,
    LABELS,
    NA,
    STATISTICS,
    bertscore_label,
    column_header,
    fmt_column,
    fmt_corr,
    fmt_stat,
    slug,
)
from persalign.report.omissions import (
    counted_notes,
    generation_notes,
    left_out_note,
    row_name,
    value,
    win_pairs_notes,
)
from persalign.report.results import PolicyColumn, Row, RunResults
from persalign.report.tabular import Table

log = logging.getLogger(__name__)

METHODS_GROUP = "Reward models + ARGS"
DPO_GROUP = "DPO"  # the paper's group of P-DPO: a policy that writes itself, no ARGS
PERSONALIZED_GROUP = "Personalized RMs + ARGS"
GLOBAL_GROUP = "Global RMs + ARGS"
BASELINES_GROUP = "Baselines"
PERCENT_NOTE = (
    "Values in %: mean ± std over seeds (population std of the per-seed values, "
    "so a single seed shows ± 0.00); -- = not available."
)
DAGGER_NOTE = "†: mean over fewer seeds than the run has (a cell unfinished or a metric null)."
PER_USER_MEAN = "per-user mean"
BERTSCORE_NOTE = (
    "BERTScore-F1: rescaled = bert-score's baseline rescaling (F - b) / (1 - b), the paper's "
    "scale (roberta-large); raw = plain F1, where bert-score ships no baseline for the model "
    "(metrics.generation.bertscore_rescale). Scores from different models or scales are not "
    "comparable."
)


def group(row: Row) -> str:
    """The row's group, as the paper's tables split them: personalized, global, DPO (a method
    that writes with its own policy, P-DPO), baselines."""
    if row.kind == "baseline":
        return BASELINES_GROUP
    if OWN_POLICY in row.traits:
        return DPO_GROUP
    return {True: PERSONALIZED_GROUP, False: GLOBAL_GROUP}.get(row.personalized, METHODS_GROUP)


def _with_dagger_note(table: Table) -> Table:
    if any(DAGGER in cell for row in table.rows for cell in row):
        table.notes.append(DAGGER_NOTE)
    return table


def tie_note(weights: list[float]) -> str:
    """What a tie counted as in the win rates shown (metrics.win_rate.ties)."""
    what = {0.5: "half a win", 0.0: "no win"}
    if len(weights) > 1:
        return "Ties (equal rewards, or the same text) count differently between cells: mixed."
    counts = what.get(weights[0], f"{weights[0]:g} of a win") if weights else "no win"
    return f"A tie (equal rewards, or the same text) counts as {counts} (metrics.win_rate.ties)."


def tie_header(weights: list[float]) -> str:
    """The tie rule for the win-rate table's title: "ties lose", "ties count half" or mixed."""
    if len(weights) > 1:
        return "ties counted differently between cells"
    return tie_rule(weights[0] if weights else TIES[DEFAULT_TIES])


def ranking_table(results: RunResults, benchmark: str) -> Table:
    """Tables 2/4/7: RM accuracy, policy accuracy per scale, and the correlation rows."""
    columns = results.policies(benchmark)
    n_method = results.expected_seeds(benchmark, "method")
    rows = []
    for row in results.rows(benchmark, "method"):
        rm = results.stat_over_policies(benchmark, row.label, "rm_accuracy")
        rm_text = fmt_stat(rm, n_method)
        if rm is None and columns:
            rm_text = results.status(benchmark, columns[0].policy, row.label, "rm_accuracy") or NA
        cells = [
            value(results, benchmark, c.policy, row.label, "policy_accuracy", n_method)
            for c in columns
        ]
        rows.append([group(row), row_name(row), rm_text, *cells])
    for row in results.rows(benchmark, "baseline"):
        cells = [
            fmt_stat(
                results.stat(benchmark, c.policy, row.label, "policy_accuracy"),
                results.expected_seeds(benchmark, "baseline", row.label),
            )
            for c in columns
        ]
        rows.append([group(row), row.label, NA, *cells])
    units = correlation_units(results)
    corrs = [
        correlate(
            *correlation_points(
                results, benchmark, c.policy, "rm_accuracy", "policy_accuracy", units
            )[1:]
        )
        for c in columns
    ]
    for statistic, label in STATISTICS.items():
        rows.append(["RM vs policy acc.", label, NA, *[fmt_corr(r, statistic) for r in corrs]])
    table = Table(
        key="ranking",
        title=f"RM accuracy and policy accuracy on {benchmark}",
        caption=(
            "Reward-model accuracy on the adaptation users' held-out preferences and policy "
            "accuracy of each policy scale (cf. the paper's Tables 2, 4 and 7); correlation rows "
            f"over units: {units}."
        ),
        columns=["Group", "Method", "RM Acc", *[f"Policy Acc {c.label}" for c in columns]],
        rows=rows,
        notes=[
            PERCENT_NOTE,
            "RM Acc is shared by all policies; baselines have no reward model. Policy accuracy "
            "uses the scorer each row generates with: the RGD scorer for reward methods under "
            "ARGS, the method's own policy for P-DPO (no RM accuracy, as in the paper), the base "
            "scorer for zero-shot (the paper's Prior) and the ICL scorer for ICL baselines; a "
            "method without RGD support (PAL) has none (--).",
            correlation_note(units),
        ],
    )
    return _with_dagger_note(left_out_note(table))


def win_rate_table(results: RunResults, benchmark: str) -> Table:
    """Table 5: win rate of each method's RGD output over zero-shot, judged by its own RM;
    per scale the pooled rate (the paper's) and the per-user mean."""
    columns = results.policies(benchmark)
    expected = results.expected_seeds(benchmark, "method")
    metrics = ("win_rate", "win_rate_per_user")
    rows = [
        [
            group(row),
            row_name(row),
            *[
                value(results, benchmark, c.policy, row.label, m, expected)
                for c in columns
                for m in metrics
            ],
        ]
        for row in results.rows(benchmark, "method")
    ]
    headers = [f"{c.label} ({PER_USER_MEAN})" if m != "win_rate" else c.label
               for c in columns for m in metrics]  # fmt: skip
    table = Table(
        key="win_rate",
        title=f"Win rate against zero-shot on {benchmark} "
        f"({tie_header(results.win_tie_weights(benchmark))})",
        caption=(
            "Fraction of query prompts where a method's own reward model prefers its RGD "
            "generation over the zero-shot one, pooled over all prompts (cf. Table 5); "
            f"{PER_USER_MEAN}: the same fraction per user, averaged over users. Circular: prone "
            "to reward hacking."
        ),
        columns=["Group", "Method", *headers],
        rows=rows,
        notes=[
            PERCENT_NOTE,
            tie_note(results.win_tie_weights(benchmark)),
            *win_pairs_notes(results, benchmark),
        ],
    )
    return _with_dagger_note(left_out_note(table))


def policy_table(results: RunResults, benchmark: str, column: PolicyColumn) -> Table:
    """Tables 9-12: every metric per method and baseline for one policy."""
    metrics = ("rm_accuracy", "policy_accuracy", "rouge1", "rougeL", "bertscore_f1")
    rows = []
    for kind in ("method", "baseline"):
        for row in results.rows(benchmark, kind):
            expected = results.expected_seeds(benchmark, kind, row.label)
            rows.append(
                [
                    group(row),
                    row_name(row),
                    *[
                        value(results, benchmark, column.policy, row.label, m, expected)
                        for m in metrics
                    ],
                ]
            )
    scales = results.bertscore_scales(benchmark, column.policy)
    named = [f"{model} ({'rescaled' if rescaled else 'raw'})" for model, rescaled in scales]
    if len(scales) > 1:
        log.warning(
            "%s / %s: BERTScore from several models or scales (%s): not comparable",
            benchmark, column.policy, ", ".join(named),
        )  # fmt: skip
    bert = f"BERTScore model: {', '.join(named)}" if scales else "BERTScore: not computed"
    if len(scales) > 1:
        bert += " (several models or scales: their scores are not comparable)"
    labels = {**LABELS, "bertscore_f1": bertscore_label(scales)}
    table = Table(
        key=f"policy_{slug(column.policy)}",
        title=f"{benchmark}, policy {column.policy} ({column.label})",
        caption=(
            "Ranking accuracy and generation quality against the users' own completions, per "
            f"method and baseline (cf. Tables 9-12). {bert}."
        ),
        columns=["Group", "Method", *[labels[m] for m in metrics]],
        rows=rows,
        notes=[PERCENT_NOTE, BERTSCORE_NOTE, *generation_notes(results, benchmark, column.policy)],
    )
    return _with_dagger_note(left_out_note(table))


def metrics_table(results: RunResults, benchmark: str) -> Table:
    """Every report column per policy (row group), method and baseline."""
    columns = results.columns or report_columns()
    scales = results.bertscore_scales(benchmark)
    headers = [
        column_header(replace(c, label=bertscore_label(scales, c.label)))
        if c.key == "bertscore_f1"
        else column_header(c)
        for c in columns
    ]
    rows = []
    for policy in results.policies(benchmark):
        for row in results.rows(benchmark):
            expected = results.expected_seeds(benchmark, row.kind, row.label)
            values = [
                fmt_column(stat, c, expected)
                if (stat := results.stat(benchmark, policy.policy, row.label, c.key)) is not None
                else results.status(benchmark, policy.policy, row.label, c.key) or NA
                for c in columns
            ]
            rows.append([policy.label, row_name(row), *values])
    table = Table(
        key="metrics",
        title=f"Every metric on {benchmark}",
        caption=(
            "Each cell metric's columns (persalign ls metrics) and the chosen lambda, per policy, "
            "reward method and baseline."
        ),
        columns=["Policy", "Method", *headers],
        rows=rows,
        notes=[
            "Mean ± std over seeds (population std of the per-seed values, so a single seed "
            "shows ± 0.00); (%): in %, other columns as they are; ↑ / ↓: higher / lower is "
            "better; -- = not available.",
            BERTSCORE_NOTE,
            *counted_notes(results, benchmark, None, ""),
        ],
    )
    return _with_dagger_note(left_out_note(table))


def benchmark_tables(results: RunResults, benchmark: str, n_boot: int = 1000) -> list[Table]:
    """All tables of one benchmark, in the order the report shows them."""
    tables = [
        ranking_table(results, benchmark),
        win_rate_table(results, benchmark),
        rouge_correlation_table(results, benchmark),
        correlation_detail_table(results, benchmark, n_boot),
    ]
    tables += [policy_table(results, benchmark, c) for c in results.policies(benchmark)]
    tables.append(metrics_table(results, benchmark))
    return [replace(t, label=f"tab:{slug(benchmark)}:{t.key}") for t in tables]
