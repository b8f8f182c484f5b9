"""True win rate: the simulated user's own reward prefers the method's output to zero-shot's.

    result = true_win_rate(bench, generations, zero_shot_generations)
    result["rate"], result["per_user_mean"], result["ties"]

A pair (the same query prompt) is a win when r_u(x, y_method) > r_u(x, y_zero_shot), a tie when
the rewards are equal (identical texts included), a loss otherwise. Ties are not wins: the
rate is wins / pairs (win_rate's ``win_summary`` with ``ties="loss"``), pooled and per user. No
reward model judges, so nothing is circular. The ``true_win_rate`` cell metric covers method
cells on sim benchmarks with a zero-shot cell that has generations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.true_gain import paired_rewards
from persalign.metrics.winrate import win_summary
from persalign.types import Benchmark


def true_win_rate(
    bench: Benchmark,
    generations: Sequence[Mapping[str, Any]],
    zero_shot_generations: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """win_summary's fields (ties count as no win) plus ``unpaired``."""
    mine, zero, unpaired = paired_rewards(bench, generations, zero_shot_generations)
    keys = sorted(mine)
    outcomes = [
        "tie" if mine[k] == zero[k] else ("win" if mine[k] > zero[k] else "loss") for k in keys
    ]
    return {**win_summary([k[0] for k in keys], outcomes, "loss"), "unpaired": unpaired}


@register_metric(
    "true_win_rate",
    summary="Sim benchmarks: r_u(method output) > r_u(zero-shot output); ties are not wins",
)
class TrueWinRate(CellMetric):
    """Win rate over the zero-shot cell judged by the simulated users' own reward."""

    needs = frozenset({"generations", "true_reward", "zero_shot"})
    kinds = frozenset({"method"})
    order = 62
    columns = (
        Column("true_win_rate", ("true_win_rate", "rate"), "True Win Rate", True, "fraction"),
    )  # fmt: skip

    def applies(self, ctx: CellContext) -> bool:
        zero = ctx.zero_shot
        return super().applies(ctx) and zero is not None and zero.generations is not None

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        zero = ctx.zero_shot.generations if ctx.zero_shot is not None else None
        return true_win_rate(ctx.benchmark, ctx.generations or [], zero or [])
