"""VPL specifics: a permutation-invariant set encoder, the KL term, an adapt that only encodes,
train users' z = mu over their pairs, and context sets drawn from the user's other pairs."""

from __future__ import annotations

import re

import pytest
import torch

import persalign.rewards as rewards
from persalign.rewards.methods._vpl_parts import PairSetEncoder, gaussian_kl, kl_anneal

from .rewards_synthetic import style_pairs

FAST = dict(
    device="cpu",
    batch_size=8,
    eval_batch_size=8,
    seed=0,
    max_response_tokens=32,
    latent_dim=2,  # tiny sizes for speed (the defaults are the VPL repo's 512)
    encoder_width=32,
    decoder_width=32,
)


def make(tiny_lm: str, **kw) -> rewards.RewardModel:
    return rewards.create("vpl", backbone=tiny_lm, **{**FAST, **kw})


def train_prefs():
    return style_pairs("t0", 12, True, 0) + style_pairs("t1", 12, False, 0)


@pytest.fixture(scope="module")
def fitted(tiny_lm: str):
    rm = make(tiny_lm, max_steps=3)
    history = rm.fit(train_prefs(), progress=False)
    return rm, history


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_set_encoder_is_permutation_invariant(pooling: str):
    torch.manual_seed(0)
    encoder = PairSetEncoder(hidden_size=16, width=32, latent_dim=3, pooling=pooling, bound=10.0)
    chosen, rejected = torch.randn(7, 16), torch.randn(7, 16)
    mu, logvar = encoder(chosen, rejected)
    assert mu.shape == logvar.shape == (3,)
    for seed in range(3):
        order = torch.randperm(7, generator=torch.Generator().manual_seed(seed))
        mu2, logvar2 = encoder(chosen[order], rejected[order])
        torch.testing.assert_close(mu2, mu, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(logvar2, logvar, atol=1e-6, rtol=1e-5)
    # ... but not blind: which response was chosen matters
    assert not torch.allclose(encoder(rejected, chosen)[0], mu)


def test_kl_term():
    assert float(gaussian_kl(torch.zeros(4), torch.zeros(4))) == 0.0
    mu, logvar = torch.tensor([[0.5, -1.0], [0.0, 0.3]]), torch.tensor([[0.2, -0.4], [0.0, 1.0]])
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(2, 2), torch.ones(2, 2))
    expect = torch.distributions.kl_divergence(q, p).sum(dim=-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expect)
    assert (gaussian_kl(mu, logvar) > 0).all()


def test_kl_annealing_is_the_repos_cyclical_cosine():
    assert kl_anneal(0, 100, 0.1) == pytest.approx(0.1)
    assert kl_anneal(50, 100, 0.1) == pytest.approx(0.55)
    assert kl_anneal(99, 100, 0.1) == pytest.approx(1.0, abs=1e-3)
    assert kl_anneal(100, 100, 0.1) == pytest.approx(0.1)  # the next cycle


def test_loss_is_bt_plus_annealed_beta_kl(fitted):
    rm, history = fitted
    first = history[0]
    beta = rm.config.kl_weight * kl_anneal(0, rm.config.kl_anneal_steps, 0.1)
    assert first["kl"] > 0
    assert first["loss"] == pytest.approx(first["bt"] + beta * first["kl"], rel=1e-5)


def test_train_users_get_mu_of_all_their_pairs(fitted):
    rm, _ = fitted
    assert rm.user_dim == 2 and rm.user_table.shape == (2, 2)
    prefs = train_prefs()
    with torch.no_grad():
        for user in ("t0", "t1"):
            mine = [p for p in prefs if p.user == user]
            mu, _ = rm.encode_user(*rm.context_embeddings(mine))
            torch.testing.assert_close(rm.user_vectors([user])[0], mu)
    assert not rm._contexts, "the context cache is freed after fit"


