"""VPL: Variational Preference Learning, a user latent z inferred from a few annotated pairs.

    rm = persalign.rewards.create("vpl")  # the VPL repo's sizes: z in R^512, MLPs 512 wide
    rm = persalign.rewards.create("vpl", latent_dim=2, encoder_width=32, decoder_width=32)  # tiny
    rm.fit(train_prefs)                  # encoder + reward decoder + LoRA; train users' mu
    rm.adapt("new-user", support)        # encodes the support set: no optimisation at all

Poddar et al., "Personalizing RLHF with Variational Preference Learning" (2024); reference
implementation WEIRDLabUW/vpl_llm, ``hidden_context/vae_utils.py`` (``PairEncoder``,
``SequenceEncoder``, ``Decoder``, ``VAETrainer``, ``Annealer``).

- Context embeddings: the frozen backbone's (LoRA off) hidden states of each (prompt, chosen)
  and (prompt, rejected), averaged over the response tokens (``context_pooling="mean"``, the
  default, like the repo's causal-LM path), e_c, e_r in R^H; ``context_pooling="last"`` takes
  the hidden state at the last token instead.
- Pair encoder: g = MLP([e_c, e_r]) in R^d (2H -> w -> w -> d, LeakyReLU 0.2), one per pair.
- Set encoder over a user's context pairs: self-attention (q, k, v linear in R^d, softmax of
  qk^T / sqrt(d)), then the mean over the set ("attention", as the repo), or the plain mean
  ("mean"); both permutation-invariant. mu, logvar = linear layers, each clamped to [-b, b]
  (``latent_bound``, repo: 1).
- z = mu + exp(logvar / 2) * s * eps while training (s = ``posterior_noise``, 1), z = mu when
  scoring.
- Reward at every response position t: r(x, y_<=t, u) = MLP([h_t, z]) (H + d -> w -> w -> 1,
  LeakyReLU 0.2), with h_t the LoRA backbone's hidden state; aggregation "last".
- Training scores each pair as one row, its prompt once and both responses after it (4D mask,
  ``pair_rewards.rewards_of`` with the sampled z; two sequences when ``shared_prompt`` is off).
- Loss = BT + beta * a(step) * KL(N(mu, diag e^logvar) || N(0, I)), KL averaged over the users of
  the batch; a(step) is the repo's cyclical cosine annealing (baseline 0.1, period 10^4 steps).

Training: each batch's pairs are grouped by user; each user's z comes from a context set of
``context_size`` of the user's other pairs (not in the batch), sampled with a seeded generator.
Context embeddings of all train pairs are computed once, before training (kept on the CPU,
freed after ``fit``). After training, each train user's row of ``user_table`` is mu from all of
its pairs; ``adapt`` stores the support set's mu. Appendix F: "The VAE component was trained
with LR=1e-4. MLP used same LR and weight decay of 0.001": decay on the reward MLP only
(``encoder_weight_decay``: 0). Sizes, "original implementation hyperparameters": d = 512, MLPs
512 wide (SmolLM2-135M, H = 576: 2.4M encoder and 0.8M decoder parameters). The repo's
rescaling of the training sample to norm sqrt(d) is left out (scoring uses mu).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Literal

import torch
from peft import PeftModel
from pydantic import Field
from torch import nn

from persalign.io import SkipReport
from persalign.logs import track
from persalign.rewards.base import RewardModel, register_method
from persalign.rewards.config import RewardConfig
from persalign.rewards.engine.features import pool_states
from persalign.rewards.engine.pair_rewards import pair_rewards
from persalign.rewards.engine.training import response_features, usable_pairs
from persalign.rewards.methods._vpl_parts import PairSetEncoder, gaussian_kl, kl_anneal, mlp
from persalign.types import Preference

log = logging.getLogger(__name__)


class VPLConfig(RewardConfig):
    """VPL options; defaults from appendix F and the VPL repo (kl_loss_weight, annealing)."""

    latent_dim: int = Field(512, ge=1, description="Size d of the user latent z (VPL repo: 512).")
    encoder_width: int = Field(
        512, ge=1, description="Hidden width of the pair encoder (VPL repo: 512)."
    )
    decoder_width: int = Field(512, ge=1, description="Hidden width of the reward MLP (512).")
    context_size: int = Field(8, ge=1, description="Context pairs that infer z in training.")
    context_pooling: Literal["last", "mean"] = Field(
        "mean", description="Context embedding: mean over the response tokens, or last token."
    )
    set_pooling: Literal["attention", "mean"] = Field(
        "attention", description="Self-attention then mean (VPL repo), or a plain mean."
    )
    latent_bound: float = Field(
        1.0, gt=0, description="mu and logvar are clamped to [-b, b] (VPL repo: 1)."
    )
    posterior_noise: float = Field(
        1.0, ge=0, description="eps scale in z = mu + sigma * eps (VPL repo variants: 1, 1e-3)."
    )
    kl_weight: float = Field(0.01, ge=0, description="beta of the KL term (repo: 0.01).")
    kl_annealing: bool = Field(True, description="Cyclical cosine annealing of beta (repo).")
    kl_anneal_steps: int = Field(10_000, ge=1, description="Period of the KL annealing cycle.")
    kl_anneal_baseline: float = Field(0.1, ge=0, le=1, description="Annealing floor (repo).")
    head_lr: float = Field(1e-4, gt=0, description="VAE and reward MLP LR (appendix F).")
    head_weight_decay: float = Field(
        1e-3, ge=0, description="Weight decay of the reward MLP (appendix F: 0.001)."
    )
    encoder_weight_decay: float = Field(
        0.0, ge=0, description="Weight decay of the VAE encoder (appendix F: none)."
    )


@register_method("vpl", summary="VPL: VAE over a user's context pairs, reward MLP on [h_t, z]")
class VPL(RewardModel):
    """Variational preference learning; z = the encoder's mu over a user's pairs."""

    config_class = VPLConfig
    aggregation = "last"
    config: VPLConfig

    @property
    def user_dim(self) -> int:
        return self.config.latent_dim

    def build(self, hidden_size: int) -> None:
        cfg = self.config
        self.encoder = PairSetEncoder(
            hidden_size, cfg.encoder_width, cfg.latent_dim, cfg.set_pooling, cfg.latent_bound
        )
        self.decoder = mlp(hidden_size + cfg.latent_dim, cfg.decoder_width, 1)
        self._contexts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._slots: dict[str, dict[str, int]] = {}
        self._generator = torch.Generator().manual_seed(cfg.seed)

    def head_values(self, hidden: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if z is None:
            raise ValueError("VPL needs user latents z")
        zz = z[:, None, :].expand(-1, hidden.shape[1], -1)  # [B, T, d]
        return self.decoder(torch.cat([hidden, zz], dim=-1)).squeeze(-1)  # [B, T]

    def new_user_vector(self) -> torch.Tensor:
        """The prior mean: a user with no usable support pairs."""
        return torch.zeros(self.user_dim, device=self.user_table.device)

    def trainable_groups(self) -> list[dict[str, Any]]:
        """Base groups, with the encoder apart: weight decay on the reward MLP only."""
        encoder = {id(p) for p in self.encoder.parameters()}
        groups = []
        for group in super().trainable_groups():
            rest = [p for p in group["params"] if id(p) not in encoder]
            mine = [p for p in group["params"] if id(p) in encoder]
            if rest:
                groups.append({**group, "params": rest})
            if mine:
                decay = self.config.encoder_weight_decay
                groups.append({**group, "params": mine, "weight_decay": decay})
        return groups

    # ------------------------------------------------------------------ context embeddings
    @torch.no_grad()
    def context_embeddings(
        self, pairs: Sequence[Preference], progress: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen (LoRA off) pooled hidden states of chosen and rejected, [n, H] each; each
        pair's prompt encoded once (``response_features``: a frozen backbone's remembered
        states) unless ``shared_prompt`` is off;
        read from the frozen-backbone features while ``fit`` has them."""
        table = self.training_features
        if table is not None and table.covers(pairs):
            pooled = table.pooled(pairs, self.config.context_pooling)  # [2n, H]
            return pooled[: len(pairs)], pooled[len(pairs) :]
        model = self.backbone.model
        frozen = model.disable_adapter() if isinstance(model, PeftModel) else nullcontext()
        chosen, rejected = [], []
        size = self.config.eval_batch_size
        with frozen:
            for start in track(
                range(0, len(pairs), size),
                "VPL context embeddings",
                total=math.ceil(len(pairs) / size),
                show=progress,
            ):
                chunk = pairs[start : start + size]
                feats = response_features(self, chunk)  # a frozen backbone's: remembered
                hidden, valid = feats["hidden"], feats["valid"]  # [2b, R, H], [2b, R]
                pooled = pool_states(hidden, valid, self.config.context_pooling)  # [2b, H]
                chosen.append(pooled[: len(chunk)])
                rejected.append(pooled[len(chunk) :])
        return torch.cat(chosen), torch.cat(rejected)

    def encode_user(self, chosen: torch.Tensor, rejected: torch.Tensor):
        """mu, logvar [d] of a user's context set (embeddings [n, H] each)."""
        device = self.user_table.device
        return self.encoder(chosen.to(device), rejected.to(device))

    # ------------------------------------------------------------------ training
    def before_fit(self, pairs: Sequence[Preference]) -> None:
        """Context embeddings of every train pair, grouped by user; the user table is fixed."""
        self.user_table.requires_grad_(False)
        self._generator = torch.Generator().manual_seed(self.config.seed)
        chosen, rejected = self.context_embeddings(pairs, progress=True)
        by_user: dict[str, list[int]] = {}
        for i, pref in enumerate(pairs):
            by_user.setdefault(pref.user, []).append(i)
        self._contexts, self._slots = {}, {}
        for user, rows in by_user.items():
            index = torch.tensor(rows)
            self._contexts[user] = (chosen[index].cpu(), rejected[index].cpu())
            self._slots[user] = {pairs[i].id: j for j, i in enumerate(rows)}

    def sample_context(self, user: str, targets: Sequence[Preference]) -> torch.Tensor:
        """Indices of up to ``context_size`` of ``user``'s pairs, avoiding the ``targets``."""
        slots = self._slots[user]
        taken = {slots[p.id] for p in targets if p.id in slots}
        pool = [j for j in range(len(slots)) if j not in taken] or list(range(len(slots)))
        order = torch.randperm(len(pool), generator=self._generator)[: self.config.context_size]
        return torch.tensor(pool)[order]

    def training_step(
        self, pairs: Sequence[Preference], optimizers: list[torch.optim.Optimizer], step: int
    ) -> dict[str, float]:
        """BT on the batch with each user's z sampled from q(z | its context) + beta * KL."""
        cfg = self.config
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        users = list(dict.fromkeys(p.user for p in pairs))
        latents, kls = {}, []
        for user in users:
            index = self.sample_context(user, [p for p in pairs if p.user == user])
            chosen, rejected = self._contexts[user]
            mu, logvar = self.encode_user(chosen[index], rejected[index])
            noise = cfg.posterior_noise * torch.randn_like(mu)
            latents[user] = mu + (0.5 * logvar).exp() * noise
            kls.append(gaussian_kl(mu, logvar))
        z = torch.stack([latents[p.user] for p in pairs])  # [B, d]
        chosen_r, rejected_r = self.pair_rewards_with(pairs, z)
        bt = self.pair_loss(chosen_r, rejected_r, pairs)
        kl = torch.stack(kls).mean()
        beta = cfg.kl_weight
        if cfg.kl_annealing:
            beta *= kl_anneal(step, cfg.kl_anneal_steps, cfg.kl_anneal_baseline)
        loss = bt + beta * kl
        loss.backward()
        if cfg.grad_clip:
            params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        for opt in optimizers:
            opt.step()
        accuracy = (chosen_r > rejected_r).float().mean().item()
        return {"loss": loss.item(), "accuracy": accuracy, "bt": bt.item(), "kl": kl.item()}

    def pair_rewards_with(
        self, pairs: Sequence[Preference], z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence rewards [B] of chosen and rejected under latents z [B, d] (with gradients):
        one shared-prompt row per pair (``pair_rewards.pair_rewards``), or two sequences per
        pair when ``shared_prompt`` is off, or the frozen features."""
        return pair_rewards(self, pairs, z=z)

    def fit(self, prefs: Sequence[Preference], **kw: Any) -> list[dict[str, float]]:
        """Train, then set each train user's z to mu over all of its pairs."""
        try:
            history = super().fit(prefs, **kw)
            with torch.no_grad():
                table = torch.stack(
                    [self.encode_user(*self._contexts[user])[0] for user in self.user_ids]
                )
            self.set_users(list(self.user_ids), table)
        finally:
            self._contexts, self._slots = {}, {}
        return history

    # ------------------------------------------------------------------ adaptation
    @torch.no_grad()
    def adapt(self, user: str, support: Sequence[Preference]) -> None:
        """z = mu of the support set through the trained encoder; nothing is optimised."""
        skips = SkipReport()
        pairs = usable_pairs(support, skips)
        skips.log(log, what=f"support pairs of {user} skipped")
        if not pairs:
            self.add_user(user, self.new_user_vector())
            return
        mu, _ = self.encode_user(*self.context_embeddings(pairs))
        self.add_user(user, mu)
