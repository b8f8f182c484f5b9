"""MPU and MPU-Avg: a separate small MLP reward head for every user on a shared LoRA backbone.

    rm = persalign.rewards.create("mpu")       # a new user's head starts fresh
    rm = persalign.rewards.create("mpu-avg")   # ... or from the train users' average head

The paper's simple personalized baselines (section 6, "a simple baseline of per-user MLPs").
User k's parameters z_k are the flattened weights of their head, H -> ``head_width`` -> 1 with a
GELU, applied to the hidden state at every position (a prefix's reward is read at its last token).
Training learns the backbone's LoRA weights and every train user's head jointly with
Bradley-Terry; a new user's head is trained on their support set with the backbone frozen.
Appendix F: decoder learning rate 1e-3.

A new user's starting head depends only on the model and the user: MPU draws it from a
generator seeded by (``seed``, user id); MPU-Avg starts from the mean of the train users' heads,
kept in the saved buffer ``train_mean`` (never from earlier adapted users). So users can be
adapted in any order, before or after a save and load, with the same result.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import nn

from persalign.rewards.base import RewardModel, register_method
from persalign.rewards.config import RewardConfig
from persalign.types import Preference


def user_seed(seed: int, user: str) -> int:
    """A 63-bit generator seed from the model seed and a user id, the same in every process."""
    digest = hashlib.sha256(f"{seed}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class MPUConfig(RewardConfig):
    """MPU options; the defaults are the paper's (appendix F)."""

    head_width: int = Field(32, ge=1, description="Hidden width of each user's MLP head.")
    user_lr: float = Field(1e-3, gt=0, description="Learning rate of the per-user heads.")


@register_method("mpu", summary="Per-user MLP heads; a new user's head is trained from scratch")
class MPU(RewardModel):
    """Per-user MLP reward heads on a shared backbone; new users start from a fresh head."""

    config_class = MPUConfig
    aggregation = "last"

    def build(self, hidden_size: int) -> None:
        self.hidden_size = hidden_size
        self._adapting: str | None = None  # the user ``adapt`` is learning, for its start

    @property
    def user_dim(self) -> int:
        h, w = self.backbone.hidden_size, self.config.head_width
        return h * w + w + w + 1  # W1 [w, H], b1 [w], w2 [w], b2 [1]

    def unpack(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[B, D] -> W1 [B, w, H], b1 [B, w], w2 [B, w], b2 [B]."""
        h, w = self.backbone.hidden_size, self.config.head_width
        w1, b1, w2, b2 = torch.split(z, [h * w, w, w, 1], dim=-1)
        return w1.reshape(-1, w, h), b1, w2, b2.squeeze(-1)

    def head_values(self, hidden: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        w1, b1, w2, b2 = self.unpack(z)  # one head per row
        inner = torch.einsum("bth,bwh->btw", hidden, w1) + b1[:, None, :]  # [B, T, w]
        return torch.einsum("btw,bw->bt", nn.functional.gelu(inner), w2) + b2[:, None]  # [B, T]

    def fresh_heads(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` heads initialised like ``nn.Linear`` (uniform, fan-in scaled), [n, D]."""
        h, w = self.backbone.hidden_size, self.config.head_width

        def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
            bound = 1.0 / math.sqrt(fan_in)
            return (torch.rand(shape, generator=generator) * 2 - 1) * bound

        parts = [uniform((n, w * h), h), uniform((n, w), h), uniform((n, w), w), uniform((n, 1), w)]
        return torch.cat(parts, dim=1)

    def init_train_users(self, n: int) -> torch.Tensor:
        return self.fresh_heads(n, torch.Generator().manual_seed(self.config.seed))

    def adapt(self, user: str, support: Sequence[Preference]) -> None:
        """Learn ``user``'s head from a start that depends only on the model and ``user``."""
        self._adapting = user
        try:
            super().adapt(user, support)
        finally:
            self._adapting = None

    def new_user_vector(self) -> torch.Tensor:
        """A fresh head, seeded by the model seed and the id of the user being adapted."""
        generator = torch.Generator().manual_seed(user_seed(self.config.seed, self._adapting or ""))
        return self.fresh_heads(1, generator)[0].to(self.user_table.device)


@register_method("mpu-avg", summary="Per-user MLP heads; a new user starts from the average head")
class MPUAvg(MPU):
    """MPU whose new users start from the average of the train users' heads."""

    def build(self, hidden_size: int) -> None:
        super().build(hidden_size)
        self.register_buffer("train_mean", torch.zeros(self.user_dim))  # [D], saved

    def fit(self, prefs: Sequence[Preference], **kw: Any) -> list[dict[str, float]]:
        """Train, then keep the mean of the train users' heads (adapted users never enter it)."""
        history = super().fit(prefs, **kw)
        with torch.no_grad():
            self.train_mean.copy_(self.user_table.mean(dim=0))
        return history

    def new_user_vector(self) -> torch.Tensor:
        """The mean of the train users' heads, whatever was adapted since."""
        return self.train_mean.detach().clone()
