"""Scores do not depend on batching, for every registered reward method.

For a set of pairs of different lengths and users, each method's sequence rewards, prefix
rewards and policy-accuracy score parts (the policy's log pi sums, each method's reward sums,
P-DPO's personalized-policy sums) are the same at batch sizes 1, 3 and 16 and with left and
right padding, within float32 precision (rel 1e-5 of the largest value). The reference is batch
size 1: no padding at all. Known failures elsewhere: reward-bench#137 (accuracy moves with batch
size), RLHFlow#49 (pad = eos: the pad scored instead of the last real token). Here the same
model is also loaded with a tokenizer whose pad token is its eos token, and responses that end
with an eos token: every score equals the one with a distinct pad token.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import persalign.rewards as rewards
from persalign.decoding import Policy
from persalign.metrics.scoring import personalized_parts, reward_sums, score_parts

from .rewards_synthetic import two_group_task
from .test_rewards_contract import EXTRA, FAST

METHODS = [m for m in rewards.METHODS.names() if m != "oracle"]  # sim only: test_sim_metrics.py
SETTINGS = [(b, side) for b in (3, 16) for side in ("right", "left")]  # vs batch 1
PROMPTS = [
    "Say about cat sun",
    "Title: a study of cats on mats, and more words here",
    "Hi",
    "Say about owl fig and a long tail of words to pad the others",
    "Say about map",
    "Why?",
    "Say about hat box",
]
RESPONSES = ["cat alpha", "Mats omega!", "a", "owl alpha fig omega", "map<eos>", "no", "x y"]
USERS = ["new0", "new1", "new0", "new1", "new1", "new0", "new1"]


def close(actual: torch.Tensor, expected: torch.Tensor, what: str, scale: float = 0.0) -> None:
    """Equal within float32 precision: 1e-5 relative to the largest magnitude of the values
    compared (``scale``: of the whole set they belong to; a reward near 0 is a difference of
    terms of that size, so its float32 error is too)."""
    expected = expected.double()
    scale = max(scale, float(expected.abs().max()) if expected.numel() else 0.0, 1e-6)
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=1e-5 * scale, msg=what)


def prefix_values(rm, prompts, responses, users, **kw) -> list[torch.Tensor]:
    prefix = rm.prefix_rewards(prompts, responses, users, **kw)
    return [prefix.rewards[i, : int(n)] for i, n in enumerate(prefix.lengths)]


@pytest.fixture(scope="module")
def pad_is_eos_lm(tiny_lm: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``tiny_lm``'s weights with a tokenizer whose pad token is its eos token."""
    folder = tmp_path_factory.mktemp("pad-is-eos")
    for file in Path(tiny_lm).iterdir():
        if not file.name.startswith("tokenizer"):
            (folder / file.name).write_bytes(file.read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).pad_token_id == tokenizer.eos_token_id
    return str(folder)


@pytest.fixture(scope="module")
def policy(tiny_lm: str) -> Policy:
    return Policy.load(tiny_lm, device="cpu")


@pytest.fixture(scope="module", params=METHODS)
def fitted(request, tiny_lm: str, tmp_path_factory: pytest.TempPathFactory):
    """(method, a barely trained and adapted model, its saved folder)."""
    method = request.param
    settings = {**FAST, **EXTRA.get(method, {}), "adapt_steps": 2, "max_steps": 1, "epochs": 1}
    rm = rewards.create(method, backbone=tiny_lm, **settings)
    train, new = two_group_task(per_user=4, n_train=2, n_new=2, support=2, query=1)
    rm.fit(train, progress=False)
    for user, (support, _) in new.items():
        rm.adapt(user, support)
    folder = tmp_path_factory.mktemp(f"batch-{method}")
    rm.save(str(folder))
    return method, rm, folder


def test_reward_model_scores_do_not_depend_on_batching_or_padding(fitted) -> None:
    method, rm, _ = fitted
    reference = prefix_values(rm, PROMPTS, RESPONSES, USERS, batch_size=1)
    scale = float(torch.cat(reference).abs().max())
    sequence = rm.sequence_rewards(PROMPTS, RESPONSES, USERS, batch_size=1)
    close(sequence, torch.stack([r[-1] for r in reference]), f"{method}: last prefix")
    for batch_size, side in SETTINGS:
        where = f"{method}, batch {batch_size}, {side} padding"
        got = prefix_values(rm, PROMPTS, RESPONSES, USERS, batch_size=batch_size, padding_side=side)
        for i, (row, ref) in enumerate(zip(got, reference, strict=True)):
            close(row, ref, f"{where}: prefix rewards of pair {i}", scale)
    seq = rm.sequence_rewards(PROMPTS, RESPONSES, USERS, batch_size=16, padding_side="left")
    close(seq, sequence, f"{method}, batch 16, left padding: sequence rewards", scale)


def test_policy_log_probs_do_not_depend_on_batching_or_padding(policy) -> None:
    ref = score_parts(policy, PROMPTS, RESPONSES, batch_size=1, progress=False)
    for batch_size, side in SETTINGS:
        parts = score_parts(
            policy, PROMPTS, RESPONSES, batch_size=batch_size, padding_side=side, progress=False
        )
        where = f"batch {batch_size}, {side} padding"
        close(parts.logp_sum, ref.logp_sum, f"{where}: policy log-prob sums")
        close(parts.scores("base"), ref.scores("base"), f"{where}: base scores")


def test_policy_accuracy_reward_sums_do_not_depend_on_batching_or_padding(fitted) -> None:
    """The RGD scores are log pi sums (above) + lambda x these reward sums (Eqs. 5/6)."""
    method, rm, _ = fitted
    ref = reward_sums(rm, PROMPTS, RESPONSES, USERS, batch_size=1, progress=False)
    for batch_size, side in SETTINGS:
        sums = reward_sums(
            rm, PROMPTS, RESPONSES, USERS, batch_size=batch_size, padding_side=side, progress=False
        )
        close(sums, ref, f"{method}, batch {batch_size}, {side} padding: reward sums")
    if hasattr(rm, "personalized_logprob_sums"):  # P-DPO's own policy
        own = personalized_parts(rm, PROMPTS, RESPONSES, USERS, batch_size=1)
        for batch_size in (3, 16):
            got = personalized_parts(rm, PROMPTS, RESPONSES, USERS, batch_size=batch_size)
            close(got.logp_sum, own.logp_sum, f"{method}, batch {batch_size}: own policy")


def test_a_pad_token_equal_to_eos_scores_the_last_real_token(fitted, pad_is_eos_lm) -> None:
    method, rm, folder = fitted
    same = rewards.load(folder, backbone=pad_is_eos_lm)
    eos = same.formatter.tokenizer.eos_token_id
    assert same.formatter.tokenizer.pad_token_id == eos
    assert same.formatter.response_ids(RESPONSES[4])[-1] == eos  # a real eos, last
    reference = prefix_values(rm, PROMPTS, RESPONSES, USERS, batch_size=1)
    scale = float(torch.cat(reference).abs().max())
    for batch_size, side in [(3, "left"), (16, "right")]:
        got = prefix_values(
            same, PROMPTS, RESPONSES, USERS, batch_size=batch_size, padding_side=side
        )
        for i, (row, ref) in enumerate(zip(got, reference, strict=True)):
            close(row, ref, f"{method}, pad = eos, batch {batch_size}, {side}: pair {i}", scale)
