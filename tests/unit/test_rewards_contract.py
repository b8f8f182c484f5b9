"""The contract every reward method keeps, checked against naive references on tiny models.

- ``prefix_rewards`` at response position t equals the reward of the response truncated after t
  tokens, scored on its own, with left and with right padding;
- ``step_rewards`` for k candidates equals the prefix rewards of the k extended sequences, over
  several decoding steps with commits;
- ``adapt`` leaves theta bitwise unchanged; save/load round-trips; training is reproducible;
- personalization happens: with two groups of users who prefer opposite responses, every
  personalized method beats ``global-rm`` on new users after ``adapt``, and a single-group task is
  learned to high accuracy by every method.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import persalign.rewards as rewards
from persalign.models.encoding import pad_sequences

from .rewards_synthetic import two_group_task

METHODS = [m for m in rewards.METHODS.names() if m != "oracle"]  # sim only: test_sim_metrics.py
# Settings that let a tiny random model learn the synthetic task in seconds.
FAST = dict(
    device="cpu",
    batch_size=8,
    eval_batch_size=8,
    adapt_steps=60,
    seed=0,
    backbone_lr=2e-3,
    head_lr=3e-3,
    user_lr=5e-2,
    max_response_tokens=32,
)
# Per-method extra settings for the tiny task (method-specific fields of each config).
EXTRA: dict[str, dict] = {
    # VPL: its MLP decoder must learn a z-h interaction; a slow LoRA keeps the alpha/omega
    # features alive meanwhile, response-mean context embeddings carry more of the difference.
    # Small latent sizes keep the tiny task fast (the defaults are the VPL / PAL repos' 512).
    "vpl": dict(
        epochs=3, backbone_lr=1e-4, context_pooling="mean", set_pooling="mean", latent_dim=2
    ),
    "pal": dict(preference_dim=64),
    # P-DPO adapts by backpropagating through the whole LM: 20 steps reach 1.0 here (0.5 at 0).
    "p-dpo": dict(adapt_steps=20),
}
PROMPTS = ["Say about cat sun", "Title: a study of cats on mats, and more words here"]
RESPONSES = ["cat alpha", "Mats omega!"]


def make(method: str, tiny_lm: str, **kw) -> rewards.RewardModel:
    return rewards.create(method, backbone=tiny_lm, **{**FAST, **EXTRA.get(method, {}), **kw})


def trained(method: str, tiny_lm: str, steps: int = 6, opposite: bool = True, **kw):
    train, new = two_group_task(opposite=opposite)
    rm = make(method, tiny_lm, max_steps=steps, **kw)
    rm.fit(train, progress=False)
    for user, (support, _) in new.items():
        rm.adapt(user, support)
    return rm, new


def reference_reward(rm, prompt: str, response_ids: list[int], user: str) -> float:
    """Naive: the whole-sequence reward of exactly this prompt and response, on its own."""
    batch = pad_sequences([rm.formatter.prompt_ids(prompt)], [list(response_ids)], 0, "right")
    with torch.no_grad():
        prefix = rm.batch_prefix_rewards(batch.to(rm.backbone.device), [user])
    return float(prefix[0, len(response_ids) - 1])


@pytest.fixture(scope="module", params=METHODS)
def fitted(request, tiny_lm):
    return trained(request.param, tiny_lm)


def test_prefix_rewards_equal_truncated_references(fitted):
    rm, _ = fitted
    users = ["new0", "new1"]
    right = rm.prefix_rewards(PROMPTS, RESPONSES, users, padding_side="right")
    left = rm.prefix_rewards(PROMPTS, RESPONSES, users, padding_side="left")
    torch.testing.assert_close(left.rewards, right.rewards, atol=1e-5, rtol=1e-4)
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        ids = rm.formatter.response_ids(response)
        assert int(right.lengths[i]) == len(ids)
        for t in range(1, len(ids) + 1):
            expect = reference_reward(rm, prompt, ids[:t], users[i])
            assert abs(float(right.rewards[i, t - 1]) - expect) < 1e-4, (i, t)
    seq = rm.sequence_rewards(PROMPTS, RESPONSES, users)
    torch.testing.assert_close(seq, right.last())


def test_step_rewards_equal_prefix_rewards_of_extensions(fitted):
    rm, _ = fitted
    users = ["new0", "new1"]
    state = rm.start([rm.formatter.prompt_ids(p) for p in PROMPTS], users)
    candidates = torch.tensor([[40, 41, 42, 43], [50, 51, 52, 53]])
    history: list[list[int]] = [[], []]
    for step in range(3):
        got = rm.step_rewards(state, candidates)
        assert got.shape == (2, 4)
        for b in range(2):
            for j in range(4):
                ids = history[b] + [int(candidates[b, j])]
                expect = reference_reward(rm, PROMPTS[b], ids, users[b])
                assert abs(float(got[b, j]) - expect) < 1e-4, (step, b, j)
        choice = torch.tensor([step % 4, (step + 2) % 4])
        rm.commit(state, choice)
        for b in range(2):
            history[b].append(int(candidates[b, choice[b]]))


def test_adapt_leaves_theta_bitwise_unchanged(fitted):
    rm, new = fitted
    before = {n: t.clone() for n, t in rm.state_dict().items() if n != "user_table"}
    support, _ = new["new0"]
    rm.adapt("brand-new", support)
    after = rm.state_dict()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    if rm.personalized:
        assert "brand-new" in rm.user_ids


def test_save_load_round_trip(fitted, tmp_path: Path):
    rm, _ = fitted
    rm.save(tmp_path / "m")
    again = rewards.load(tmp_path / "m")
    users = ["new0", "new1"]
    torch.testing.assert_close(
        again.sequence_rewards(PROMPTS, RESPONSES, users),
        rm.sequence_rewards(PROMPTS, RESPONSES, users),
    )
    assert again.user_ids == rm.user_ids


@pytest.mark.parametrize("method", METHODS)
def test_training_is_reproducible_with_a_seed(method: str, tiny_lm: str):
    a, _ = trained(method, tiny_lm, steps=3)
    b, _ = trained(method, tiny_lm, steps=3)
    users = ["new0", "new1"]
    torch.testing.assert_close(
        a.sequence_rewards(PROMPTS, RESPONSES, users),
        b.sequence_rewards(PROMPTS, RESPONSES, users),
        atol=0.0,
        rtol=0.0,
    )


def new_user_accuracy(rm, new) -> float:
    hits, total = 0, 0
    for user, (_, query) in new.items():
        chosen = rm.sequence_rewards(
            [q.prompt for q in query], [q.chosen for q in query], [user] * len(query)
        )
        rejected = rm.sequence_rewards(
            [q.prompt for q in query], [q.rejected for q in query], [user] * len(query)
        )
        hits += int((chosen > rejected).sum())
        total += len(query)
    return hits / total


@pytest.fixture(scope="module")
def global_accuracy(tiny_lm) -> float:
    rm, new = trained("global-rm", tiny_lm, steps=60)
    return new_user_accuracy(rm, new)


@pytest.mark.parametrize("method", [m for m in METHODS if rewards.METHODS.get(m).personalized])
def test_personalized_methods_beat_global_on_opposite_groups(method, tiny_lm, global_accuracy):
    rm, new = trained(method, tiny_lm, steps=60)
    accuracy = new_user_accuracy(rm, new)
    assert global_accuracy <= 0.7, "the two groups should defeat a global model"
    assert accuracy >= 0.85 and accuracy > global_accuracy + 0.2, (accuracy, global_accuracy)


@pytest.mark.parametrize("method", METHODS)
def test_single_group_task_is_learned(method, tiny_lm):
    rm, new = trained(method, tiny_lm, steps=60, opposite=False)
    assert new_user_accuracy(rm, new) >= 0.9


def test_fit_shows_a_progress_bar_only_when_asked(tiny_lm: str, capsys):
    train, _ = two_group_task(opposite=True)
    make("global-rm", tiny_lm, max_steps=2).fit(train, progress=False)
    assert "training" not in capsys.readouterr().err
    make("global-rm", tiny_lm, max_steps=2).fit(train, progress=True)
    assert "2/2" in capsys.readouterr().err
