"""Paper fidelity, issue 12 items 8-11 and 14 (PAL, VPL, P-DPO, MPU, independent references).

Each test fails on the code before the fix (see the docstrings); docs/fidelity_D.md has the
readings and the options that keep the other ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import persalign.rewards as rewards
import persalign.rewards.methods.vpl as vpl_module
from persalign.runs.config import load_config

from .rewards_synthetic import style_pairs, two_group_task
from .test_reward_references import (
    REFERENCE_METHODS,
    reference_decoder,
    reference_prefix_rewards,
    trained_model,
)

REPO = Path(__file__).resolve().parents[2]
TINY = dict(device="cpu", batch_size=8, eval_batch_size=8, seed=0, max_response_tokens=32)
PROMPTS = ["Say about cat sun", "Title: a study of cats on mats, and more words here"]
RESPONSES = ["cat alpha", "Mats omega!"]


def paper_config(method: str, paper: str, monkeypatch: pytest.MonkeyPatch):
    """The reward config ``configs/paper/<paper>.yaml`` gives ``method`` (not built)."""
    monkeypatch.setenv("PERSALIGN_SHARED_DATA", os.environ.get("PERSALIGN_SHARED_DATA", "/data"))
    name, _, options = load_config(REPO / "configs" / "paper" / f"{paper}.yaml").method_options(
        method
    )
    return rewards.METHODS.get(name).config_class(**options)


def test_08_pal_latent_dim_is_the_number_of_prototypes(tiny_lm: str, monkeypatch):
    """K = the paper's latent dimension, preference space 512 wide (the PAL repo's dim512).

    Before: K was fixed at 2 and latent_dim was the width d (576 -> 8 -> 8 -> 8 projectors on
    PRISM), so ``user_dim`` was 2 and the item projector ended in 8 at latent_dim 8.
    """
    rm = rewards.create("pal", backbone=tiny_lm, latent_dim=8, **TINY)
    assert rm.user_dim == 8 and len(rm.prototype_projectors) == 8
    for net in [rm.item_projector, *rm.prototype_projectors]:
        assert net[0].out_features == 512 and net[-1].out_features == 512
    hidden = torch.randn(2, 3, rm.backbone.hidden_size)
    logits = torch.zeros(2, 8)
    logits[0, 5] = 9.0  # user 0 leans on prototype 5 only; user 1 is uniform over all 8
    with torch.no_grad():
        got = rm.head_values(hidden, logits)
        items = rm.item_projector(hidden)
        protos = torch.stack([g(hidden) for g in rm.prototype_projectors])  # [8, 2, 3, 512]
    weights = torch.softmax(logits, dim=-1)
    for b in range(2):
        ideal = (weights[b][:, None, None] * protos[:, b]).sum(0)  # [3, 512]
        torch.testing.assert_close(got[b], (items[b] * ideal).sum(-1), rtol=1e-5, atol=1e-6)
    for paper, k in [("tldr", 2), ("prism", 8), ("pref_lamp", 8)]:
        cfg = paper_config("pal", paper, monkeypatch)
        assert (cfg.prototype_count, cfg.space_dim) == (k, 512), paper
    old = rewards.create(
        "pal", backbone=tiny_lm, latent_dim=8, latent_dim_role="preference", **TINY
    )
    assert old.user_dim == 2 and old.item_projector[-1].out_features == 8  # the other reading


def test_09_vpl_sizes_pooling_and_decay_on_the_reward_mlp_only(tiny_lm: str, monkeypatch):
    """VPL repo sizes (z in R^512, 512-wide MLPs), the docstring's pooling is the default, and
    weight decay 1e-3 reaches the reward MLP only.

    Before: latent_dim 2 (also pinned by configs/paper/tldr.yaml), pooling "last" while the
    docstring called the response mean the repo's, and the encoder decayed with the decoder.
    """
    cfg = vpl_module.VPLConfig()
    assert (cfg.latent_dim, cfg.encoder_width, cfg.decoder_width) == (512, 512, 512)
    assert cfg.context_pooling == "mean" and 'context_pooling="mean"``, the' in (
        vpl_module.__doc__ or ""
    )
    for paper in ("tldr", "prism", "pref_lamp"):
        paper_cfg = paper_config("vpl", paper, monkeypatch)
        assert paper_cfg.latent_dim == 512 and paper_cfg.head_weight_decay == 1e-3, paper
    # the default encoder decay (0) against a visible reward-MLP decay: lr 0.1 x 0.5 per step
    rm = rewards.create(
        "vpl", backbone=tiny_lm, latent_dim=4, head_lr=0.1, head_weight_decay=0.5, **TINY
    )
    assert rm.decoder[0].in_features == rm.backbone.hidden_size + 4
    (optimizer,) = rm.make_optimizers()
    for group in optimizer.param_groups:  # zero gradients: AdamW moves weights by decay only
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in rm.named_parameters()}
    optimizer.step()
    for name, p in rm.named_parameters():
        if name.startswith("decoder."):
            torch.testing.assert_close(p, before[name] * 0.95, rtol=1e-6, atol=0)
        elif name.startswith("encoder."):
            assert torch.equal(p, before[name]), name


def test_10_pdpo_user_tokens_use_the_single_learning_rate(tiny_lm: str, monkeypatch):
    """P-RLHF trains every parameter at one LR (5e-5): the user tokens train and adapt at it.

    Before: user tokens trained at the base default 1e-3 and adapted at it (20x the repo's).
    """
    cfg = paper_config("p-dpo", "tldr", monkeypatch)
    assert cfg.backbone_lr == cfg.head_lr == cfg.user_lr == 5e-5 and cfg.adapt_lr is None
    # 100 adaptation steps at that rate, the backbone run once per 10 (first-order in between)
    assert cfg.adapt_steps == 100 and cfg.adapt_steps_per_pass == 1  # pinned: the exact path
    rm = rewards.create("p-dpo", backbone=tiny_lm, n_soft_tokens=2, adapt_steps=2, **TINY)
    rm.set_users(["a", "b"], rm.init_train_users(2))
    rm.user_table.requires_grad_(True)
    groups = rm.make_optimizers()[0].param_groups
    assert any(p is rm.user_table for g in groups for p in g["params"])
    assert {g["lr"] for g in groups} == {5e-5}
    rm.user_table.requires_grad_(False)
    rates: list[float] = []
    adam = torch.optim.Adam

    def recording(params, lr, **kw):
        rates.append(lr)
        return adam(params, lr=lr, **kw)

    monkeypatch.setattr(torch.optim, "Adam", recording)
    rm.adapt("new", style_pairs("new", 2, True, 0))
    assert rates == [5e-5]


def test_11_mpu_new_users_do_not_depend_on_order_or_unsaved_state(tiny_lm: str, tmp_path):
    """Adapt users in any order, save, load: same rewards; a loaded model adapts a further user
    exactly as the unsaved one does.

    Before: MPU seeded a new head from an in-memory counter (the k-th adapted user got seed
    + k, reset to 0 by a load), and MPU-Avg started from the mean of the whole user table,
    earlier adapted users included.
    """
    train, new = two_group_task(n_new=4)
    users = ["new0", "new1", "new2"]
    for method in ("mpu", "mpu-avg"):
        rm = rewards.create(method, backbone=tiny_lm, max_steps=3, adapt_steps=15, **TINY)
        rm.fit(train, progress=False)
        rm.save(tmp_path / method / "trained")
        loaded = {}
        for label, order in (("forward", users), ("backward", users[::-1])):
            model = rewards.load(tmp_path / method / "trained")
            for user in order:
                model.adapt(user, new[user][0])
            model.save(tmp_path / method / label)
            loaded[label] = (model, rewards.load(tmp_path / method / label))
        prompts = PROMPTS * len(users)
        responses = [r for r in RESPONSES for _ in users]
        who = [u for _ in RESPONSES for u in users]
        forward = loaded["forward"][1].sequence_rewards(prompts, responses, who)
        backward = loaded["backward"][1].sequence_rewards(prompts, responses, who)
        torch.testing.assert_close(forward, backward, rtol=1e-6, atol=1e-7)
        assert len(set(forward.tolist())) > 2, "users got different heads"
        unsaved, reloaded = loaded["forward"]
        alone = rewards.load(tmp_path / method / "trained")
        for model in (unsaved, reloaded, alone):
            model.adapt("new3", new["new3"][0])
        expect = unsaved.sequence_rewards(PROMPTS, RESPONSES, ["new3", "new3"])
        for model in (reloaded, alone):
            got = model.sequence_rewards(PROMPTS, RESPONSES, ["new3", "new3"])
            torch.testing.assert_close(got, expect, rtol=1e-6, atol=1e-7)


def test_14_independent_references_for_heads_and_aggregation(tiny_lm: str):
    """global-rm, global-rm-v2 (mean), mpu, mpu-avg and the VPL reward MLP equal plain
    transformers + peft + torch references built from the trained state dict (weights copied),
    for sequence and prefix rewards, train and adapted users, left and right padding."""
    for method in REFERENCE_METHODS:
        rm = trained_model(method, tiny_lm)
        decoder = reference_decoder(rm, tiny_lm)
        users = ["train1", "new0"] if rm.personalized else ["anyone", "anyone"]
        for user in users:
            who = [user] * len(PROMPTS)
            sequence = rm.sequence_rewards(PROMPTS, RESPONSES, who)
            for side in ("right", "left"):
                prefix = rm.prefix_rewards(PROMPTS, RESPONSES, who, padding_side=side)
                for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
                    expect = reference_prefix_rewards(rm, decoder, prompt, response, user)
                    scale = float(expect.abs().max())
                    got = prefix.rewards[i, : len(expect)]
                    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6 * scale)
                    assert abs(float(sequence[i]) - float(expect[-1])) <= 1e-5 * scale, method
