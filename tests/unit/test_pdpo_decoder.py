"""The ``p-dpo`` decoder writes with the personalized policy, per user, through the shared loop."""

from __future__ import annotations

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding import GenerationRequest, Policy, create_decoder
from persalign.errors import ConfigError

PROMPTS = ["Say about cat", "Hi", "Write a short line about the dog", "Title: owls"]
USERS = ["a", "b", "b", "a"]


@pytest.fixture(scope="module")
def pdpo(tiny_lm: str):
    rm = rewards.create("p-dpo", backbone=tiny_lm, device="cpu", seed=0)
    offsets = torch.randn(2, rm.user_dim, generator=torch.Generator().manual_seed(0))
    rm.set_users(["a", "b"], offsets)
    return rm.eval()


def requests() -> list[GenerationRequest]:
    pairs = zip(PROMPTS, USERS, strict=True)
    return [GenerationRequest(f"q{i}", user, prompt) for i, (prompt, user) in enumerate(pairs)]


def generate(rm, **settings):
    decoder = create_decoder("p-dpo", None, reward_model=rm, **settings)
    return decoder.generate(requests(), progress=False)


def reference_ids(rm, steps: int) -> list[list[int]]:
    return rm.generate_ids([rm.formatter.prompt_ids(p) for p in PROMPTS], USERS, steps)


def cut_at_stop(tokenizer, tokens: list[int], stop: str) -> tuple[list[int], str, str]:
    """The rule of every decoder, written out: end at the first token that completes a stop
    string with text before it; the text is what comes before the stop string."""
    for end in range(1, len(tokens) + 1):
        text = tokenizer.decode(tokens[:end], skip_special_tokens=True)
        at = text.find(stop)
        if at != -1 and text[:at].strip():
            return tokens[:end], text[:at].strip(), "stop"
    return tokens, tokenizer.decode(tokens, skip_special_tokens=True).strip(), "length"


@pytest.mark.parametrize("batch_size", [1, 3])
def test_greedy_matches_generate_ids_per_user(pdpo, batch_size: int):
    out = generate(pdpo, max_new_tokens=8, batch_size=batch_size)
    assert [g.tokens for g in out] == reference_ids(pdpo, 8)
    assert [g.user for g in out] == USERS and all(len(g.tokens) <= 8 for g in out)


def test_eos_ends_a_row_as_in_generate_ids(pdpo, monkeypatch):
    free = reference_ids(pdpo, 8)
    eos = free[0][2]  # pretend the third token of row 0 ends a response
    monkeypatch.setattr(pdpo, "_stop_ids", lambda: {eos})
    out = generate(pdpo, max_new_tokens=8, batch_size=4)
    assert [g.tokens for g in out] == reference_ids(pdpo, 8)
    assert out[0].tokens == free[0][:2] and out[0].finish_reason == "eos"


def test_stop_string_cuts_output_with_the_zero_shot_rule(pdpo, tiny_lm: str):
    tokenizer = pdpo.formatter.tokenizer
    free = generate(pdpo, max_new_tokens=10)
    first = free[0].tokens
    # a character first written at token 4 of row 0: the row must end there, and the others
    # wherever the same rule ends them
    stop = tokenizer.decode(first[4:5])
    assert stop.strip() and stop not in tokenizer.decode(first[:4]), "pick another token"
    out = generate(pdpo, max_new_tokens=10, stop=(stop,))
    for before, after in zip(free, out, strict=True):
        tokens, text, reason = cut_at_stop(tokenizer, before.tokens, stop)
        assert (after.tokens, after.text, after.finish_reason) == (tokens, text, reason)
    assert out[0].tokens == first[:5] and out[0].finish_reason == "stop"
    # zero-shot applies the same rule to its own (base policy) output
    policy = Policy.load(tiny_lm, device="cpu")
    zs = create_decoder("zero-shot", policy, max_new_tokens=10)
    zs_free = zs.generate(requests(), progress=False)
    zs_stop = create_decoder("zero-shot", policy, max_new_tokens=10, stop=(stop,))
    for before, after in zip(zs_free, zs_stop.generate(requests(), progress=False), strict=True):
        assert (after.tokens, after.text, after.finish_reason) == cut_at_stop(
            tokenizer, before.tokens, stop
        )


def test_sampling_is_seeded_and_differs_from_greedy(pdpo):
    settings = {"max_new_tokens": 8, "mode": "sample", "temperature": 2.0, "seed": 5}
    first = [g.tokens for g in generate(pdpo, **settings)]
    assert first == [g.tokens for g in generate(pdpo, **settings)]
    assert first != reference_ids(pdpo, 8)
    other_seed = [g.tokens for g in generate(pdpo, **{**settings, "seed": 6})]
    assert other_seed != first


def test_pdpo_decoder_needs_a_pdpo_model(tiny_lm: str):
    rm = rewards.create("global-rm", backbone=tiny_lm, device="cpu")
    with pytest.raises(ConfigError, match="needs a trained p-dpo model"):
        create_decoder("p-dpo", None, reward_model=rm)
    with pytest.raises(ConfigError, match="needs a trained p-dpo model"):
        create_decoder("p-dpo", None)
