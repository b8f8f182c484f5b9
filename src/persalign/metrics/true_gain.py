"""True gain: how much a method raises the simulated user's own reward over zero-shot.

    gain = true_gain(bench, generations, zero_shot_generations)
    gain["mean"], gain["per_user"]["sim-007"], gain["pairs"], gain["unpaired"]

For every query prompt with both the cell's and the zero-shot cell's output, the difference
r_u(x, y_method) - r_u(x, y_zero_shot); per user, then the mean over users (``pooled``: over
pairs). Outputs without a partner are counted in ``unpaired``. The ``true_gain`` cell metric
covers method cells on sim benchmarks with a zero-shot cell that has generations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.true_reward import generation_rewards, summary
from persalign.types import Benchmark


def paired_rewards(
    bench: Benchmark,
    generations: Sequence[Mapping[str, Any]],
    zero_shot_generations: Sequence[Mapping[str, Any]],
) -> tuple[dict, dict, int]:
    """(r_u of the cell's outputs, r_u of zero-shot's, both on their common (user, id) keys,
    and how many outputs of either side have no partner)."""
    mine = generation_rewards(bench, generations)
    zero = generation_rewards(bench, zero_shot_generations)
    common = sorted(mine.keys() & zero.keys())
    unpaired = len(mine) + len(zero) - 2 * len(common)
    return {k: mine[k] for k in common}, {k: zero[k] for k in common}, unpaired


def true_gain(
    bench: Benchmark,
    generations: Sequence[Mapping[str, Any]],
    zero_shot_generations: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """``{"mean", "pooled", "per_user", "n", "users", "pairs", "unpaired"}`` (module doc)."""
    mine, zero, unpaired = paired_rewards(bench, generations, zero_shot_generations)
    out = summary({k: mine[k] - zero[k] for k in mine})
    return {**out, "pairs": out["n"], "unpaired": unpaired}


@register_metric(
    "true_gain", summary="Sim benchmarks: r_u(method output) - r_u(zero-shot output), per user"
)
class TrueGain(CellMetric):
    """The paired gain in true reward over the zero-shot cell's outputs."""

    needs = frozenset({"generations", "true_reward", "zero_shot"})
    kinds = frozenset({"method"})
    order = 61
    columns = (Column("true_gain", ("true_gain",), "True Gain", True, "number"),)

    def applies(self, ctx: CellContext) -> bool:
        zero = ctx.zero_shot
        return super().applies(ctx) and zero is not None and zero.generations is not None

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        zero = ctx.zero_shot.generations if ctx.zero_shot is not None else None
        return true_gain(ctx.benchmark, ctx.generations or [], zero or [])
