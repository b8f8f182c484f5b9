"""Fast ARGS equals a naive ARGS that recomputes both models over the full sequence."""

from __future__ import annotations

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding.args import ArgsDecoder, ArgsSettings
from persalign.decoding.base import GenerationRequest
from persalign.decoding.policy import Policy
from persalign.decoding.zero_shot import ZeroShotDecoder
from persalign.errors import ConfigError

from ..reference import naive_args

PROMPTS = [
    "Say about cat sun",
    "Title: a study of cats on mats, and more words here",
    "Hi",
    "Write a short line about the dog and the owl in the park",
]
USERS = ["u1", "u2", "u1", "u3"]


def make_requests() -> list[GenerationRequest]:
    pairs = zip(PROMPTS, USERS, strict=True)
    return [GenerationRequest(f"q{i}", user, prompt) for i, (prompt, user) in enumerate(pairs)]


@pytest.fixture(scope="module")
def setup(tiny_lm: str, tiny_lm_other: str):
    """A tiny policy and a personalized reward model (three users with different heads)."""
    policy = Policy.load(tiny_lm_other, device="cpu")
    rm = rewards.create("mpu", backbone=tiny_lm, device="cpu", seed=0)
    heads = torch.randn(3, rm.user_dim, generator=torch.Generator().manual_seed(0))
    rm.set_users(["u1", "u2", "u3"], heads)
    return policy, rm


@pytest.mark.parametrize("batch_size", [1, 4])
def test_fast_args_matches_naive_tokens(setup, batch_size: int):
    policy, rm = setup
    settings = ArgsSettings(lam=2.0, k=5, max_new_tokens=8, batch_size=batch_size)
    fast = ArgsDecoder(policy, rm, settings).generate(make_requests(), progress=False)
    for request, out in zip(make_requests(), fast, strict=True):
        expect = naive_args(policy, rm, request.prompt, request.user, 5, 2.0, 8)
        assert out.tokens == expect, request.id
        assert out.id == request.id and out.user == request.user


def test_users_change_the_output(setup):
    policy, rm = setup
    decoder = ArgsDecoder(policy, rm, ArgsSettings(lam=50.0, k=10, max_new_tokens=6))
    same_prompt = [GenerationRequest(f"q{u}", u, PROMPTS[1]) for u in ("u1", "u2", "u3")]
    outputs = [g.tokens for g in decoder.generate(same_prompt, progress=False)]
    assert len({tuple(t) for t in outputs}) > 1, "a large lambda must make users differ"


def test_lambda_zero_is_greedy_policy(setup):
    policy, rm = setup
    args = ArgsDecoder(policy, rm, ArgsSettings(lam=0.0, k=5, max_new_tokens=6, batch_size=4))
    greedy = ZeroShotDecoder(policy).generate(make_requests(), progress=False)
    zero = args.generate(make_requests(), progress=False)
    assert [z.tokens for z in zero] == [g.tokens[:6] for g in greedy]


def test_forced_length_and_sampling_is_seeded(setup):
    policy, rm = setup
    settings = ArgsSettings(lam=1.0, k=5, max_new_tokens=7, mode="sample", ignore_eos=True)
    first = ArgsDecoder(policy, rm, settings).generate(make_requests(), progress=False)
    again = ArgsDecoder(policy, rm, settings).generate(make_requests(), progress=False)
    assert all(len(g.tokens) == 7 and g.finish_reason == "length" for g in first)
    assert [g.tokens for g in first] == [g.tokens for g in again]


def policy_with_other_vocabulary(policy: Policy) -> Policy:
    other = Policy.load(policy.spec, device="cpu")
    other.formatter.tokenizer.add_tokens(["<brand-new-token>"])
    return other


def test_vocabulary_mismatch_is_never_silent(setup, tmp_path):
    policy, rm = setup
    other = policy_with_other_vocabulary(policy)
    with pytest.raises(ConfigError, match="different vocabularies"):
        ArgsDecoder(other, rm, ArgsSettings())
    slow = ArgsDecoder(other, rm, ArgsSettings(allow_retokenize=True, max_new_tokens=3, k=3))
    assert len(slow.generate(make_requests()[:1], progress=False)[0].tokens) <= 3


def test_retokenizing_path_samples_when_asked(setup):
    """The slow path used to take the argmax whatever the mode."""
    policy, rm = setup
    other = policy_with_other_vocabulary(policy)
    common = {"lam": 2.0, "k": 5, "max_new_tokens": 5, "allow_retokenize": True}
    greedy = ArgsDecoder(other, rm, ArgsSettings(**common)).generate(make_requests(), False)
    sample = ArgsSettings(**common, mode="sample", temperature=5.0, seed=1)
    first = ArgsDecoder(other, rm, sample).generate(make_requests(), progress=False)
    again = ArgsDecoder(other, rm, sample).generate(make_requests(), progress=False)
    assert [g.tokens for g in first] == [g.tokens for g in again]
    assert [g.tokens for g in first] != [g.tokens for g in greedy]
