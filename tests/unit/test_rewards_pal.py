"""PAL-B specifics: the mixture lies on the simplex, the reward is <f, sum_k w_k p_k>, the
paper's learning rates, a new user starts uniform and adapts only its mixture logits."""

from __future__ import annotations

import math

import pytest
import torch

import persalign.rewards as rewards
from persalign.rewards.engine.training import adapt_user_vector
from persalign.rewards.methods.pal import mixture_weights

from .rewards_synthetic import style_pairs

FAST = dict(device="cpu", batch_size=8, eval_batch_size=8, seed=0, max_response_tokens=32)


def make(tiny_lm: str, **kw) -> rewards.RewardModel:
    return rewards.create("pal", backbone=tiny_lm, **{**FAST, **kw})


def naive_reward(rm, h: torch.Tensor, logits: torch.Tensor) -> float:
    """<f(h), sum_k w_k p_k> for one hidden state h [H] and one user's logits [K], by hand."""
    cfg = rm.config
    exps = [math.exp(float(v) / cfg.mixture_temperature) for v in logits]
    weights = [e / sum(exps) for e in exps]
    f = rm.item_projector(h)
    if cfg.prototypes == "points":
        protos = [rm.prototype_points[k] for k in range(cfg.prototype_count)]
    else:
        protos = [g(h) for g in rm.prototype_projectors]
    ideal = sum(w * p for w, p in zip(weights, protos, strict=True))
    if cfg.similarity == "dot":
        return float(sum(f[i] * ideal[i] for i in range(cfg.space_dim)))
    cosine = float(f @ ideal) / (float(f.norm()) * float(ideal.norm()))
    return min(math.exp(float(rm.logit_scale)), 100.0) * cosine


def test_mixture_weights_are_on_the_simplex():
    logits = torch.randn(5, 3) * 4
    for temperature in (0.5, 1.0, 3.0):
        weights = mixture_weights(logits, temperature)
        assert (weights > 0).all()
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(5))
    # lower temperature: sharper (the largest weight grows)
    assert (mixture_weights(logits, 0.5).amax(-1) > mixture_weights(logits, 3.0).amax(-1)).all()
    torch.testing.assert_close(mixture_weights(torch.zeros(2, 4)), torch.full((2, 4), 0.25))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"prototypes": "points", "latent_dim": 3, "preference_dim": 6},
        {"similarity": "cosine", "latent_dim": 4, "mixture_temperature": 0.7},
        {"latent_dim_role": "preference", "latent_dim": 5, "num_prototypes": 3},
    ],
    ids=["projectors-dot", "points-dot", "projectors-cosine", "latent-is-d"],
)
def test_head_values_equal_a_naive_reimplementation(tiny_lm: str, options: dict):
    rm = make(tiny_lm, **options)
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 3, rm.backbone.hidden_size, generator=generator)  # [B, T, H]
    z = torch.randn(2, rm.user_dim, generator=generator) * 2  # [B, K]
    with torch.no_grad():
        got = rm.head_values(hidden, z)
        assert got.shape == (2, 3)
        for b in range(2):
            for t in range(3):
                expect = naive_reward(rm, hidden[b, t], z[b])
                assert abs(float(got[b, t]) - expect) < 1e-5 * max(1.0, abs(expect)), (b, t)
    # the reward depends on the user: a different mixture gives a different reward
    assert not torch.allclose(got, rm.head_values(hidden, -z).detach())


def test_paper_defaults_and_learning_rates(tiny_lm: str):
    rm = make(tiny_lm)
    cfg = rm.config
    assert (cfg.latent_dim, cfg.prototype_count, cfg.space_dim, rm.user_dim) == (2, 2, 512, 2)
    assert (cfg.head_lr, cfg.head_weight_decay, cfg.user_lr) == (1e-4, 0.01, 5e-3)
    assert rm.aggregation == "last"
    rm.set_users(["a", "b"], rm.init_train_users(2))
    rm.user_table.requires_grad_(True)
    groups = rm.trainable_groups()
    users = [g for g in groups if any(p is rm.user_table for p in g["params"])]
    assert len(users) == 1 and users[0]["lr"] == 5e-3 and users[0]["weight_decay"] == 0.0
    heads = [g for g in groups if any(p is rm.item_projector[0].weight for p in g["params"])]
    assert heads[0]["lr"] == 1e-4 and heads[0]["weight_decay"] == 0.01


def test_cosine_scale_has_its_own_group(tiny_lm: str):
    rm = make(tiny_lm, similarity="cosine")
    groups = rm.trainable_groups()
    owners = [g for g in groups if any(p is rm.logit_scale for p in g["params"])]
    assert len(owners) == 1 and owners[0]["lr"] == 0.1 and owners[0]["params"] == [rm.logit_scale]


def test_new_user_starts_uniform_and_adapts_only_its_logits(tiny_lm: str):
    train = style_pairs("t0", 16, True, 0) + style_pairs("t1", 16, False, 0)
    rm = make(tiny_lm, max_steps=4, user_lr=5e-2)
    rm.fit(train, progress=False)
    rm.config = rm.config.model_copy(update={"adapt_steps": 0})
    rm.adapt("fresh", style_pairs("fresh", 4, True, 1))
    uniform = mixture_weights(rm.user_vectors(["fresh"]))
    torch.testing.assert_close(uniform, torch.full((1, 2), 0.5))
    rm.config = rm.config.model_copy(update={"adapt_steps": 30})
    before = {n: t.clone() for n, t in rm.state_dict().items() if n != "user_table"}
    rm.adapt("fresh2", style_pairs("fresh2", 8, True, 1))
    assert not torch.allclose(rm.user_vectors(["fresh2"]), torch.zeros(1, 2))
    for name, tensor in rm.state_dict().items():
        if name != "user_table":
            assert torch.equal(tensor, before[name]), name


def test_latent_dim_roles_set_k_and_d(tiny_lm: str):
    """latent_dim is K (preference space preference_dim wide), or d with K = num_prototypes."""
    k8 = make(tiny_lm, latent_dim=8, preference_dim=16)
    assert k8.user_dim == 8 and len(k8.prototype_projectors) == 8
    assert k8.item_projector[-1].out_features == 16
    old = make(tiny_lm, latent_dim=8, latent_dim_role="preference")
    assert old.user_dim == 2 and len(old.prototype_projectors) == 2
    assert old.item_projector[-1].out_features == 8
    assert old.item_projector[0].out_features == 8  # width d, the old 576 -> 8 -> 8 -> 8
    with pytest.raises(Exception, match="num_prototypes"):
        make(tiny_lm, latent_dim=8, num_prototypes=2)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_adapt_equals_the_generic_loop_on_every_position(tiny_lm: str, similarity: str):
    """PAL's adapt (projections once, last token only) learns what the generic loop learns."""
    train = style_pairs("t0", 16, True, 0) + style_pairs("t1", 16, False, 0)
    rm = make(tiny_lm, max_steps=3, preference_dim=16, similarity=similarity, adapt_steps=25)
    rm.fit(train, progress=False)
    support = style_pairs("fresh", 6, True, 1)
    rm.adapt("fast", support)
    adapt_user_vector(rm, "generic", support)  # head_values on all positions, every step
    fast, generic = rm.user_vectors(["fast", "generic"])
    assert not torch.allclose(fast, torch.zeros_like(fast))
    torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-6)
