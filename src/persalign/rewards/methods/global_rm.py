"""Global reward models (non-personalized baselines).

    rm = persalign.rewards.create("global-rm")      # scalar head on the last token
    rm = persalign.rewards.create("global-rm-v2")   # sequence reward = mean token reward

``global-rm``: Bradley-Terry with a scalar head on the last token's hidden state, so the reward
of a prefix is the head applied at its last token. ``global-rm-v2``: the same head read as a
per-token reward; a (prefix) sequence's reward is the mean over its response tokens.
Appendix F: the decoder (reward MLP) learns at 1e-4.
"""

from __future__ import annotations

import torch
from torch import nn

from persalign.rewards.base import RewardModel, register_method


class ScalarHead(nn.Module):
    """A small MLP from hidden states [..., H] to one value per position [...]."""

    def __init__(self, hidden_size: int, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden).squeeze(-1)


@register_method("global-rm", summary="Bradley-Terry, scalar head on the last token (global)")
class GlobalRM(RewardModel):
    """Non-personalized Bradley-Terry reward model; the prefix reward is read at its last token."""

    personalized = False
    aggregation = "last"

    def build(self, hidden_size: int) -> None:
        self.head = ScalarHead(hidden_size)

    def head_values(self, hidden: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        return self.head(hidden)  # [B, T]


@register_method("global-rm-v2", summary="Global RM whose sequence reward is the mean token reward")
class GlobalRMv2(GlobalRM):
    """Global RM-v2: per-token rewards, averaged over the response (a running mean per prefix)."""

    aggregation = "mean"
