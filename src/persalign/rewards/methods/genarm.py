"""GenARM: an autoregressive reward model whose token reward is its own log-probability.

    rm = persalign.rewards.create("genarm", reward_beta=0.05)
    rm.fit(bench.train)          # -log sigmoid(beta (sum log p(y_w) - sum log p(y_l)))
    rm.prefix_rewards(prompts, responses, users).rewards    # beta * sum_{s<=t} log p(y_s|...)

Xu et al., ICLR 2025, "GenARM: Reward Guided Generation with Autoregressive Reward Model for
Test-time Alignment" (github.com/yuancheng-xu/GenARM, ``training_trl/arm_trainer.py``). The
reward model pi_r is a causal LM (here the backbone with LoRA); the reward of a response is

    r(x, y) = beta_r * sum_t log pi_r(y_t | x, y_<t),

so the reward of the prefix y_<=t is the same sum up to t (``aggregation = "sum"``,
``cumulative``): every prefix reward comes from one forward pass, and a decoding step reads the
k candidates' rewards from the cached next-token log-probs. Training (the repo's ARM loss):

    L = -log sigmoid(beta_r * (sum_t log pi_r(y_w,t) - sum_t log pi_r(y_l,t)) - gamma),

with the target margin gamma = 0 and no length normalization by default (the repo flags length
normalization as "for testing purposes"); beta_r defaults to the repo's HH-RLHF value 0.05.
GenARM is global: one reward for every user.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from persalign.rewards.base import register_method
from persalign.rewards.config import RewardConfig
from persalign.rewards.methods._likelihood import LikelihoodRM
from persalign.types import Preference


class GenARMConfig(RewardConfig):
    """GenARM's options (defaults from the GenARM repository's HH-RLHF script)."""

    reward_beta: float = Field(
        0.05, gt=0, description="beta_r: token reward = beta_r * log pi_r(y_t | x, y_<t)."
    )
    length_normalization: bool = Field(
        False, description="Divide each response's log-prob by its length in the loss."
    )
    target_margin: float = Field(
        0.0, ge=0, description="gamma: the loss asks r(y_w) - r(y_l) to exceed this margin."
    )


@register_method("genarm", summary="Autoregressive RM: reward = beta * sum of token log-probs")
class GenARM(LikelihoodRM):
    """Autoregressive reward model (global): r(x, y_<=t) = beta_r * sum_{s<=t} log pi_r(y_s|...)."""

    config_class = GenARMConfig
    personalized = False
    config: GenARMConfig

    def reward_scale(self) -> float:
        return self.config.reward_beta

    def pair_loss(
        self, chosen: torch.Tensor, rejected: torch.Tensor, pairs: Sequence[Preference]
    ) -> torch.Tensor:
        """-log sigmoid(r_w - r_l - gamma), r = beta_r * sum log-prob (or mean, if normalized)."""
        if self.config.length_normalization:
            chosen = chosen / self._lengths([p.chosen for p in pairs], chosen)
            rejected = rejected / self._lengths([p.rejected for p in pairs], rejected)
        margin = chosen - rejected - self.config.target_margin
        return -nn.functional.logsigmoid(margin).mean()

    def _lengths(self, responses: list[str], like: torch.Tensor) -> torch.Tensor:
        # Same count as formatter.response_ids, without adding to its truncation report.
        tokenizer, limit = self.formatter.tokenizer, self.formatter.max_response_tokens
        ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
        lengths = [min(len(row), limit) for row in ids]
        return torch.tensor(lengths, dtype=like.dtype, device=like.device).clamp(min=1)
