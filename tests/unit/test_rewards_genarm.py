"""GenARM: the reward is beta * the sum of the LM's own token log-probs; ARM loss; hot path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import persalign.rewards as rewards
from persalign.models.encoding import pad_sequences
from persalign.rewards.methods._likelihood import response_logprobs

from .rewards_synthetic import two_group_task

FAST = dict(
    device="cpu", batch_size=8, eval_batch_size=8, seed=0, backbone_lr=2e-3, max_response_tokens=32
)
PROMPTS = ["Say about cat sun", "Title: a study of cats on mats, and more words here"]
RESPONSES = ["cat alpha", "Mats omega!"]


@pytest.fixture(scope="module")
def genarm(tiny_lm):
    train, _ = two_group_task(opposite=False)
    rm = rewards.create("genarm", backbone=tiny_lm, max_steps=4, reward_beta=0.3, **FAST)
    rm.fit(train, progress=False)
    return rm


def naive_token_logprobs(rm, prompt: str, response: str) -> torch.Tensor:
    """log p(y_t | x, y_<t) from the LM's own full forward (logits -> log_softmax), [R]."""
    prompt_ids = rm.formatter.prompt_ids(prompt)
    response_ids = rm.formatter.response_ids(response)
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = rm.backbone.base(input_ids=ids).logits[0].float()  # [T, V]
    logp = logits.log_softmax(dim=-1)
    start = len(prompt_ids)
    return torch.stack([logp[start + t - 1, tok] for t, tok in enumerate(response_ids)])


def test_defaults_follow_the_genarm_repository():
    cfg = rewards.METHODS.get("genarm").config_class()
    assert cfg.reward_beta == 0.05 and cfg.length_normalization is False
    assert cfg.target_margin == 0.0
    assert rewards.METHODS.get("genarm").personalized is False


def test_lora_was_trained(genarm):
    lora = [p for n, p in genarm.backbone.named_parameters() if "lora_B" in n]
    assert lora and any(float(p.detach().abs().sum()) > 0 for p in lora)


def test_prefix_rewards_are_beta_times_cumulative_token_logprobs(genarm):
    got = genarm.prefix_rewards(PROMPTS, RESPONSES, ["anyone", "else"])
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        expect = 0.3 * naive_token_logprobs(genarm, prompt, response).cumsum(0)
        length = int(got.lengths[i])
        assert length == len(expect)
        torch.testing.assert_close(got.rewards[i, :length], expect, atol=1e-5, rtol=1e-5)
        assert torch.all(got.rewards[i, length:] == 0)
    assert torch.all(got.last() < 0)  # a sum of log-probs (beta > 0) is negative


def test_users_do_not_change_a_global_reward(genarm):
    a = genarm.sequence_rewards(PROMPTS, RESPONSES, ["u1", "u2"])
    b = genarm.sequence_rewards(PROMPTS, RESPONSES, ["u3", "u3"])
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_arm_loss_with_margin_and_length_normalization(tiny_lm):
    rm = rewards.create(
        "genarm", backbone=tiny_lm, device="cpu", target_margin=0.3, length_normalization=True
    )
    pairs = two_group_task()[0][:2]
    chosen, rejected = torch.tensor([-1.0, -4.0]), torch.tensor([-2.0, -1.0])
    n_c = torch.tensor([len(rm.formatter.response_ids(p.chosen)) for p in pairs], dtype=torch.float)
    n_r = torch.tensor(
        [len(rm.formatter.response_ids(p.rejected)) for p in pairs], dtype=torch.float
    )
    expect = -nn.functional.logsigmoid(chosen / n_c - rejected / n_r - 0.3).mean()
    torch.testing.assert_close(rm.pair_loss(chosen, rejected, pairs), expect)
    plain = rewards.create("genarm", backbone=tiny_lm, device="cpu")
    expect_plain = -nn.functional.logsigmoid(chosen - rejected).mean()
    torch.testing.assert_close(plain.pair_loss(chosen, rejected, pairs), expect_plain)


def test_only_lora_trains(genarm):
    groups = genarm.trainable_groups()
    params = [p for g in groups for p in g["params"]]
    names = {id(p): n for n, p in genarm.named_parameters()}
    assert params and all("lora_" in names[id(p)] for p in params)


def test_step_reads_cached_logprobs_and_commit_feeds_one_token(genarm, monkeypatch):
    calls: list[tuple[int, ...]] = []
    original = genarm.backbone.hidden

    def counting(input_ids, *args, **kwargs):
        calls.append(tuple(input_ids.shape) if input_ids is not None else ("embeds",))
        return original(input_ids, *args, **kwargs)

    state = genarm.start([genarm.formatter.prompt_ids(p) for p in PROMPTS], ["a", "b"])
    monkeypatch.setattr(genarm.backbone, "hidden", counting)
    candidates = torch.tensor([[40, 41, 42], [50, 51, 52]])
    got = genarm.step_rewards(state, candidates)
    assert calls == []  # the k candidates cost no forward at all
    genarm.commit(state, torch.tensor([1, 2]))
    assert calls == [(2, 1)]  # one token per row against the cache
    torch.testing.assert_close(  # a cached one-token pass vs the step's: float32-sized
        state.total, torch.stack([got[0, 1], got[1, 2]]), rtol=1e-5, atol=1e-5
    )
    assert torch.all(state.total < 0)


def test_empty_prompt_is_refused(genarm):
    batch = pad_sequences([[]], [[40, 41]], 0, "right")
    with pytest.raises(ValueError, match="non-empty prompt"):
        response_logprobs(genarm.backbone, batch)
