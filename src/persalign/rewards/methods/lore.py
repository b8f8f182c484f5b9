"""LoRE: low-rank reward modelling, K shared reward bases mixed by each user's convex weights.

    rm = persalign.rewards.create("lore", latent_dim=2)       # TL;DR (PRISM/Pref-LaMP: 8)
    rm = persalign.rewards.create("lore-alt")                 # alternating steps, K = 20
    rm.fit(bench.train); rm.adapt("new-user", support)

Bose et al. 2025, "LoRe: Personalizing LLMs via Low-Rank Reward Modeling"
(github.com/facebookresearch/LoRe, ``utils.py``); the paper's appendix E and section 6.

- Shared feature extractor: the LoRA backbone, then a bias-free linear map V: H -> K applied to
  the hidden state h_t at every position, R_phi(x, y_<=t) = s * V h_t in R^K (``aggregation``
  "last": a prefix's rewards are read at its last token). No bias: with convex weights w, a bias
  b adds w^T b to both responses of a pair, so it cancels in w^T (R(y+) - R(y-)), receives an
  exactly zero gradient, and at decoding time only shifts every candidate of a user equally.
  s = ``basis_scale`` (1/100) is the reference code's ``logits = x @ V_w / 100``, which is what
  makes the paper's decoder learning rate of 0.5 workable; V starts as N(0, 1) as there.
- User k: z_k in R^K, w_k = softmax(z_k) on the simplex (section 6: a "user-specific convex
  combination"; the reference code's ``F.softmax(self.W, dim=1)``), r_k = w_k^T R_phi.
- Loss (appendix E.4): -log sigmoid(w^T (R_phi(x, y+) - R_phi(x, y-))), averaged.
- ``lore`` trains z and phi (LoRA + V) jointly, one AdamW step per batch (appendix E.3).
  ``lore-alt`` alternates per batch: one step on the users' z with phi frozen, then one step on
  phi with z frozen (the reference's ``LoRe_regularized.train``); the reference's pull towards
  an off-the-shelf RM is omitted, as in the paper (E.3). The backbone is run once per batch:
  the user step does not change phi, so the phi step reuses the same hidden states, read at
  each response's last token of one shared-prompt row per pair (``pair_rewards.last_hidden``).
- Train users start at z ~ N(0, 1) (reference); a new user starts at uniform weights (z = 0)
  and is adapted by Bradley-Terry on frozen features (the default machinery); the reference's
  few-shot step uses Adam with learning rate 0.1 (``adapt_lr``).
Appendix F: decoder LR 0.5 (also the reference's LR for W), latent dim 2 (TL;DR), 8
(PRISM/Pref-LaMP) and 20 for LoRE-Alt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from persalign.rewards.base import RewardModel, register_method
from persalign.rewards.config import RewardConfig
from persalign.rewards.engine.pair_rewards import last_hidden
from persalign.rewards.engine.training import frozen
from persalign.types import Preference


class LoReConfig(RewardConfig):
    """LoRE options; the defaults are the paper's TL;DR values (appendix F)."""

    latent_dim: int = Field(2, ge=1, description="K, number of reward bases (TL;DR 2, else 8).")
    head_lr: float = Field(0.5, gt=0, description="Learning rate of the bases V (appendix F).")
    user_lr: float = Field(0.5, gt=0, description="Learning rate of the users' weight logits.")
    adapt_lr: float | None = Field(0.1, gt=0, description="New users' LR (reference: 0.1).")
    basis_scale: float = Field(0.01, gt=0, description="s in R_phi = s * V h (reference: 1/100).")


class LoReAltConfig(LoReConfig):
    """LoRE-Alt options: as LoRE, with 20 bases (appendix F)."""

    latent_dim: int = Field(20, ge=1, description="K, number of reward bases (appendix F: 20).")


