"""PReF: the reward formula and the SVD + regression warm start of appendix D.3."""

from __future__ import annotations

import torch

import persalign.rewards as rewards
from persalign.rewards.methods.pref import preference_matrix, regress_head, svd_factors
from persalign.types import Preference

from .rewards_synthetic import WORDS, two_group_task

FAST = dict(device="cpu", batch_size=8, eval_batch_size=8, seed=0, max_response_tokens=32)


def test_defaults_are_the_papers():
    cfg = rewards.METHODS.get("pref").config_class()
    assert (cfg.latent_dim, cfg.head_lr, cfg.head_weight_decay) == (2, 1e-3, 0.02)
    assert cfg.warm_start


def test_head_values_equal_a_naive_dot_product(tiny_lm):
    rm = rewards.create("pref", backbone=tiny_lm, latent_dim=3, **FAST)
    assert rm.features.bias is None
    hidden = torch.randn(2, 5, rm.backbone.hidden_size)
    u = torch.randn(2, 3)
    got = rm.head_values(hidden, u).detach()
    weight = rm.features.weight.detach()  # [d, H]
    for b in range(2):
        for t in range(5):
            expect = sum(float(u[b, j]) * float(weight[j] @ hidden[b, t]) for j in range(3))
            assert abs(float(got[b, t]) - expect) < 1e-5


def test_preference_matrix_shares_rows_between_orientations():
    prefs = [
        Preference("1", "u0", "p", "x", "y"),  # u0 prefers x (= a)
        Preference("2", "u1", "p", "y", "x"),  # u1 prefers y (= b): same row
        Preference("3", "u1", "q", "x", "y"),
        Preference("4", "u1", "q", "x", "y"),  # labelled twice: mean
        Preference("5", "u0", "q", "y", "x"),
    ]
    keys, matrix = preference_matrix(prefs, {"u0": 0, "u1": 1})
    assert keys == [("p", "x", "y"), ("q", "x", "y")]
    assert matrix.tolist() == [[1.0, -1.0], [-1.0, 1.0]]
    keys, matrix = preference_matrix(prefs[:2], {"u0": 0, "u1": 1, "u2": 2})
    assert matrix.tolist() == [[1.0, -1.0, 0.0]]  # missing entries are 0


def test_regression_equals_the_normal_equations():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    naive = torch.linalg.inv(x.T @ x) @ (x.T @ y)  # (X^T X)^-1 X^T Y, [H, d]
    for rcond in (None, 1e-3):  # the default cut-off changes nothing on well-conditioned X
        weight = regress_head(x, y, rcond)  # [d, H]
        assert weight.shape == (3, 8)
        torch.testing.assert_close(weight, naive.T, atol=1e-8, rtol=1e-8)


