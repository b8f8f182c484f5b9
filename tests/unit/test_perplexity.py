"""Perplexity of generations under the base policy equals a naive per-prefix computation."""

from __future__ import annotations

import math
import statistics

import pytest

from persalign.decoding import Policy
from persalign.metrics import METRICS
from persalign.metrics.perplexity import perplexity

from ..reference_policy import naive_terms

PROMPTS = ["Say about cat sun", "Hi", "Write a line about the dog", "Title: mats", "x"]
TEXTS = ["cat alpha", "a much longer answer here", "", "owl", "dog omega"]
USERS = ["a", "a", "a", "b", "b"]


@pytest.fixture(scope="module")
def policy(tiny_lm: str) -> Policy:
    return Policy.load(tiny_lm, device="cpu")


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_perplexity_matches_naive_and_averages_per_user(policy, padding_side):
    result = perplexity(
        policy, PROMPTS, TEXTS, users=USERS, batch_size=2, padding_side=padding_side, progress=False
    )
    naive = {}
    total_logp, total_tokens = 0.0, 0
    for i, (prompt, text) in enumerate(zip(PROMPTS, TEXTS, strict=True)):
        if not text:
            continue
        logp, _ = naive_terms(policy, None, prompt, text, USERS[i])
        naive[i] = math.exp(-sum(logp) / len(logp))
        total_logp, total_tokens = total_logp + sum(logp), total_tokens + len(logp)
    assert result["values"][2] is None and (result["n"], result["skipped"]) == (4, 1)
    for i, value in naive.items():  # batches of 2 vs one row each: float32-sized
        assert result["values"][i] == pytest.approx(value, rel=1e-5)
    per_user = {
        "a": statistics.fmean([naive[0], naive[1]]),
        "b": statistics.fmean([naive[3], naive[4]]),
    }
    assert result["per_user"] == pytest.approx(per_user, rel=1e-5)
    assert result["mean"] == pytest.approx((per_user["a"] + per_user["b"]) / 2, rel=1e-5)
    assert result["pooled"] == pytest.approx(math.exp(-total_logp / total_tokens), rel=1e-5)
    # a random model over ~100 tokens: far from a perfect (1.0) and from a uniform guess
    assert 1.5 < result["mean"] < 10 * len(policy.tokenizer)


def test_perplexity_without_users_and_all_empty(policy):
    result = perplexity(policy, PROMPTS[:2], TEXTS[:2], progress=False)
    assert result["per_user"] == {}
    assert result["mean"] == pytest.approx(statistics.fmean(result["values"]))
    empty = perplexity(policy, ["p"], [""], progress=False)
    assert math.isnan(empty["mean"]) and empty["values"] == [None] and empty["skipped"] == 1
    with pytest.raises(ValueError, match="same length"):
        perplexity(policy, ["p"], ["a", "b"])
    plugin = METRICS.get("perplexity")  # the cell metric wrapping this function
    assert plugin.__module__ == perplexity.__module__ and plugin.key == "perplexity"
