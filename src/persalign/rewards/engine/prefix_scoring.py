"""Rewards of every response prefix, batch by batch: what ``RewardModel.prefix_rewards`` runs.

    out = score_prefixes(rm, prompts, responses, users, padding_side="right", batch_size=16)
    out.rewards[i, t]      # r(x_i, y_i[: t + 1]), 0 beyond the response
    out.last()             # [N] the whole responses' rewards

A frozen backbone's states are read once per process (``frozen_states.remembered_prefix_
rewards``); otherwise one forward pass per batch of ``batch_size`` responses through the
method's own ``batch_prefix_rewards``. Either way the whole-response rewards are recorded in the
sequence memo (``sequence_memo.record``), so a later ``sequence_rewards`` of the same texts
computes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from persalign.rewards.engine import sequence_memo
from persalign.rewards.engine.frozen_states import remembered_prefix_rewards, remembers

if TYPE_CHECKING:  # annotations only: RewardModel calls into this module
    from persalign.rewards.base import RewardModel


@dataclass
class PrefixRewards:
    """Rewards of every response prefix: ``rewards[i, t]`` = r(x_i, y_i[: t + 1])."""

    rewards: torch.Tensor  # [N, R] float32, 0 beyond each response
    lengths: torch.Tensor  # [N] long, response lengths in tokens

    def last(self) -> torch.Tensor:
        """[N] the reward of each whole response."""
        return self.rewards[torch.arange(len(self.lengths)), self.lengths - 1]


def same_length(prompts: Sequence[str], responses: Sequence[str], users: Sequence[str]) -> None:
    """The scoring functions' one check of their inputs: one prompt and one user per response."""
    if not len(prompts) == len(responses) == len(users):
        raise ValueError("prompts, responses and users must have the same length")


@torch.no_grad()
def score_prefixes(
    rm: RewardModel,
    prompts: Sequence[str],
    responses: Sequence[str],
    users: Sequence[str],
    padding_side: str,
    batch_size: int,
) -> PrefixRewards:
    """r(x, y_<=t) for every prefix of every response (module doc)."""
    same_length(prompts, responses, users)
    if remembers(rm) and prompts:
        out = remembered_prefix_rewards(rm, prompts, responses, users, batch_size)
        if out is not None:
            result = PrefixRewards(*out)
            sequence_memo.record(rm, prompts, responses, users, result.last())
            return result
    chunks, lengths = [], []
    was_training = rm.training
    rm.eval()
    for start in range(0, len(prompts), batch_size):
        sl = slice(start, start + batch_size)
        batch = rm.encode(prompts[sl], responses[sl], padding_side)
        chunks.append(rm.batch_prefix_rewards(batch, users[sl]).float().cpu())  # [b, R_b]
        lengths.append(batch.response_lengths.cpu())
    rm.train(was_training)
    width = max((c.shape[1] for c in chunks), default=0)
    rewards = torch.cat([nn.functional.pad(c, (0, width - c.shape[1])) for c in chunks])
    result = PrefixRewards(rewards, torch.cat(lengths))  # [N, R], [N]
    sequence_memo.record(rm, prompts, responses, users, result.last())
    return result
