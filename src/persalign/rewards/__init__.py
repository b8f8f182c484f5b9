"""Personalized reward models: one interface, one file per method.

import persalign.rewards as rewards
rewards.METHODS.names()[:4]
# ['genarm', 'global-rm', 'global-rm-v2', 'lore']
rm = rewards.create("lore", backbone="bundled:smollm2-135m-instruct", latent_dim=8)
rm.fit(train_prefs); rm.adapt("new-user", support); rm.save("runs/lore")
rm = rewards.load("runs/lore")
"""

from __future__ import annotations

from typing import Any

from persalign.errors import validated
from persalign.rewards.base import METHODS, PrefixRewards, RewardModel, register_method
from persalign.rewards.config import RewardConfig
from persalign.rewards.engine.saving import load_reward_model as load


def create(name: str, **config: Any) -> RewardModel:
    """A fresh reward model of method ``name``; ``config`` keys are checked strictly."""
    cls = METHODS.get(name)
    return cls(validated(cls.config_class, config, head=f"invalid config for {name}"))


__all__ = [
    "METHODS",
    "PrefixRewards",
    "RewardConfig",
    "RewardModel",
    "create",
    "load",
    "register_method",
]
