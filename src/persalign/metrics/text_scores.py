"""Per-text sums a cell has already computed, so that a later metric of the cell does not score
the same text again.

    memo = TextScores()                                  # one per cell (CellContext.text_scores)
    memo.record(prompt_ids, prompts, responses, users, parts)   # policy accuracy's 2N texts
    logp, tokens = memo.policy_sums(prompt_ids, groups, score)  # ground-truth rank: the rest
    rewards = memo.reward_sums(prompts, groups, users, score)

Policy accuracy (order 20) scores every query pair's chosen and rejected text; on Pref-LaMP and
Pref-ACL those are the user's own text and its mined negative, which the ground-truth rank
(order 25) scores again among its 1 + N candidates. With the memo, the ground-truth rank scores
only the candidates policy accuracy has not: its shared-prompt rows hold fewer responses, and a
prompt whose candidates are all known is not encoded at all.

Keys are what determines a sum: the policy's log-prob sum depends on the prompt as the policy
encodes it (its token ids: ICL prompts included) and the response text; the reward sum on the
prompt text, the response text and the user (a personalized reward). A memo lives for one cell
(one policy, one adapted reward model), so the values cannot be stale. A remembered sum comes
from policy accuracy's padded rows, a computed one from shared-prompt rows; the two agree up
to float rounding (tests/test_text_scores.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch

# score(rows, picks) -> values of the picked texts, flat in (row, pick) order: ``rows`` are the
# groups with a text to score, ``picks[j]`` the positions of those texts in group ``rows[j]``
Scorer = Callable[[list[int], list[list[int]]], Sequence[Any]]


def complete(keys: Sequence[Sequence[Hashable]], table: Mapping[Hashable, Any], score: Scorer):
    """The value of every key (flat, in group order): ``table``'s where known, ``score``'s for
    the rest (called once, and not at all when every key is known)."""
    rows, picks = [], []
    for i, group in enumerate(keys):
        missing = [j for j, key in enumerate(group) if key not in table]
        if missing:
            rows.append(i)
            picks.append(missing)
    fresh: dict[tuple[int, int], Any] = {}
    if rows:
        values = iter(score(rows, picks))
        fresh = {(i, j): next(values) for i, js in zip(rows, picks, strict=True) for j in js}
    return [
        fresh[(i, j)] if (i, j) in fresh else table[key]
        for i, group in enumerate(keys)
        for j, key in enumerate(group)
    ]


class TextScores:
    """Policy log-prob sums and reward sums of (prompt, response) texts, by key (module doc)."""

    def __init__(self) -> None:
        self.logp: dict[tuple[tuple[int, ...], str], tuple[float, int]] = {}
        self.rewards: dict[tuple[str, str, str], float] = {}

    def record(
        self,
        prompt_ids: Sequence[Sequence[int]],  # [N] the prompts as the policy encoded them
        prompts: Sequence[str],  # [N] their texts (the reward model renders these)
        responses: Sequence[str],
        users: Sequence[str],
        parts,  # scoring.ScoreParts of the N responses
    ) -> None:
        """Remember the sums of ``parts`` (one policy and reward model)."""
        for i, response in enumerate(responses):
            key = (tuple(prompt_ids[i]), response)
            self.logp[key] = (float(parts.logp_sum[i]), int(parts.tokens[i]))
            if parts.reward_sum is not None:
                self.rewards[(prompts[i], response, users[i])] = float(parts.reward_sum[i])

    def policy_sums(
        self,
        prompt_ids: Sequence[Sequence[int]],  # [G] one per group
        groups: Sequence[Sequence[str]],  # [G] each group's responses
        score: Callable[[list[list[int]], list[list[str]]], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([M] float64 log-prob sums, [M] long lengths) of every response, flat in group
        order; ``score(prompt_ids, groups)`` (``candidate_logprob_sums``) computes the unknown."""

        def fresh(rows: list[int], picks: list[list[int]]) -> list[tuple[float, int]]:
            logp, tokens = score(
                [list(prompt_ids[i]) for i in rows],
                [[groups[i][j] for j in js] for i, js in zip(rows, picks, strict=True)],
            )
            return list(zip(logp.tolist(), tokens.tolist(), strict=True))

        keys = [[(tuple(p), r) for r in g] for p, g in zip(prompt_ids, groups, strict=True)]
        values = complete(keys, self.logp, fresh)
        return (
            torch.tensor([v[0] for v in values], dtype=torch.float64),
            torch.tensor([v[1] for v in values], dtype=torch.long),
        )

    def reward_sums(
        self,
        prompts: Sequence[str],  # [G]
        groups: Sequence[Sequence[str]],  # [G]
        users: Sequence[str],  # [G]
        score: Callable[[list[str], list[list[str]], list[str]], torch.Tensor],
    ) -> torch.Tensor:
        """[M] float64 reward sums of every response, flat in group order;
        ``score(prompts, groups, users)`` (``candidate_reward_sums``) computes the unknown."""

        def fresh(rows: list[int], picks: list[list[int]]) -> list[float]:
            return score(
                [prompts[i] for i in rows],
                [[groups[i][j] for j in js] for i, js in zip(rows, picks, strict=True)],
                [users[i] for i in rows],
            ).tolist()

        keys = [[(p, r, u) for r in g] for p, g, u in zip(prompts, groups, users, strict=True)]
        return torch.tensor(complete(keys, self.rewards, fresh), dtype=torch.float64)
