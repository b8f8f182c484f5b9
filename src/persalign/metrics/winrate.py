"""Win rate (Table 5): the method's own reward model judges its RGD output against zero-shot.

    prompts = {(q.user, q.id): q.prompt for q in bench.query}
    result = win_rate(rm, rgd_generations, zero_shot_generations, prompts)
    result["mean"], result["ties"], result["unpaired_rgd"]

Generations are dicts (or objects) with ``user``, ``id`` and ``text``, as written by
``persalign generate``. The RGD and zero-shot outputs for the same (user, id) form a pair; the
RM scores both (``sequence_rewards``, one batched call) and the pair is a win when the RGD
output's reward is strictly higher. Ties (equal rewards, or identical texts, whose rewards can
differ in the last bits between batches) are counted separately and are not wins. The win rate
is computed per user and then averaged over users (``mean``); ``pooled`` is over all pairs.

A generation without a partner (``unpaired_rgd``, ``unpaired_zero_shot``), or without a prompt
(``no_prompt``), or a pair with an empty text, which a reward model cannot score (``empty``),
is counted and reported, never silently dropped. ``prompts_by_id`` maps ``(user, id)`` (or just
``id``, when ids are unique across users) to the prompt the outputs answer.

The ``win_rate`` cell metric (method cells with a zero-shot cell, when ``metrics.win_rate`` is on)
is ``win_rate(ctx.reward_model, ctx.generations, ctx.zero_shot.generations, ctx.prompts())``.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from persalign.errors import ConfigError
from persalign.metrics.base import CellContext, CellMetric, Column, register_metric

log = logging.getLogger(__name__)

Key = tuple[str, str]


def _get(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def _by_key(generations: Sequence[Any], what: str) -> dict[Key, str]:
    """(user, id) -> text; a missing field or a duplicated key is a ConfigError."""
    out: dict[Key, str] = {}
    for index, gen in enumerate(generations):
        user, gid, text = (_get(gen, name) for name in ("user", "id", "text"))
        if user is None or gid is None or text is None:
            raise ConfigError(
                f"{what} generation #{index + 1} needs user, id and text: {gen!r:.200}"
            )
        key = (str(user), str(gid))
        if key in out:
            raise ConfigError(f"two {what} generations for user {key[0]!r}, id {key[1]!r}")
        out[key] = str(text)
    return out


def _prompt(prompts_by_id: Mapping[Any, str], key: Key) -> str | None:
    prompt = prompts_by_id.get(key)
    return prompts_by_id.get(key[1]) if prompt is None else prompt


def win_summary(users: Sequence[str], outcomes: Sequence[str]) -> dict[str, Any]:
    """Win rate per user (ties and losses are not wins), its mean over users, and pooled.

    ``outcomes`` holds "win", "tie" or "loss" for each pair of ``users``.
    """
    by_user: dict[str, list[str]] = {}
    for user, outcome in zip(users, outcomes, strict=True):
        by_user.setdefault(user, []).append(outcome)
    per_user = {u: o.count("win") / len(o) for u, o in sorted(by_user.items())}
    wins, ties = outcomes.count("win"), outcomes.count("tie")
    nan = float("nan")
    return {
        "mean": statistics.fmean(per_user.values()) if per_user else nan,
        "pooled": wins / len(outcomes) if outcomes else nan,
        "per_user": per_user,
        "tie_rate": {u: o.count("tie") / len(o) for u, o in sorted(by_user.items())},
        "n": len(outcomes),
        "users": len(per_user),
        "wins": wins,
        "ties": ties,
        "losses": len(outcomes) - wins - ties,
    }


def win_rate(
    reward_model: Any,
    rgd_generations: Sequence[Any],
    zero_shot_generations: Sequence[Any],
    prompts_by_id: Mapping[Any, str],
) -> dict[str, Any]:
    """Table 5's win rate of RGD over zero-shot, judged by ``reward_model`` (see module doc).

    Returns ``{"mean", "pooled", "per_user", "tie_rate", "n", "users", "wins", "ties",
    "losses", "unpaired_rgd", "unpaired_zero_shot", "no_prompt", "empty"}``.
    """
    rgd = _by_key(rgd_generations, "RGD")
    zero = _by_key(zero_shot_generations, "zero-shot")
    keys, prompts, no_prompt, empty = [], [], 0, 0
    for key in sorted(rgd.keys() & zero.keys()):
        prompt = _prompt(prompts_by_id, key)
        if prompt is None:
            no_prompt += 1
        elif not rgd[key].strip() or not zero[key].strip():
            empty += 1
        else:
            keys.append(key)
            prompts.append(prompt)
    counts = {
        "unpaired_rgd": len(rgd.keys() - zero.keys()),
        "unpaired_zero_shot": len(zero.keys() - rgd.keys()),
        "no_prompt": no_prompt,
        "empty": empty,
    }
    if any(counts.values()):
        log.warning("win rate: pairs not scored: %s", counts)
    outcomes: list[str] = []
    if keys:
        users = [k[0] for k in keys]
        texts = [rgd[k] for k in keys] + [zero[k] for k in keys]
        rewards = reward_model.sequence_rewards(prompts + prompts, texts, users + users)
        rewards = [float(r) for r in (rewards.tolist() if hasattr(rewards, "tolist") else rewards)]
        n = len(keys)
        for i, key in enumerate(keys):
            r_rgd, r_zero = rewards[i], rewards[n + i]
            if rgd[key] == zero[key] or r_rgd == r_zero:
                outcomes.append("tie")
            else:
                outcomes.append("win" if r_rgd > r_zero else "loss")
    return {**win_summary([k[0] for k in keys], outcomes), **counts}


@register_metric(
    "win_rate",
    summary="Table 5: the method's own RM prefers its output to zero-shot's, per user then mean",
)
class WinRate(CellMetric):
    """Win rate of the method's generations over the zero-shot cell's (metrics.win_rate)."""

    needs = frozenset({"generations", "reward_model", "zero_shot"})
    kinds = frozenset({"method"})
    order = 40
    columns = (Column("win_rate", ("win_rate",), "Win Rate", True, "fraction", ("method",)),)

    def enabled(self, settings: dict[str, Any]) -> bool:
        return bool(settings.get("win_rate"))

    def applies(self, ctx: CellContext) -> bool:
        zero_shot = ctx.zero_shot
        return super().applies(ctx) and zero_shot is not None and zero_shot.generations is not None

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        zero_shot = ctx.zero_shot.generations if ctx.zero_shot is not None else None
        return win_rate(ctx.reward_model, ctx.generations or [], zero_shot or [], ctx.prompts())
