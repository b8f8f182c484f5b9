"""The schema of a cell's ``metrics.json``: the one place the runner and the report read it from.

    from persalign.metrics.schema import METRICS_FILE, FIELDS, cell_record, report_columns
    record = cell_record(fields, compute_cell_metrics(ctx))   # what the runner writes
    write_json(folder / METRICS_FILE, record)
    [c.key for c in report_columns()]
    # ['rm_accuracy', 'prefix_accuracy', 'policy_accuracy', 'gt_mrr', 'gt_top1',
    #  'base_policy_accuracy', 'win_rate', 'win_rate_per_user', 'steering_accuracy', 'rouge1',
    #  'rougeL', 'bertscore_f1', 'perplexity', 'lambda']

A metrics.json holds the fixed fields below (what the cell is, the lambda chosen for it, its spec
hash, wall-clock time and ``cost``, a COST_FIELDS mapping) and one top-level key per registered
cell metric (``persalign.metrics.METRICS``), null where the metric does not apply to the cell.
``report_columns`` is every number the report reads from it: each registered metric's columns in
computation order, then the fixed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from persalign.metrics.base import KINDS, METRICS, Column, ordered_metrics

METRICS_FILE = "metrics.json"

# field -> what it holds (every cell has every field; null where it does not apply)
FIELDS: dict[str, str] = {
    "cell": "the cell's id: <benchmark>__<policy>__<row>__s<seed>",
    "kind": f"{' or '.join(KINDS)}: a reward method under its decoder, or a baseline",
    "benchmark": "the benchmark's name in the run config",
    "policy": "the policy's name in the run config",
    "scale": "the policy's scale label in tables (e.g. 135M)",
    "scale_params": "the policy's parameters in millions (orders the scales)",
    "seed": "the seed of the cell (reward model training, ICL demonstrations, sampling)",
    "method": "the reward method, or the baseline (zero-shot, icl, icl-rag)",
    "shots": "demonstrations per prompt (ICL and ICL-RAG cells; null otherwise)",
    "personalized": "whether the reward model is personalized (method cells; null otherwise)",
    "lambda": "the decoder's lambda, chosen on the train users' held-out items (method cells)",
    "lambda_curve": "the lambda grid's selection figures (null with a one-value grid)",
    "spec_hash": "the hash of the cell's spec (a rerun with the same hash reuses the cell)",
    "seconds": "wall-clock seconds of the cell (never read by the report)",
    "cost": "what the cell cost on this machine (COST_FIELDS; wall-clock and memory, so the "
    "report may read it but it is not deterministic and never part of the spec hash)",
}

# cost -> what it holds (null where it does not apply; see persalign.runs.cost)
COST_FIELDS: dict[str, str] = {
    "train_seconds": "the reward model's training time (its model job; null for baselines)",
    "adapt_seconds_per_user": "adapting one new user, the mean over users (null for baselines)",
    "decode_seconds_per_token": "generation wall-clock per generated token, this machine",
    "policy_forwards_per_token": "rows through the writing model per generated token (a batch "
    "call of B rows counts B; prompt passes included)",
    "reward_forwards_per_token": "rows through the reward model per generated token (ARGS "
    "scores a row's k candidates in one call, 1 row; k rows when the tokenizers differ)",
    "tokens_generated": "tokens of the cell's generations",
    "peak_rss_mib": "peak resident memory of the process while the cell ran (MiB)",
    "peak_gpu_mib": "peak CUDA memory allocated while the cell ran (MiB; null without CUDA)",
    "start_seconds": "the cell's seconds starting: plugins, benchmark loading and verification, "
    "model loads (none when kept loaded from an earlier job), a Ray worker's start on its first "
    "job (persalign.runs.cost.JobClock)",
    "compute_seconds": "the cell's other seconds: lambda selection, generation, metrics",
    "start_share": "start_seconds / (start_seconds + compute_seconds)",
}

# numbers among the fixed fields that the report shows
FIXED_COLUMNS: tuple[Column, ...] = (Column("lambda", ("lambda",), "λ", None, "number"),)


def metric_keys() -> list[str]:
    """The top-level key of every registered cell metric, in computation order."""
    return [metric.key for metric in ordered_metrics()]


def report_columns() -> list[Column]:
    """Every column the report reads: each metric's (computation order), then FIXED_COLUMNS.

    ValueError when two columns share a key.
    """
    columns = [c for metric in ordered_metrics() for c in metric.columns]
    columns += FIXED_COLUMNS
    keys = [c.key for c in columns]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"report columns with the same key: {', '.join(duplicates)}")
    return columns


def cell_record(fields: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A whole metrics.json: every fixed field (ValueError if one is missing or unknown) and
    every registered metric's key, null where ``metrics`` has no value."""
    missing, unknown = set(FIELDS) - set(fields), set(fields) - set(FIELDS)
    if missing or unknown:
        raise ValueError(
            f"metrics.json fields: missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    extra = sorted(set(metrics) - set(METRICS.names()))
    if extra:
        raise ValueError(f"metrics.json: {extra} are not registered metrics")
    return {**dict(fields), **{key: metrics.get(key) for key in metric_keys()}}
