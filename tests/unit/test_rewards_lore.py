"""LoRE and LoRE-Alt: the reward formula, the simplex weights, the alternating steps."""

from __future__ import annotations

import pytest
import torch

import persalign.rewards as rewards

from .rewards_synthetic import two_group_task

FAST = dict(device="cpu", batch_size=8, eval_batch_size=8, seed=0, max_response_tokens=32)


@pytest.fixture(scope="module")
def lore_alt(tiny_lm):
    return rewards.create("lore-alt", backbone=tiny_lm, latent_dim=3, **FAST)


def test_defaults_are_the_papers():
    lore = rewards.METHODS.get("lore").config_class()
    alt = rewards.METHODS.get("lore-alt").config_class()
    assert (lore.latent_dim, lore.head_lr, lore.backbone_lr) == (2, 0.5, 5e-5)
    assert (alt.latent_dim, alt.head_lr) == (20, 0.5)


def test_head_values_equal_a_naive_convex_combination(tiny_lm):
    rm = rewards.create("lore", backbone=tiny_lm, latent_dim=3, **FAST)
    hidden = torch.randn(2, 4, rm.backbone.hidden_size)
    z = torch.tensor([[0.3, -1.0, 2.0], [0.0, 0.0, 0.0]])
    got = rm.head_values(hidden, z).detach()
    V = rm.bases.weight.detach()  # [K, H]
    for b in range(2):
        w = torch.exp(z[b]) / torch.exp(z[b]).sum()
        assert abs(float(w.sum()) - 1.0) < 1e-6 and bool((w > 0).all())
        for t in range(4):
            base = [float(V[k] @ hidden[b, t]) * rm.config.basis_scale for k in range(3)]
            expect = sum(float(w[k]) * base[k] for k in range(3))
            assert abs(float(got[b, t]) - expect) < 1e-5
    assert not any(n.endswith("bias") for n, _ in rm.bases.named_parameters())


def test_new_user_starts_at_uniform_weights_and_adapts(tiny_lm):
    train, new = two_group_task()
    rm = rewards.create("lore", backbone=tiny_lm, max_steps=2, adapt_steps=5, **FAST)
    rm.fit(train, progress=False)
    start = rm.new_user_vector()
    torch.testing.assert_close(rm.user_weights(start), torch.full((2,), 0.5))
    support, _ = new["new0"]
    rm.adapt("new0", support)
    weights = rm.user_weights(rm.user_vectors(["new0"]))[0]
    assert not torch.allclose(weights, torch.full((2,), 0.5))
    assert abs(float(weights.sum()) - 1.0) < 1e-6


def _phi_state(rm) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().clone()
        for n, p in rm.named_parameters()
        if n != "user_table" and p.requires_grad
    }


def _assert_same(before: dict[str, torch.Tensor], rm) -> None:
    now = dict(rm.named_parameters())
    for name, tensor in before.items():
        assert torch.equal(tensor, now[name]), name


def test_alternating_steps_freeze_the_other_side(lore_alt):
    rm = lore_alt
    train, _ = two_group_task()
    batch = train[:4] + train[30:34]
    users = sorted({p.user for p in train})
    rm.set_users(users, rm.init_train_users(len(users)))
    rm.user_table.requires_grad_(True)
    users_opt, phi_opt = rm.make_optimizers()
    lora = [n for n, p in rm.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora and "bases.weight" in _phi_state(rm)
    phi_opt_params = {id(p) for g in phi_opt.param_groups for p in g["params"]}
    assert id(rm.user_table) not in phi_opt_params
    assert [p for g in users_opt.param_groups for p in g["params"]] == [rm.user_table]

    phi_before, table_before = _phi_state(rm), rm.user_table.detach().clone()
    rm.user_step(rm.last_hidden(batch), batch, users_opt)
    _assert_same(phi_before, rm)  # LoRA and bases bitwise unchanged
    changed = (rm.user_table.detach() != table_before).any(dim=1)
    batch_rows = sorted({rm.user_ids[p.user] for p in batch})
    assert changed.nonzero().flatten().tolist() == batch_rows  # only the batch's users moved

    table_before = rm.user_table.detach().clone()
    rm.phi_step(rm.last_hidden(batch), batch, phi_opt)
    assert torch.equal(rm.user_table.detach(), table_before)  # weights bitwise unchanged
    now = dict(rm.named_parameters())
    assert not torch.equal(now["bases.weight"], phi_before["bases.weight"])
    assert any(not torch.equal(now[n], phi_before[n]) for n in lora)
    rm.user_table.requires_grad_(False)


def test_training_step_runs_the_backbone_once_and_updates_both(lore_alt, monkeypatch):
    rm = lore_alt
    train, _ = two_group_task()
    batch = train[:8]
    users = sorted({p.user for p in train})
    rm.set_users(users, rm.init_train_users(len(users)))
    rm.user_table.requires_grad_(True)
    optimizers = rm.make_optimizers()
    calls = []
    original = rm.backbone.hidden
    monkeypatch.setattr(rm.backbone, "hidden", lambda *a, **k: calls.append(1) or original(*a, **k))
    phi_before, table_before = _phi_state(rm), rm.user_table.detach().clone()
    metrics = rm.training_step(batch, optimizers, 0)
    assert len(calls) == 1
    assert {"loss", "accuracy", "user_loss"} <= set(metrics)
    assert not torch.equal(rm.user_table.detach(), table_before)
    assert not torch.equal(rm.bases.weight.detach(), phi_before["bases.weight"])
    rm.user_table.requires_grad_(False)


def test_lore_alt_learns_the_two_groups(tiny_lm):
    train, _ = two_group_task()
    rm = rewards.create("lore-alt", backbone=tiny_lm, max_steps=40, backbone_lr=2e-3, **FAST)
    history = rm.fit(train, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    prompts, responses = ["Say about cat sun"] * 2, ["dog alpha", "dog omega"]
    group_a = rm.sequence_rewards(prompts, responses, ["train0"] * 2)  # prefers 'alpha'
    group_b = rm.sequence_rewards(prompts, responses, ["train1"] * 2)  # prefers 'omega'
    assert group_a[0] > group_a[1] and group_b[1] > group_b[0]
