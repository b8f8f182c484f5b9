"""Per-user parameters z_k of a reward method: one table, a row per user.

    rm.add_user("alice", z)                  # z [D]: add or replace one user's row
    rm.set_users(["a", "b"], table)          # table [2, D]: replace the whole table
    rm.user_vectors(["a", "b", "a"])         # [3, D] rows in request order (global: None)

A mixin of :class:`persalign.rewards.base.RewardModel`, whose ``__init__`` creates ``user_ids``
(user -> row) and ``user_table`` (an ``nn.Parameter`` [N, D] without gradients: adaptation
learns a row on its own and adds it, so theta and the other users never change).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from persalign.errors import ConfigError


class UserTable:
    """user_vectors, set_users and add_user over ``user_ids`` and ``user_table``."""

    name: ClassVar[str]
    personalized: ClassVar[bool]
    user_ids: dict[str, int]
    user_table: nn.Parameter

    def user_vectors(self, users: Sequence[str]) -> torch.Tensor | None:
        """[B, D] user parameters for ``users`` (None for global methods)."""
        if not self.personalized:
            return None
        missing = sorted({u for u in users if u not in self.user_ids})
        if missing:
            raise ConfigError(
                f"unknown user(s) for {self.name}: {', '.join(missing[:3])}; "
                "train on them or adapt them first"
            )
        rows = torch.tensor([self.user_ids[u] for u in users], device=self.user_table.device)
        return self.user_table[rows]

    def set_users(self, users: Sequence[str], table: torch.Tensor) -> None:
        """Replace the user table with ``table`` [len(users), D] for ``users``."""
        self.user_ids = {u: i for i, u in enumerate(users)}
        self.user_table = nn.Parameter(
            table.to(self.user_table.device, torch.float32).clone(), requires_grad=False
        )

    def add_user(self, user: str, vector: torch.Tensor) -> None:
        """Add (or replace) one user's z [D]."""
        vector = vector.detach().to(self.user_table.device, torch.float32).reshape(1, -1)
        if user in self.user_ids:
            with torch.no_grad():
                self.user_table[self.user_ids[user]] = vector[0]
            return
        self.user_ids[user] = len(self.user_ids)
        self.user_table = nn.Parameter(
            torch.cat([self.user_table.detach(), vector]), requires_grad=False
        )
