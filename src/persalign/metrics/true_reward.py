"""True reward: the simulated user's own reward r_u of each generation (sim benchmarks only).

    rewards = generation_rewards(bench, generations)      # {(user, id): r_u(x, y)}
    result = per_user_mean([k[0] for k in rewards], list(rewards.values()))
    result["mean"], result["per_user"]["sim-007"]

On a benchmark built by ``persalign data build sim`` (``bench.true_reward``; docs/
simulated-users.md) the quality of a generation is measured, not guessed: r_u(x, y) =
w_u . phi(x, y) for the query prompt x of user u. The ``true_reward`` cell metric (every cell
with generations on a sim benchmark) is its mean per user, then over users (``pooled``: over
generations), and ``n``. The other true-* metrics and ``captured`` build on
``generation_rewards``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from persalign.errors import ConfigError
from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.generation import per_user_mean
from persalign.types import Benchmark

Key = tuple[str, str]


def generation_rewards(
    bench: Benchmark, generations: Sequence[Mapping[str, Any]]
) -> dict[Key, float]:
    """{(user, id): r_u(x, y)} of each generation of a query prompt (sorted by key)."""
    truth = bench.true_reward
    if truth is None:
        raise ConfigError(f"benchmark {bench.name!r} has no true reward (not a sim benchmark)")
    prompts = {(q.user, q.id): q.prompt for q in bench.query}
    keys = sorted((str(g["user"]), str(g["id"])) for g in generations)
    texts = {(str(g["user"]), str(g["id"])): str(g["text"]) for g in generations}
    missing = [k for k in keys if k not in prompts]
    if missing:
        raise ConfigError(f"generation for user {missing[0][0]!r}, id {missing[0][1]!r}: no query")
    values = truth.rewards(
        [prompts[k] for k in keys], [texts[k] for k in keys], [k[0] for k in keys]
    )
    return dict(zip(keys, values, strict=True))


def summary(rewards: Mapping[Key, float]) -> dict[str, Any]:
    """``{"mean", "pooled", "per_user", "n", "users"}`` of per-item values."""
    out = per_user_mean([k[0] for k in rewards], list(rewards.values()))
    return {**out, "n": len(rewards), "users": len(out["per_user"])}


@register_metric(
    "true_reward", summary="Sim benchmarks: r_u of each generation, per user then mean"
)
class TrueReward(CellMetric):
    """The simulated users' own reward of the cell's generations."""

    needs = frozenset({"generations", "true_reward"})
    order = 60
    columns = (Column("true_reward", ("true_reward",), "True Reward", True, "number"),)

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        return summary(generation_rewards(ctx.benchmark, ctx.generations or []))
