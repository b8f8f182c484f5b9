"""P-DPO adaptation with few backbone passes: per-pair margin gradients, exact anchors, and
``adapt_steps_per_pass=1`` equal to plain Adam on the true DPO loss (a naive autograd loop)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import persalign.rewards as rewards
import persalign.rewards.methods._pdpo_adapt as pdpo_adapt
from persalign.rewards.engine.training import frozen
from persalign.rewards.methods._pdpo_adapt import (
    margin_jacobian,
    shared_prompt_chunks,
    two_sequence_chunks,
)

from .rewards_synthetic import two_group_task
from .test_rewards_pdpo import FAST, adapted

# 3 pairs a chunk (the support spans several chunks); adapt_steps set by each test
SETTINGS = {**FAST, "eval_batch_size": 6, "beta": 0.7}


@pytest.fixture(scope="module")
def pdpo(tiny_lm):
    train, _ = two_group_task()
    rm = rewards.create("p-dpo", backbone=tiny_lm, max_steps=4, **SETTINGS)
    rm.fit(train, progress=False)
    rm.eval()
    return rm


@pytest.fixture(scope="module")
def support():
    return two_group_task()[1]["new0"][0]  # 8 pairs


def adapt(rm, user, support, **settings) -> tuple[torch.Tensor, list[float], int]:
    """z, support losses and backbone passes of ``user`` adapted with config fields ``settings``."""
    z, losses = adapted(rm, user, support, **settings)
    return z, losses, rm.adapt_passes[user]


def true_loss(rm, pairs, z: torch.Tensor) -> torch.Tensor:
    """The DPO support loss at ``z`` from two plain sequences per pair (with autograd)."""
    n = len(pairs)
    batch = rm.encode(
        [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    )
    with torch.no_grad():
        ref = rm.reference_logprobs(batch).sum(dim=1)  # [2n]
    policy = rm.policy_logprobs(batch, z[None].expand(2 * n, -1)).sum(dim=1)  # [2n]
    margin = rm.config.beta * ((policy[:n] - ref[:n]) - (policy[n:] - ref[n:]))  # [n]
    return -nn.functional.logsigmoid(margin).mean()


def naive_adam(rm, pairs, steps: int, lr: float) -> tuple[torch.Tensor, list[float]]:
    """Reference: Adam on z with a backbone forward and backward at every step."""
    z = nn.Parameter(torch.zeros(rm.user_dim))
    optimizer = torch.optim.Adam([z], lr=lr)
    losses = []
    with frozen(rm):
        for _ in range(steps):
            optimizer.zero_grad()
            loss = true_loss(rm, pairs, z)
            loss.backward()
            losses.append(float(loss.detach()))
            optimizer.step()
    return z.detach(), losses


@pytest.mark.parametrize("shared", [True, False])
def test_one_step_per_pass_is_plain_adam(pdpo, support, shared):
    z, losses, passes = adapt(
        pdpo, "one", support, adapt_steps=6, adapt_steps_per_pass=1, adapt_shared_prompt=shared
    )
    expect_z, expect_losses = naive_adam(pdpo, support, 6, SETTINGS["user_lr"])
    assert passes == 6
    torch.testing.assert_close(
        torch.tensor(losses), torch.tensor(expect_losses), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(z, expect_z, rtol=1e-4, atol=1e-6)
    assert expect_z.abs().max() > 0.1  # it moved: lr 5e-2 for 6 steps


@pytest.mark.parametrize("shared", [True, False])
def test_margin_jacobian_rows_are_each_pairs_gradient(pdpo, support, shared):
    chunks = (shared_prompt_chunks if shared else two_sequence_chunks)(pdpo, support)
    assert len(chunks) > 1
    ordered = [pair for part, _, _ in chunks for pair in part]
    z = torch.randn(pdpo.user_dim) * 0.05
    with frozen(pdpo):
        chosen, rejected, jacobian = margin_jacobian(pdpo, chunks, z, shared)
    assert jacobian.shape == (len(support), pdpo.user_dim)
    for i, pair in enumerate(ordered):  # naive: one pair at a time, its own autograd
        batch = pdpo.encode([pair.prompt] * 2, [pair.chosen, pair.rejected])
        with torch.no_grad():
            ref = pdpo.reference_logprobs(batch).sum(dim=1)
        zi = z.clone().requires_grad_(True)
        with frozen(pdpo):
            policy = pdpo.policy_logprobs(batch, zi[None].expand(2, -1)).sum(dim=1)
            (policy[0] - policy[1]).backward()
        torch.testing.assert_close(chosen[i], policy[0].detach() - ref[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rejected[i], policy[1].detach() - ref[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(jacobian[i], zi.grad, rtol=1e-4, atol=1e-6)


def test_a_backbone_pass_per_window_and_exact_loss_at_each_anchor(pdpo, support, monkeypatch):
    calls = []
    original = pdpo_adapt.pair_logprob_sums
    monkeypatch.setattr(
        pdpo_adapt, "pair_logprob_sums", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    _, losses, passes = adapt(pdpo, "windows", support, adapt_steps=12, adapt_steps_per_pass=5)
    chunks = -(-len(support) // (SETTINGS["eval_batch_size"] // 2))
    assert len(losses) == 12 and passes == 3  # anchors at steps 0, 5 and 10
    assert len(calls) == chunks * (1 + passes)  # pi_ref once, then one forward per pass
    monkeypatch.setattr(pdpo_adapt, "pair_logprob_sums", original)
    z5, _, _ = adapt(pdpo, "five", support, adapt_steps=5, adapt_steps_per_pass=5)
    with torch.no_grad(), frozen(pdpo):
        anchor_loss = float(true_loss(pdpo, support, z5))
    assert losses[5] == pytest.approx(anchor_loss, rel=1e-5)  # the second anchor is exact
    # between anchors the first-order loss is not the true one (the model does move z)
    z4, _, _ = adapt(pdpo, "four", support, adapt_steps=4, adapt_steps_per_pass=5)
    with torch.no_grad(), frozen(pdpo):
        assert losses[4] != pytest.approx(float(true_loss(pdpo, support, z4)), rel=1e-7)


def test_first_order_windows_track_the_exact_trajectory(pdpo, support):
    # the paper's regime: many small Adam steps (there 100 at 5e-5 on width 576, here 100 at 5e-4)
    settings = dict(adapt_steps=100, adapt_lr=5e-4)
    exact, _, _ = adapt(pdpo, "exact", support, adapt_steps_per_pass=1, **settings)
    fast, fast_losses, passes = adapt(pdpo, "fast", support, adapt_steps_per_pass=10, **settings)
    assert passes == 10
    query = two_group_task()[1]["new0"][1]
    with torch.no_grad(), frozen(pdpo):
        start = float(true_loss(pdpo, support, torch.zeros_like(exact)))
        exact_support, fast_support = (float(true_loss(pdpo, support, z)) for z in (exact, fast))
        exact_query, fast_query = (float(true_loss(pdpo, query, z)) for z in (exact, fast))
    assert start - exact_support > 0.2  # the exact path learned: something to track
    assert (start - fast_support) / (start - exact_support) > 0.98
    assert fast_query == pytest.approx(exact_query, rel=0.01)  # on held-out pairs too
    assert fast_losses[-1] == pytest.approx(fast_support, rel=1e-3)  # the last model loss ~ true
