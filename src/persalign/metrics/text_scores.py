"""Per-text sums a cell has already computed, and each prompt encoded once for the rest.

    memo = TextScores()                                  # one per cell (CellContext.text_scores)
    memo.expect(prompt_ids, groups)   # ground-truth rank, before any metric: its candidates
    memo.record(prompt_ids, prompts, responses, users, parts)   # policy accuracy's 2N texts
    logp, tokens = memo.policy_sums(prompt_ids, groups, score)  # ground-truth rank: the rest
    rewards = memo.reward_sums(prompts, groups, users, score)

Policy accuracy (order 20) scores every query pair's chosen and rejected text; on Pref-LaMP and
Pref-ACL those are the user's own text and its mined negative, which the ground-truth rank
(order 25) scores again among its 1 + N candidates. With the memo, the ground-truth rank scores
only the candidates policy accuracy has not. And since the ground-truth rank announces its
candidates (``expect``) before any metric computes, policy accuracy's pass scores them on the
same rows as its pairs: each query prompt is encoded once for both metrics, which matters for
ICL prompts of hundreds of tokens.

What is left is scored once per prompt, not once per group: groups that answer the same prompt
(TL;DR's posts and a sim benchmark's prompts are shared by several pairs and users) become one
shared-prompt row holding each of their texts once. A policy row is keyed by the prompt as the
policy encodes it (its token ids, ICL prompts included); a reward row by the prompt text and
the user (a personalized reward differs per user). A memo lives for one cell (one policy, one
adapted reward model), so no value can be stale. A remembered sum comes from policy accuracy's
padded rows, a computed one from shared-prompt rows; the two agree up to float rounding
(tests/unit/test_text_scores.py).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")
# model -> {name: {key of the inputs: value}}: each model's last calls of each name (remembered)
REMEMBERED: weakref.WeakKeyDictionary[Any, dict[str, OrderedDict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
REMEMBER_LAST = 4  # inputs kept per model and name
Key = tuple[Hashable, str]  # (the row: a prompt as one model sees it, a response text)
# score(rows, texts) -> the values of texts[i][j] answering rows[i], flat in (row, text) order
Scorer = Callable[[list[Hashable], list[list[str]]], Sequence[Any]]


def complete(keys: Sequence[Sequence[Key]], table: Mapping[Key, Any], score: Scorer) -> list:
    """The value of every (row, text) key of every group (flat, in group order): ``table``'s
    where known, else ``score``'s, called once with each unknown text once under its row (and
    not at all when every key is known)."""
    todo: dict[Hashable, dict[str, None]] = {}  # row -> its unknown texts, in first-seen order
    for group in keys:
        for row, text in group:
            if (row, text) not in table:
                todo.setdefault(row, {})[text] = None
    fresh: dict[Key, Any] = {}
    if todo:
        rows = list(todo)
        values = iter(score(rows, [list(todo[row]) for row in rows]))
        fresh = {(row, text): next(values) for row in rows for text in todo[row]}
    return [table[key] if key in table else fresh[key] for group in keys for key in group]


class TextScores:
    """Policy log-prob sums and reward sums of (prompt, response) texts, by key (module doc)."""

    def __init__(self) -> None:
        self.logp: dict[Key, tuple[float, int]] = {}  # ((prompt ids), text) -> (sum, length)
        self.rewards: dict[Key, float] = {}  # ((prompt, user), text) -> reward sum
        # (prompt ids) -> texts a later metric will score under that prompt (``expect``)
        self.expected: dict[tuple[int, ...], dict[str, None]] = {}

    def expect(self, prompt_ids: Sequence[Sequence[int]], groups: Sequence[Sequence[str]]) -> None:
        """Announce the texts of ``groups[i]`` a later metric will score under
        ``prompt_ids[i]`` (the ground-truth rank's candidates), so that the first policy pass
        over that prompt (policy accuracy's) scores them on the same row: an ICL prompt of
        hundreds of tokens is then encoded once for both metrics."""
        for ids, group in zip(prompt_ids, groups, strict=True):
            self.expected.setdefault(tuple(ids), {}).update(dict.fromkeys(group))

    def with_expected(
        self, prompt_ids: Sequence[Sequence[int]], groups: Sequence[Sequence[str]]
    ) -> list[list[str]]:
        """Each group, then the texts expected under its prompt that neither the group nor
        the memo holds (the first group of a prompt takes them, so each is scored once)."""
        out, taken = [], set()
        for ids, group in zip(prompt_ids, groups, strict=True):
            row, extra = tuple(ids), []
            if row not in taken:
                taken.add(row)
                have = set(group)
                extra = [t for t in self.expected.get(row, ()) if t not in have]
                extra = [t for t in extra if (row, t) not in self.logp]
            out.append([*group, *extra])
        return out

    def record_policy(
        self,
        prompt_ids: Sequence[Sequence[int]],  # [G]
        groups: Sequence[Sequence[str]],  # [G]
        logp: torch.Tensor,  # [M] flat in group order
        tokens: torch.Tensor,  # [M]
    ) -> None:
        """Remember the policy sums of every text of every group."""
        flat = [(tuple(p), r) for p, g in zip(prompt_ids, groups, strict=True) for r in g]
        for key, value, length in zip(flat, logp.tolist(), tokens.tolist(), strict=True):
            self.logp[key] = (float(value), int(length))

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
                self.rewards[((prompts[i], users[i]), response)] = float(parts.reward_sum[i])

    def policy_sums(
        self,
        prompt_ids: Sequence[Sequence[int]],  # [G] one per group
        groups: Sequence[Sequence[str]],  # [G] each group's responses
        score: Callable[[list[list[int]], list[list[str]]], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([M] float64 log-prob sums, [M] long lengths) of every response, flat in group
        order; ``score(prompt_ids, groups)`` (``candidate_logprob_sums``) computes the unknown,
        one row per distinct prompt."""

        def fresh(rows: list[Hashable], texts: list[list[str]]) -> list[tuple[float, int]]:
            logp, tokens = score([list(row) for row in rows], texts)
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
        ``score(prompts, groups, users)`` (``candidate_reward_sums``) computes the unknown, one
        row per distinct (prompt, user)."""

        def fresh(rows: list[Hashable], texts: list[list[str]]) -> list[float]:
            pairs: list[tuple[str, str]] = rows
            return score([p for p, _ in pairs], texts, [u for _, u in pairs]).tolist()

        keys = [[((p, u), r) for r in g] for p, g, u in zip(prompts, groups, users, strict=True)]
        return torch.tensor(complete(keys, self.rewards, fresh), dtype=torch.float64)


def remembered(model: Any, name: str, inputs: Any, compute: Callable[[], T]) -> T:
    """``compute()``, or what it returned for the same ``inputs`` (JSON) in one of the last
    ``REMEMBER_LAST`` calls ``name`` on ``model`` in this process. The zero-shot and method cells
    of a run score the same query pairs and candidates with the same frozen policy, so under the
    local backend, or in a Ray worker, a policy pass runs once and not once per cell and seed
    (an ICL cell between them, with prompts of its own, does not push them out). The same
    inputs give the same batches, so the numbers are the same whether remembered or not."""
    key = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()
    recent = REMEMBERED.setdefault(model, {}).setdefault(name, OrderedDict())
    if key in recent:
        recent.move_to_end(key)
        return recent[key]
    value = compute()
    recent[key] = value
    while len(recent) > REMEMBER_LAST:
        recent.popitem(last=False)
    return value