def test_adapt_encodes_the_support_set_and_optimises_nothing(fitted, monkeypatch):
    rm, _ = fitted
    support = style_pairs("fresh", 6, True, 3)
    before = {n: t.clone() for n, t in rm.state_dict().items() if n != "user_table"}
    calls = []
    forward = rm.backbone.hidden
    monkeypatch.setattr(rm.backbone, "hidden", lambda *a, **k: calls.append(1) or forward(*a, **k))

    def no_optimizer(*args, **kwargs):
        raise AssertionError("adapt must not build an optimizer")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", no_optimizer)
    rm.config = rm.config.model_copy(update={"adapt_steps": 10_000})
    rm.adapt("fresh", support)
    assert len(calls) == 1  # one forward pass over 6 pairs (12 sequences), whatever adapt_steps
    for name, tensor in rm.state_dict().items():
        if name != "user_table":
            assert torch.equal(tensor, before[name]), name
    with torch.no_grad():
        mu, _ = rm.encode_user(*rm.context_embeddings(support))
    torch.testing.assert_close(rm.user_vectors(["fresh"])[0], mu)
    # the order of the support set does not matter; an empty support gives the prior mean
    rm.adapt("fresh-reversed", support[::-1])
    torch.testing.assert_close(rm.user_vectors(["fresh-reversed"]), rm.user_vectors(["fresh"]))
    rm.adapt("nobody", [])
    assert torch.equal(rm.user_vectors(["nobody"])[0], torch.zeros(2))


def test_context_sets_come_from_the_users_other_pairs(tiny_lm: str):
    rm = make(tiny_lm, context_size=4)
    prefs = train_prefs()
    rm.before_fit(prefs)
    mine = [p for p in prefs if p.user == "t0"]
    targets = mine[:5]
    for _ in range(5):
        index = rm.sample_context("t0", targets).tolist()
        assert len(index) == 4 == len(set(index))
        assert all(5 <= i < 12 for i in index)  # never a target pair, always t0's own
    chosen, _ = rm._contexts["t0"]
    expect, _ = rm.context_embeddings(mine[7:8])
    torch.testing.assert_close(chosen[7:8], expect)
    # a user whose every pair is a target falls back to all of its pairs
    assert len(rm.sample_context("t1", [p for p in prefs if p.user == "t1"])) == 4


def test_context_embeddings_use_the_frozen_backbone(fitted):
    rm, _ = fitted
    pairs = style_pairs("x", 3, True, 5)
    frozen, _ = rm.context_embeddings(pairs)
    lora = [p for n, p in rm.backbone.named_parameters() if "lora_B" in n]
    with torch.no_grad():
        saved = [p.clone() for p in lora]
        for p in lora:
            p.add_(0.5)
        again, _ = rm.context_embeddings(pairs)
        for p, s in zip(lora, saved, strict=True):
            p.copy_(s)
    torch.testing.assert_close(again, frozen)


def test_defaults_are_the_vpl_repos_sizes_and_the_docstring_says_so():
    import persalign.rewards.methods.vpl as module

    cfg = module.VPLConfig()
    assert (cfg.latent_dim, cfg.encoder_width, cfg.decoder_width) == (512, 512, 512)
    assert (cfg.head_lr, cfg.head_weight_decay, cfg.encoder_weight_decay) == (1e-4, 1e-3, 0.0)
    claim = re.search(r'context_pooling="(\w+)"``, the\s+default', module.__doc__ or "")
    assert claim is not None and claim.group(1) == cfg.context_pooling == "mean"


def test_weight_decay_is_on_the_reward_mlp_only(tiny_lm: str):
    rm = make(tiny_lm, encoder_weight_decay=0.0, head_weight_decay=0.5, head_lr=0.1)
    (optimizer,) = rm.make_optimizers()
    owner = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for p in rm.decoder.parameters():
        assert owner[id(p)]["weight_decay"] == 0.5 and owner[id(p)]["lr"] == 0.1
    for p in rm.encoder.parameters():
        assert owner[id(p)]["weight_decay"] == 0.0 and owner[id(p)]["lr"] == 0.1
    # one AdamW step with zero gradients: only the decay moves anything, and only the decoder
    before = {n: p.detach().clone() for n, p in rm.named_parameters() if p.requires_grad}
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in rm.named_parameters():
        if name.startswith("decoder."):
            torch.testing.assert_close(p, before[name] * (1 - 0.1 * 0.5))
        elif name.startswith("encoder."):
            assert torch.equal(p, before[name]), name
