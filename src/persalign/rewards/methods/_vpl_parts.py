"""VPL's networks and schedules (the VPL repo's ``hidden_context/vae_utils.py``): the MLP, the
pair-set encoder q(z | set), the Gaussian KL and the cyclical KL annealing.

    encoder = PairSetEncoder(hidden_size=576, width=512, latent_dim=512, pooling="attention")
    mu, logvar = encoder(chosen_embeddings, rejected_embeddings)      # [N, H] each -> [d] each
    loss = bt + beta * kl_anneal(step, 10_000, 0.1) * gaussian_kl(mu, logvar)

``rewards.methods.vpl`` is the method that uses them (its module doc has the details).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(in_dims: int, width: int, out_dims: int) -> nn.Sequential:
    """The VPL repo's two-hidden-layer MLP with LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.Linear(in_dims, width),
        nn.LeakyReLU(0.2),
        nn.Linear(width, width),
        nn.LeakyReLU(0.2),
        nn.Linear(width, out_dims),
    )


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the last dim: [..., d] -> [...]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def kl_anneal(step: int, period: int, baseline: float) -> float:
    """The VPL repo's cyclical cosine Annealer: baseline at the start of a cycle, 1 at its end."""
    y = (math.cos(math.pi * ((step % period) / period - 1)) + 1) / 2
    return y * (1 - baseline) + baseline


class PairSetEncoder(nn.Module):
    """A set of (chosen, rejected) embeddings [N, H] each -> mu, logvar [d] of q(z | set)."""

    def __init__(
        self, hidden_size: int, width: int, latent_dim: int, pooling: str, bound: float = 1.0
    ):
        super().__init__()
        self.pooling, self.bound = pooling, bound
        self.pair = mlp(2 * hidden_size, width, latent_dim)
        if pooling == "attention":
            self.query = nn.Linear(latent_dim, latent_dim)
            self.key = nn.Linear(latent_dim, latent_dim)
            self.value = nn.Linear(latent_dim, latent_dim)
        self.mean_layer = nn.Linear(latent_dim, latent_dim)
        self.logvar_layer = nn.Linear(latent_dim, latent_dim)

    def forward(
        self, chosen: torch.Tensor, rejected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = self.pair(torch.cat([chosen, rejected], dim=-1))  # [N, d]
        if self.pooling == "attention":
            scores = self.query(pairs) @ self.key(pairs).T / math.sqrt(pairs.shape[-1])  # [N, N]
            pairs = torch.softmax(scores, dim=-1) @ self.value(pairs)  # [N, d]
        pooled = pairs.mean(dim=0)  # [d]
        mu = self.mean_layer(pooled).clamp(-self.bound, self.bound)
        logvar = self.logvar_layer(pooled).clamp(-self.bound, self.bound)
        return mu, logvar
