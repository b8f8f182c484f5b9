"""Frozen-backbone training (``backbone_training="frozen"``): heads on cached features.

- ``frozen_vs_lora_zero``: for every hidden-state method, the rewards of a frozen-trained head
  equal those of the LoRA path with the LoRA weights at zero (rel <= 1e-5), both through the
  cached features and through the live backbone, and the first training losses equal those of a
  naive reference: the LoRA path, same initial head, with its LoRA weights frozen at zero;
- the features: computed once, stored on disk, reused by another method and seed (a second run
  computes nothing), recomputed when a token limit changes; each kind equals the live encoding;
- GenARM and P-DPO refuse the option in one line; a frozen model has no adapters, saves, loads,
  scores prefixes and steps ARGS like any other (the contract tests, run on frozen models).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import persalign.rewards as rewards
from persalign.errors import ConfigError
from persalign.models.cache import cache_dir
from persalign.rewards.engine.features import training_features
from persalign.rewards.engine.pair_rewards import pair_rewards, response_hidden

from .rewards_synthetic import two_group_task
from .test_rewards_contract import EXTRA, FAST, PROMPTS, RESPONSES, trained
from .test_rewards_contract import test_adapt_leaves_theta_bitwise_unchanged as adapt_contract
from .test_rewards_contract import test_prefix_rewards_equal_truncated_references as prefix_contract
from .test_rewards_contract import test_save_load_round_trip as save_contract
from .test_rewards_contract import (
    test_step_rewards_equal_prefix_rewards_of_extensions as step_contract,
)

HIDDEN = [m for m in rewards.METHODS.names() if rewards.METHODS.get(m).reads_hidden_states]
STEPS = 4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def settings(method: str, **kw) -> dict:
    return {**FAST, **EXTRA.get(method, {}), "max_steps": STEPS, "batch_size": 6, **kw}


def test_the_nine_hidden_state_methods_take_the_option():
    assert sorted(HIDDEN) == sorted(
        ["global-rm", "global-rm-v2", "lore", "lore-alt", "pref", "pal", "vpl", "mpu", "mpu-avg"]
    )


@pytest.mark.parametrize("method", ["genarm", "p-dpo"])
def test_likelihood_methods_refuse_frozen_in_one_line(method: str, tiny_lm: str):
    with pytest.raises(ConfigError) as info:
        rewards.create(method, backbone=tiny_lm, device="cpu", backbone_training="frozen")
    assert "\n" not in str(info.value) and "backbone_training" in str(info.value)
    assert method in str(info.value)


@pytest.mark.parametrize("method", HIDDEN)
def test_frozen_vs_lora_zero(method: str, tiny_lm: str):
    train, _ = two_group_task(per_user=6, n_train=4)
    frozen = rewards.create(
        method, backbone=tiny_lm, **settings(method, backbone_training="frozen")
    )
    lora = rewards.create(method, backbone=tiny_lm, **settings(method))
    assert not any("lora_" in n for n, _ in frozen.named_parameters())
    zero = [p for n, p in lora.backbone.named_parameters() if "lora_B" in n]  # peft: B = 0
    assert zero and all(float(p.detach().abs().max()) == 0.0 for p in zero)
    freeze_lora(lora)  # the naive reference: the LoRA path, LoRA frozen at zero
    head = {n: t for n, t in frozen.state_dict().items() if not n.startswith("backbone.")}
    lora.load_state_dict(head, strict=False)  # the same initial head

    got = frozen.fit(train, progress=False)
    expect = lora.fit(train, progress=False)
    assert len(got) == len(expect) == STEPS
    for a, b in zip(got, expect, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(b["loss"]), (a, b)

    # the frozen-trained head (and users) on the LoRA-zero backbone
    trained_head = {n: t for n, t in frozen.state_dict().items() if not n.startswith("backbone.")}
    if frozen.personalized:
        lora.set_users(list(frozen.user_ids), frozen.user_table.detach())
    lora.load_state_dict(trained_head, strict=False)
    users = [p.user for p in train[:8]]
    live = frozen.sequence_rewards(
        [p.prompt for p in train[:8]], [p.chosen for p in train[:8]], users
    )
    reference = lora.sequence_rewards(
        [p.prompt for p in train[:8]], [p.chosen for p in train[:8]], users
    )
    assert rel(live, reference) <= 1e-5
    # the training path (cached features) against the LoRA-zero path: rewards and gradients
    frozen.training_features = training_features(frozen, train[:8], progress=False)
    cached, cached_grads = rewards_and_grads(frozen, train[:8])
    frozen.training_features = None
    live_pairs, live_grads = rewards_and_grads(lora, train[:8])
    assert rel(cached, live_pairs) <= 1e-5
    scale = 0.1 * max(float(g.abs().max()) for g in live_grads.values())
    for name, grad in live_grads.items():
        diff = float((cached_grads[name] - grad).abs().max())
        assert diff <= 1e-4 * max(float(grad.abs().max()), scale), name


def freeze_lora(rm) -> None:
    """Stop LoRA's gradients, again after ``before_fit``: peft's ``disable_adapter`` (PReF's warm
    start, VPL's context embeddings) makes the adapters trainable again on exit."""
    before_fit = rm.before_fit

    def frozen_before_fit(pairs):
        before_fit(pairs)
        for param in rm.backbone.trainable_parameters():
            param.requires_grad_(False)

    for param in rm.backbone.trainable_parameters():
        param.requires_grad_(False)
    rm.before_fit = frozen_before_fit


def rewards_and_grads(rm, pairs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pair rewards and the head's gradients of their Bradley-Terry loss."""
    rm.zero_grad(set_to_none=True)
    rm.user_table.requires_grad_(rm.personalized)  # MPU's heads are its user rows
    chosen, rejected = pair_rewards(rm, pairs)
    rm.pair_loss(chosen, rejected, pairs).backward()
    grads = {
        n: p.grad.clone()
        for n, p in rm.named_parameters()
        if p.grad is not None and not n.startswith("backbone.")
    }
    assert grads
    return torch.cat([chosen, rejected]).detach(), grads


def test_features_are_computed_once_and_reused(tiny_lm: str):
    train, _ = two_group_task(per_user=4, n_train=2)
    first = rewards.create("global-rm", backbone=tiny_lm, device="cpu", backbone_training="frozen")
    table = training_features(first, train, progress=False)
    responses = len({(p.prompt, r) for p in train for r in (p.chosen, p.rejected)})
    assert table.computed == responses and len(table.rows) == responses
    shards = sorted((cache_dir() / "reward-features").rglob("shard-*.safetensors"))
    other = rewards.create(
        "lore", backbone=tiny_lm, device="cpu", backbone_training="frozen", seed=3
    )
    again = training_features(other, list(reversed(train)), progress=False)
    assert again.computed == 0  # another method and seed: nothing computed
    assert sorted((cache_dir() / "reward-features").rglob("shard-*.safetensors")) == shards
    for text, row in table.rows.items():
        j = again.rows[text]
        assert torch.equal(table.last[row], again.last[j])
        torch.testing.assert_close(
            table.token_batch(torch.tensor([row]))[0],
            again.token_batch(torch.tensor([j]))[0],
            rtol=0,
            atol=0,
        )
    shorter = rewards.create(
        "global-rm",
        backbone=tiny_lm,
        device="cpu",
        backbone_training="frozen",
        max_response_tokens=4,
    )
    assert training_features(shorter, train, progress=False).computed == responses


def test_each_feature_kind_equals_the_live_encoding(tiny_lm: str):
    train, _ = two_group_task(per_user=3, n_train=2)
    pairs = [
        type(p)(p.id, p.user, p.prompt + " x" * i, p.chosen + "!" * i, p.rejected)
        for i, p in enumerate(train)
    ]
    rm = rewards.create("vpl", backbone=tiny_lm, device="cpu", backbone_training="frozen")
    table = training_features(rm, pairs, progress=False)
    hidden, valid = response_hidden(rm, pairs)  # [2n, R, H], naive per-pair rows
    lengths = valid.sum(dim=1)
    last = hidden[torch.arange(len(hidden)), lengths - 1]
    mean = (hidden * valid[..., None]).sum(dim=1) / lengths[:, None]
    torch.testing.assert_close(table.pooled(pairs, "last"), last, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(table.pooled(pairs, "mean"), mean, rtol=1e-5, atol=1e-5)
    tokens, ok = table.token_batch(table.pair_rows(pairs))
    assert torch.equal(ok, valid[:, : ok.shape[1]])
    torch.testing.assert_close(
        tokens, hidden[:, : ok.shape[1]] * ok[..., None], rtol=1e-5, atol=1e-5
    )


@pytest.fixture(scope="module", params=["global-rm-v2", "lore", "vpl"])
def fitted(request, tiny_lm):
    """Frozen-trained models with adapted users, for the contract checks."""
    return trained(request.param, tiny_lm, backbone_training="frozen")


def test_frozen_models_meet_the_contract(fitted, tmp_path: Path):
    rm, _ = fitted
    assert rm.config.backbone_training == "frozen" and not rm.backbone.trainable_parameters()
    prefix_contract(fitted)
    step_contract(fitted)  # ARGS step rewards against a cached prefix
    adapt_contract(fitted)
    save_contract(fitted, tmp_path)
    again = rewards.load(tmp_path / "m")
    assert again.config.backbone_training == "frozen"
    assert again.backbone.weights_hash() == rm.backbone.weights_hash()
    users = ["new0", "new1"]
    torch.testing.assert_close(
        again.prefix_rewards(PROMPTS, RESPONSES, users).rewards,
        rm.prefix_rewards(PROMPTS, RESPONSES, users).rewards,
    )
