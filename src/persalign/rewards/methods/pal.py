"""PAL-B: personalized rewards from a mixture of K prototype preferences (ideal-point model).

    rm = persalign.rewards.create("pal", latent_dim=2)     # TL;DR: K = 2 prototypes in R^512
    rm = persalign.rewards.create("pal", latent_dim=8)     # PRISM, Pref-LaMP: K = 8
    rm = persalign.rewards.create("pal", latent_dim=2, latent_dim_role="preference")  # d = 2, K = 2
    rm.fit(train_prefs); rm.adapt("new-user", support)   # adapt: only the mixture logits

Chen et al., "PAL: Sample-Efficient Personalized Reward Modeling for Pluralistic Alignment"
(ICLR 2025); reference implementation RamyaLab/pluralistic-alignment, ``src/pal_rm_b``
(``ItemLearner``, ``UserLearner``, ``CustomSoftMax``). At every response position t, with h_t
the backbone's hidden state and z_u a user's K mixture logits:

    f_t  = F(h_t)                          item projector into the preference space R^d
    p_k  = G_k(h_t)  (or a learned point)  K prototype projectors ("projectors") / points
    w_u  = softmax(z_u / tau)              the user's mixture weights over the prototypes
    a_u  = sum_k w_uk p_k                  the user's ideal point
    r(x, y_<=t, u) = <f_t, a_u>            ("dot", PAL-B's BT form), or
                   = s * cos(f_t, a_u)     ("cosine": the repo's 'angle' learner, s = e^logit_scale)

PAL-B's prototype projectors read the prompt's hidden states; here they read the same causal
state h_t (which has seen the prompt), so every prefix has its own reward and reward-guided
decoding works. Projectors are the repo's ``mlp2-gelu-dropout0`` (two hidden layers of width d
unless ``projector_width``). Appendix F: projectors LR 1e-4 with weight decay 0.01, user
weights LR 5e-3 without decay; "latent dimension" 2 (TL;DR), 8 (PRISM, Pref-LaMP).

The paper's "latent dimension" is read as the number of prototypes K, the user-side size as
for LoRE and PReF (``latent_dim_role="prototypes"``, the default), with the preference space
d = ``preference_dim`` = 512 wide as in the repo's summary config (``b-dim512-k2-...``):
TL;DR's latent dimension 2 is then exactly the repo's k2. The other reading,
``latent_dim_role="preference"``, makes latent_dim the width d and K = ``num_prototypes``
(default 2). Train users' logits start N(0, I) as in the repo; a new user starts uniform (zero
logits) and adaptation learns only its logits.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from persalign.rewards.base import RewardModel, register_method
from persalign.rewards.config import RewardConfig
from persalign.rewards.engine.training import frozen, response_features, start_user_vector
from persalign.types import Preference

log = logging.getLogger(__name__)

LOGIT_SCALE_INIT = 1 / 0.07  # CLIP-style temperature of PAL-B's 'angle' learner
LOGIT_SCALE_MAX = 100.0
DEFAULT_PROTOTYPES = 2  # K of the PAL repo's summary config (k2), for latent_dim_role="preference"


class PALConfig(RewardConfig):
    """PAL-B options; the defaults are appendix F's TL;DR values and the PAL repo's."""

    latent_dim: int = Field(
        2, ge=1, description="The paper's latent dimension (TL;DR 2; PRISM, Pref-LaMP 8)."
    )
    latent_dim_role: Literal["prototypes", "preference"] = Field(
        "prototypes",
        description="latent_dim is K, the number of prototypes (preference space preference_dim"
        " wide), or the preference space width d (K = num_prototypes).",
    )
    preference_dim: int = Field(
        512, ge=1, description="Preference space width d when latent_dim is K (PAL repo: 512)."
    )
    num_prototypes: int | None = Field(
        None,
        ge=1,
        description="K when latent_dim_role='preference' (None: 2, the PAL repo's k2); with"
        " 'prototypes' only None or latent_dim.",
    )
    prototypes: Literal["projectors", "points"] = Field(
        "projectors",
        description="PAL-B prototype projectors G_k(h_t), or K learned points in R^d.",
    )
    similarity: Literal["dot", "cosine"] = Field(
        "dot", description="<f, a_u> (BT form) or scaled cosine (PAL repo's 'angle' learner)."
    )
    projector_layers: int = Field(2, ge=0, description="Hidden layers of each projector MLP.")
    projector_width: int | None = Field(
        None, ge=1, description="Hidden width of the projectors; None: d (PAL repo)."
    )
    mixture_temperature: float = Field(1.0, gt=0, description="Softmax temperature of w_u.")
    logit_scale_lr: float = Field(0.1, gt=0, description="LR of the cosine scale (PAL repo).")
    head_lr: float = Field(1e-4, gt=0, description="Projectors' LR (appendix F: 1e-4).")
    head_weight_decay: float = Field(0.01, ge=0, description="Projectors' weight decay (0.01).")
    user_lr: float = Field(5e-3, gt=0, description="Mixture logits' LR (appendix F: 5e-3).")

    @model_validator(mode="after")
    def _one_k(self) -> PALConfig:
        if self.latent_dim_role == "prototypes" and self.num_prototypes not in (
            None,
            self.latent_dim,
        ):
            raise ValueError(
                "num_prototypes is latent_dim when latent_dim_role='prototypes'; "
                "set latent_dim, or latent_dim_role='preference' to choose K apart"
            )
        return self

    @property
    def prototype_count(self) -> int:
        """K, the number of prototypes (the user vector's size)."""
        if self.latent_dim_role == "prototypes":
            return self.latent_dim
        return self.num_prototypes or DEFAULT_PROTOTYPES

    @property
    def space_dim(self) -> int:
        """d, the width of the preference space."""
        return self.preference_dim if self.latent_dim_role == "prototypes" else self.latent_dim


def projector(in_dims: int, out_dims: int, layers: int, width: int) -> nn.Sequential:
    """The PAL repo's ``mlpN-gelu`` connector: ``layers`` hidden GELU layers, then linear."""
    dims = [in_dims] + [width] * layers
    modules: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        modules += [nn.Linear(a, b), nn.GELU()]
    modules.append(nn.Linear(dims[-1], out_dims))
    return nn.Sequential(*modules)


def mixture_weights(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """[B, K] mixture logits -> [B, K] weights on the simplex (PAL's CustomSoftMax)."""
    return torch.softmax(logits / temperature, dim=-1)


@register_method("pal", summary="PAL-B: item projector, user = mixture of K prototypes")
class PAL(RewardModel):
    """PAL-B reward: <F(h_t), sum_k softmax(z_u)_k p_k> at every position (aggregation: last)."""

    config_class = PALConfig
    aggregation = "last"
    supports_rgd = False  # paper section 7: PAL "doesn't support RGD"
    config: PALConfig

    @property
    def user_dim(self) -> int:
        return self.config.prototype_count

    def build(self, hidden_size: int) -> None:
        cfg = self.config
        d, k = cfg.space_dim, cfg.prototype_count
        width = cfg.projector_width or d
        self.item_projector = projector(hidden_size, d, cfg.projector_layers, width)
        if cfg.prototypes == "projectors":
            self.prototype_projectors = nn.ModuleList(
                projector(hidden_size, d, cfg.projector_layers, width) for _ in range(k)
            )
        else:
            self.prototype_points = nn.Parameter(torch.randn(k, d))  # [K, d]
        if cfg.similarity == "cosine":
            self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT).log())

    def prototypes(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T, K, d] prototype vectors at every position (points broadcast: [1, 1, K, d])."""
        if self.config.prototypes == "points":
            return self.prototype_points[None, None]
        return torch.stack([g(hidden) for g in self.prototype_projectors], dim=2)

    def ideal_points(self, prototypes: torch.Tensor, z: torch.Tensor, steps: int) -> torch.Tensor:
        """[B, T, d] the users' ideal points a_u = sum_k w_uk p_k from [B|1, T|1, K, d]."""
        weights = mixture_weights(z, self.config.mixture_temperature)  # [B, K]
        ideal = (weights[:, None, :, None] * prototypes).sum(dim=2)  # [B, T|1, d]
        return ideal.expand(-1, steps, -1)

    def head_values(self, hidden: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if z is None:
            raise ValueError("PAL needs user mixture logits z")
        return self.combine(self.item_projector(hidden), self.prototypes(hidden), z)

    def combine(self, items: torch.Tensor, prototypes: torch.Tensor, z: torch.Tensor):
        """[B, T] rewards from items [B, T, d], prototypes [B|1, T|1, K, d], logits [B, K]."""
        ideal = self.ideal_points(prototypes, z, items.shape[1])  # [B, T, d]
        if self.config.similarity == "dot":
            return (items * ideal).sum(dim=-1)  # [B, T]
        scale = self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)
        cosine = nn.functional.cosine_similarity(items, ideal, dim=-1, eps=1e-8)
        return scale * cosine  # [B, T]

    def adapt(self, user: str, support: Sequence[Preference]) -> None:
        """Bradley-Terry on ``user``'s logits only (Adam, ``adapt_steps``), theta frozen.

        The generic loop on cached features, but the projections, which z does not change,
        are computed once, at each response's last token (aggregation "last").
        """
        start = start_user_vector(self, user, support)
        if start is None:
            return
        pairs, z = start
        feats = response_features(self, pairs)
        rows = torch.arange(feats["hidden"].shape[0])
        last = feats["hidden"][rows, feats["valid"].sum(dim=1) - 1][:, None]  # [2n, 1, H]
        with torch.no_grad():
            items, prototypes = self.item_projector(last), self.prototypes(last)
        n = feats["n"]
        optimizer = torch.optim.Adam([z], lr=self.config.adapt_lr or self.config.user_lr)
        with frozen(self):
            for _ in range(self.config.adapt_steps):
                optimizer.zero_grad(set_to_none=True)
                reward = self.combine(items, prototypes, z[None].expand(len(rows), -1))[:, 0]
                loss = self.pair_loss(reward[:n], reward[n:], pairs) + self.user_regularizer(z)
                loss.backward()
                optimizer.step()
        self.add_user(user, z.detach())

    def init_train_users(self, n: int) -> torch.Tensor:
        """N(0, I) mixture logits, as the PAL repo's ``UserLearner.init_weight``."""
        return torch.randn(n, self.user_dim)

    def new_user_vector(self) -> torch.Tensor:
        """A new user starts with uniform weights over the prototypes (zero logits)."""
        return torch.zeros(self.user_dim, device=self.user_table.device)

    def trainable_groups(self) -> list[dict[str, Any]]:
        """Base groups; the cosine scale (if any) gets its own LR and no weight decay."""
        groups = super().trainable_groups()
        if self.config.similarity != "cosine":
            return groups
        for group in groups:
            group["params"] = [p for p in group["params"] if p is not self.logit_scale]
        scale = {"params": [self.logit_scale], "lr": self.config.logit_scale_lr}
        return [g for g in groups if g["params"]] + [{**scale, "weight_decay": 0.0}]