@register_method("lore", summary="LoRE: K shared reward bases, per-user convex weights (joint)")
class LoRe(RewardModel):
    """r_k(x, y) = softmax(z_k)^T R_phi(x, y), R_phi = s * V h_last; z and phi trained jointly."""

    config_class = LoReConfig
    aggregation = "last"

    @property
    def user_dim(self) -> int:
        return self.config.latent_dim

    def build(self, hidden_size: int) -> None:
        self.bases = nn.Linear(hidden_size, self.config.latent_dim, bias=False)
        nn.init.normal_(self.bases.weight)  # V ~ N(0, 1), as in the reference

    def base_rewards(self, hidden: torch.Tensor) -> torch.Tensor:
        """R_phi: [..., H] -> [..., K]."""
        return self.bases(hidden) * self.config.basis_scale

    @staticmethod
    def user_weights(z: torch.Tensor) -> torch.Tensor:
        """Convex weights w = softmax(z): [..., K] -> [..., K] on the simplex."""
        return torch.softmax(z, dim=-1)

    def head_values(self, hidden: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if z is None:
            raise ValueError("LoRE needs user vectors")
        rewards = self.base_rewards(hidden)  # [B, T, K]
        weights = self.user_weights(z)  # [B, K]
        return torch.einsum("btk,bk->bt", rewards, weights)  # [B, T]

    def init_train_users(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.user_dim)  # seeded by fit

    def new_user_vector(self) -> torch.Tensor:
        """z = 0: uniform weights 1/K."""
        return torch.zeros(self.user_dim, device=self.user_table.device)


@register_method("lore-alt", summary="LoRE-Alt: alternating steps on user weights and bases")
class LoReAlt(LoRe):
    """LoRE with alternating updates: users' z (phi frozen), then phi (z frozen), every batch."""

    config_class = LoReAltConfig

    def phi_groups(self) -> list[dict]:
        """The feature extractor's parameter groups: LoRA and the bases V."""
        return [g for g in self.trainable_groups() if g["params"][0] is not self.user_table]

    def make_optimizers(self) -> list[torch.optim.Optimizer]:
        """[users' z optimiser, phi optimiser]."""
        users = torch.optim.Adam([self.user_table], lr=self.config.user_lr)
        return [users, torch.optim.AdamW(self.phi_groups(), weight_decay=0.0)]

    def last_hidden(self, pairs: Sequence[Preference]) -> torch.Tensor:
        """Hidden states at the last token of chosen then rejected responses, [2B, H]: one
        shared-prompt row per pair (two sequences when ``shared_prompt`` is off)."""
        return last_hidden(self, pairs)

    def _pair_loss(
        self, last: torch.Tensor, z: torch.Tensor, pairs: Sequence[Preference]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        values = self.head_values(last[:, None, :], z.repeat(2, 1))[:, 0]  # [2B]
        chosen, rejected = values[: len(pairs)], values[len(pairs) :]
        return self.pair_loss(chosen, rejected, pairs), (chosen > rejected).float().mean()

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        optimizer.step()

    def user_step(
        self, last: torch.Tensor, pairs: Sequence[Preference], optimizer: torch.optim.Optimizer
    ) -> float:
        """One step on the batch users' z with phi frozen (``last`` detached, V frozen)."""
        with frozen(self.bases):
            loss, _ = self._pair_loss(
                last.detach(), self.user_vectors([p.user for p in pairs]), pairs
            )
            self._step(loss, optimizer)
        return loss.item()

    def phi_step(
        self, last: torch.Tensor, pairs: Sequence[Preference], optimizer: torch.optim.Optimizer
    ) -> tuple[float, float]:
        """One step on phi (LoRA through ``last``, and V) with the users' z frozen."""
        z = self.user_vectors([p.user for p in pairs]).detach()
        loss, accuracy = self._pair_loss(last, z, pairs)
        self._step(loss, optimizer)
        return loss.item(), accuracy.item()

    def training_step(
        self, pairs: Sequence[Preference], optimizers: list[torch.optim.Optimizer], step: int
    ) -> dict[str, float]:
        users_opt, phi_opt = optimizers
        last = self.last_hidden(pairs)  # phi is unchanged by the user step: compute once
        user_loss = self.user_step(last, pairs, users_opt)
        loss, accuracy = self.phi_step(last, pairs, phi_opt)
        return {"loss": loss, "accuracy": accuracy, "user_loss": user_loss}
