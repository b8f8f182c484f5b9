"""Win rate (Table 5): the method's own reward model judges its RGD output against zero-shot.

    prompts = {(q.user, q.id): q.prompt for q in bench.query}
    result = win_rate(rm, rgd_generations, zero_shot_generations, prompts)
    result["rate"], result["per_user_mean"], result["ties"], result["unpaired_rgd"]
    win_rate(rm, rgd_generations, zero_shot_generations, prompts, ties="half")  # a tie: half

Generations are dicts (or objects) with ``user``, ``id`` and ``text``, as written by
``persalign generate``. The RGD and zero-shot outputs for the same (user, id) form a pair; the
RM scores both (``sequence_rewards``, one batched call) and the pair is a win when the RGD
output's reward is strictly higher, a tie when the rewards are equal or the texts identical
(their rewards can differ in the last bits between batches), a loss otherwise.

``rate`` (the headline, Table 5's "fraction of examples"): pooled over all pairs, ``wins / n``:
the paper counts a prompt when the judge "judges the RGD output as better", so by default a tie
is not a win (``ties="loss"``, ``tie_weight`` 0). ``ties="half"`` counts a tie as half a win,
``(wins + ties / 2) / n``. ``per_user_mean``: the same rate per user (``per_user``), averaged
over users. The counts of wins, ties and losses are always there, and ``tie_rule`` names the rule
(the report's win-rate table names it in its header).

A generation without a partner (``unpaired_rgd``, ``unpaired_zero_shot``), or without a prompt
(``no_prompt``), or a pair with an empty text, which a reward model cannot score (``empty``),
is counted and reported, never silently dropped. ``prompts_by_id`` maps ``(user, id)`` (or just
``id``, when ids are unique across users) to the prompt the outputs answer.

The ``win_rate`` cell metric (method cells with a zero-shot cell; ``metrics.win_rate.enabled``)
is ``win_rate(ctx.reward_model, ctx.generations, ctx.zero_shot.generations, ctx.prompts(),
metrics.win_rate.ties)``; its report columns are ``rate`` (Win Rate) and ``per_user_mean``.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from persalign.errors import ConfigError
from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.settings import MetricSettings

log = logging.getLogger(__name__)

Key = tuple[str, str]
TIES = {"loss": 0.0, "half": 0.5}  # what a tie counts as (metrics.win_rate.ties)
DEFAULT_TIES = "loss"  # the paper: a prompt counts when the RGD output is judged better
TIE_RULES = {"loss": "ties lose", "half": "ties count half"}  # how tables name the rule


class WinRateSettings(MetricSettings):
    """Options of the win rate (``metrics.win_rate``)."""

    ties: Literal["loss", "half"] = Field(
        DEFAULT_TIES,
        description="What a tie (equal rewards or texts) counts as: loss (the paper: a win only "
        "when the RGD output is judged better) or half a win.",
    )


def tie_rule(weight: float) -> str:
    """How a table names the tie rule of a ``tie_weight`` ("ties lose", "ties count half")."""
    names = {TIES[k]: v for k, v in TIE_RULES.items()}
    return names.get(weight, f"a tie counts {weight:g}")


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


def tie_weight(ties: str) -> float:
    """What a tie counts as: ``half`` -> 0.5, ``loss`` -> 0.0; ConfigError otherwise."""
    if ties not in TIES:
        raise ConfigError(f"win-rate ties must be one of {', '.join(TIES)}, got {ties!r}")
    return TIES[ties]


def _rate(outcomes: Sequence[str], weight: float) -> float:
    return (outcomes.count("win") + weight * outcomes.count("tie")) / len(outcomes)


def win_summary(
    users: Sequence[str], outcomes: Sequence[str], ties: str = DEFAULT_TIES
) -> dict[str, Any]:
    """The pooled win rate, per user and its mean over users, a tie counting as ``ties`` says.

    ``outcomes`` holds "win", "tie" or "loss" for each pair of ``users``.
    """
    weight = tie_weight(ties)
    by_user: dict[str, list[str]] = {}
    for user, outcome in zip(users, outcomes, strict=True):
        by_user.setdefault(user, []).append(outcome)
    per_user = {u: _rate(o, weight) for u, o in sorted(by_user.items())}
    wins, ties_n = outcomes.count("win"), outcomes.count("tie")
    nan = float("nan")
    return {
        "rate": _rate(outcomes, weight) if outcomes else nan,
        "per_user_mean": statistics.fmean(per_user.values()) if per_user else nan,
        "per_user": per_user,
        "tie_weight": weight,
        "tie_rule": TIE_RULES[ties],
        "tie_rate": {u: o.count("tie") / len(o) for u, o in sorted(by_user.items())},
        "n": len(outcomes),
        "users": len(per_user),
        "wins": wins,
        "ties": ties_n,
        "losses": len(outcomes) - wins - ties_n,
    }


def win_rate(
    reward_model: Any,
    rgd_generations: Sequence[Any],
    zero_shot_generations: Sequence[Any],
    prompts_by_id: Mapping[Any, str],
    ties: str = DEFAULT_TIES,
) -> dict[str, Any]:
    """Table 5's win rate of RGD over zero-shot, judged by ``reward_model`` (see module doc).

    Returns ``{"rate", "per_user_mean", "per_user", "tie_weight", "tie_rule", "tie_rate", "n",
    "users", "wins", "ties", "losses", "unpaired_rgd", "unpaired_zero_shot", "no_prompt",
    "empty"}``.
    """
    tie_weight(ties)  # a bad value fails before the reward model runs
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
    return {**win_summary([k[0] for k in keys], outcomes, ties), **counts}


@register_metric(
    "win_rate",
    summary="Table 5: the method's own RM prefers its output to zero-shot's, pooled, ties lose",
)
class WinRate(CellMetric):
    """Win rate of the method's generations over the zero-shot cell's (metrics.win_rate)."""

    settings_class = WinRateSettings

    needs = frozenset({"generations", "reward_model", "zero_shot"})
    kinds = frozenset({"method"})
    order = 40
    columns = (
        Column("win_rate", ("win_rate", "rate"), "Win Rate", True, "fraction", ("method",)),
        Column(
            "win_rate_per_user",
            ("win_rate", "per_user_mean"),
            "Win Rate (per-user mean)",
            True,
            "fraction",
            ("method",),
        ),
    )

    def applies(self, ctx: CellContext) -> bool:
        zero_shot = ctx.zero_shot
        # a method without RM accuracy (P-DPO) has no reward model to judge with (Table 5)
        judge = bool(getattr(ctx.reward_model, "has_rm_accuracy", True))
        return (
            super().applies(ctx)
            and judge
            and zero_shot is not None
            and zero_shot.generations is not None
        )

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        zero_shot = ctx.zero_shot.generations if ctx.zero_shot is not None else None
        return win_rate(
            ctx.reward_model,
            ctx.generations or [],
            zero_shot or [],
            ctx.prompts(),
            self.settings.ties,
        )