def test_regression_cut_off_drops_near_null_directions():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    x[:, 5] = x[:, 4] + 1e-7 * torch.randn(40, generator=gen, dtype=torch.float64)  # ~collinear
    y = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    assert regress_head(x, y).norm() > 1e4  # noise fitted along the near-null direction
    weight = regress_head(x, y, 1e-3)
    assert weight.norm() < 10
    # = the regression on columns 0-4, column 4's weight shared equally with its twin (min norm)
    plain = torch.linalg.lstsq(x[:, :5], y).solution.T  # [2, 5]
    torch.testing.assert_close(weight[:, :4], plain[:, :4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight[:, 4:], plain[:, 4:].expand(2, 2) / 2, atol=1e-5, rtol=1e-5)


def synthetic_low_rank_task(gen: torch.Generator, pairs: int = 60, users: int = 12, dims: int = 16):
    """Embedding differences X, a true head W* and users u*; M = sign(X W*^T u*), 70% observed."""
    x = torch.randn(pairs, dims, generator=gen, dtype=torch.float64)
    w_true = torch.randn(2, dims, generator=gen, dtype=torch.float64)
    u_true = torch.randn(users, 2, generator=gen, dtype=torch.float64)
    full = torch.sign(x @ w_true.T @ u_true.T)  # [P, U]
    observed = torch.rand(pairs, users, generator=gen) < 0.7
    return x, full * observed, observed


def test_warm_start_alone_ranks_training_pairs_above_chance():
    gen = torch.Generator().manual_seed(0)
    x, matrix, observed = synthetic_low_rank_task(gen)
    pair_feats, user_feats = svd_factors(matrix, 2, gen)
    weight = regress_head(x, pair_feats, 1e-3)  # phi's warm start
    scores = (x @ weight.T) @ user_feats.T  # [P, U]: u^T (phi(a) - phi(b))
    agree = (torch.sign(scores) == matrix)[observed].double().mean()
    assert agree > 0.8, float(agree)
    # the factors reproduce M at rank 2: U_S V_S^T is its best rank-2 approximation
    u, s, vh = torch.linalg.svd(matrix)
    torch.testing.assert_close(pair_feats @ user_feats.T, (u[:, :2] * s[:2]) @ vh[:2])


def test_rank_deficient_matrix_keeps_every_dimension_trainable():
    matrix = torch.tensor([[1.0], [-1.0], [1.0]], dtype=torch.float64)  # one user: rank 1
    pair_feats, user_feats = svd_factors(matrix, 3, torch.Generator().manual_seed(0))
    assert pair_feats.shape == (3, 3) and user_feats.shape == (1, 3)
    assert bool((user_feats[:, 1:] != 0).all())
    torch.testing.assert_close(pair_feats @ user_feats.T, matrix)


def shared_pairs_task(n_pairs: int = 16, n_users: int = 6) -> list[Preference]:
    """Every user labels the same pairs (a dense matrix); even users prefer 'alpha'."""
    prefs = []
    for i in range(n_pairs):
        word = WORDS[i % len(WORDS)]
        prompt = f"Say about {WORDS[(i * 5) % len(WORDS)]} {i}"
        alpha, omega = f"{word} alpha", f"{word} omega"
        for u in range(n_users):
            chosen, rejected = (alpha, omega) if u % 2 == 0 else (omega, alpha)
            prefs.append(Preference(f"u{u}/{i}", f"u{u}", prompt, chosen, rejected))
    return prefs


def _train_accuracy(rm, prefs) -> float:
    prompts = [p.prompt for p in prefs]
    users = [p.user for p in prefs]
    chosen = rm.sequence_rewards(prompts, [p.chosen for p in prefs], users)
    rejected = rm.sequence_rewards(prompts, [p.rejected for p in prefs], users)
    return float((chosen > rejected).double().mean())


def test_model_warm_start_ranks_training_pairs_with_no_training(tiny_lm):
    prefs = shared_pairs_task()
    rm = rewards.create("pref", backbone=tiny_lm, **FAST)
    users = sorted({p.user for p in prefs})
    rm.set_users(users, rm.init_train_users(len(users)))
    lora_before = {n: t.clone() for n, t in rm.state_dict().items() if "lora_" in n}
    stats = rm.warm_start(prefs)
    assert stats["density"] == 1.0 and stats["pairs"] == 16
    assert _train_accuracy(rm, prefs) > 0.9
    for name, tensor in rm.state_dict().items():  # only phi and the users were set
        if name in lora_before:
            assert torch.equal(tensor, lora_before[name]), name


def test_fit_calls_the_warm_start_and_can_skip_it(tiny_lm, monkeypatch):
    train, _ = two_group_task()
    seen = []
    cls = rewards.METHODS.get("pref")
    monkeypatch.setattr(cls, "warm_start", lambda self, pairs: seen.append(len(pairs)))
    rewards.create("pref", backbone=tiny_lm, max_steps=1, **FAST).fit(train, progress=False)
    assert seen == [len(train)]
    cold = rewards.create("pref", backbone=tiny_lm, max_steps=1, warm_start=False, **FAST)
    cold.fit(train, progress=False)
    assert seen == [len(train)]
