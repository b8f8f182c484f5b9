"""One forward pass per model for every response: the sums each policy-accuracy scorer needs.

    parts = score_parts(policy, prompts, responses, reward_model=rm, users=users)
    parts.logp_sum, parts.tokens      # [N] sum_t log pi(y_t | x, y_<t), [N] |y| (policy tokens)
    parts.reward_sum                   # [N] sum_t r(x, y_<=t) (the reward model's own tokens)
    parts.scores("personal-rgd", lam=0.5)   # any lambda, no new forward pass

The policy's log-probabilities come from ONE forward pass over each padded batch of prompt +
response (left or right padding, position ids from the mask): the logits at position p - 1 are
read at token p, and only the positions from the earliest response onwards are projected to the
vocabulary (``logits_to_keep``). The prefix rewards come from ONE reward-model pass per batch
(``RewardModel.prefix_rewards``). Log-softmax and sums run in float64. The policy renders
prompts with its own chat template (``policy.formatter``) and the reward model with its own
formatter, so with different tokenizers the two sums run over different tokens of the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from persalign.errors import ConfigError, DataError
from persalign.logs import track
from persalign.models.encoding import pad_sequences
from persalign.rewards.base import response_index

SCORERS = ("base", "global-rgd", "personal-rgd", "icl")
RGD_SCORERS = ("global-rgd", "personal-rgd")
CHUNK = 16  # response positions per float64 log-softmax (bounds memory with large vocabularies)


@dataclass
class ScoreParts:
    """Per-response sums every scorer is made of; computed once, combined for any lambda."""

    logp_sum: torch.Tensor  # [N] float64: sum_t log pi(y_t | x, y_<t) over the policy's tokens
    tokens: torch.Tensor  # [N] long: |y| in policy tokens
    reward_sum: torch.Tensor | None = None  # [N] float64: sum_t r(x, y_<=t) over the RM's tokens

    def scores(self, scorer: str, lam: float = 1.0) -> torch.Tensor:
        """[N] float64 scores of ``scorer`` (Eqs. 4-7)."""
        check_scorer(scorer)
        if scorer in RGD_SCORERS:
            if self.reward_sum is None:
                raise ConfigError(f"the {scorer} scorer needs a reward model")
            return self.logp_sum + lam * self.reward_sum
        return self.logp_sum / self.tokens.to(torch.float64)


def check_scorer(scorer: str) -> None:
    if scorer not in SCORERS:
        raise ConfigError(f"unknown scorer {scorer!r}; choose from {', '.join(SCORERS)}")


@torch.no_grad()
def token_logprobs(
    policy, prompt_ids: list[list[int]], response_ids: list[list[int]], padding_side: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(y_t | x, y_<t) of every response token, [B, R] float64 (0 beyond each response),
    and the valid mask [B, R], from ONE forward pass over the padded prompt + response batch."""
    if any(not p for p in prompt_ids):
        raise DataError("an empty policy prompt: log pi of the first response token is undefined")
    pad_id = policy.tokenizer.pad_token_id
    pad_id = policy.tokenizer.eos_token_id if pad_id is None else pad_id
    batch = pad_sequences(prompt_ids, response_ids, pad_id or 0, padding_side).to(policy.device)
    index, valid = response_index(batch)  # [B, R] sequence positions of response tokens
    first = int((batch.last_index - batch.response_lengths).min())  # earliest predicting position
    keep = batch.input_ids.shape[1] - first
    out = policy.model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=keep,
    )
    logits = out.logits  # [B, keep, V]: position first + j predicts token first + j + 1
    rel = (index - 1 - first).clamp(min=0)  # [B, R]
    targets = batch.input_ids.gather(1, index)  # [B, R]
    logp = torch.zeros(index.shape, dtype=torch.float64, device=logits.device)  # [B, R]
    for s in range(0, index.shape[1], CHUNK):  # float64 log-softmax, CHUNK positions at a time
        cols = slice(s, s + CHUNK)
        part = logits.gather(1, rel[:, cols, None].expand(-1, -1, logits.shape[-1])).double()
        logp[:, cols] = part.gather(2, targets[:, cols, None])[..., 0] - part.logsumexp(dim=-1)
    return logp * valid, valid


def policy_logprob_sums(
    policy,
    prompt_ids: Sequence[Sequence[int]],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([N] float64 sum_t log pi(y_t | x, y_<t), [N] response lengths) in policy tokens."""
    response_ids = [policy.formatter.response_ids(r) for r in responses]
    for i, ids in enumerate(response_ids):
        if not ids:
            raise DataError(f"response {i} is empty (nothing to score): {responses[i][:60]!r}")
    n = len(response_ids)
    # longest first: batches of similar length waste little padding; order restored below
    order = sorted(range(n), key=lambda i: -(len(prompt_ids[i]) + len(response_ids[i])))
    sums = torch.zeros(n, dtype=torch.float64)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    for rows in track(batches, "policy log-probs", show=progress):
        logp, _ = token_logprobs(
            policy,
            [list(prompt_ids[i]) for i in rows],
            [response_ids[i] for i in rows],
            padding_side,
        )
        sums[rows] = logp.sum(dim=1).cpu()
    lengths = torch.tensor([len(ids) for ids in response_ids], dtype=torch.long)
    return sums, lengths


def reward_sums(
    reward_model,
    prompts: Sequence[str],
    responses: Sequence[str],
    users: Sequence[str],
    *,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
) -> torch.Tensor:
    """[N] float64 sum_t r(x, y_<=t) over the reward model's own tokens, one pass per batch."""
    sums = torch.zeros(len(prompts), dtype=torch.float64)
    starts = range(0, len(prompts), batch_size)
    for start in track(starts, "prefix rewards", show=progress):
        sl = slice(start, start + batch_size)
        prefix = reward_model.prefix_rewards(
            prompts[sl], responses[sl], users[sl], padding_side=padding_side, batch_size=batch_size
        )
        sums[sl] = prefix.rewards.double().sum(dim=1)  # [b]; rewards are 0 beyond each response
    return sums


def score_parts(
    policy,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    reward_model=None,
    users: Sequence[str] | None = None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
) -> ScoreParts:
    """The policy sums (and the reward sums when ``reward_model`` is given) of every response.

    ``prompt_ids`` overrides the policy's rendering of ``prompts`` (ICL prompts); the reward
    model always renders ``prompts`` with its own formatter.
    """
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    if prompt_ids is None:
        prompt_ids = [policy.formatter.prompt_ids(p) for p in prompts]
    logp, tokens = policy_logprob_sums(
        policy,
        prompt_ids,
        responses,
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
    )
    rewards = None
    if reward_model is not None:
        rows = list(users) if users is not None else [""] * len(prompts)
        rewards = reward_sums(
            reward_model,
            prompts,
            responses,
            rows,
            batch_size=batch_size,
            padding_side=padding_side,
            progress=progress,
        )
    return ScoreParts(logp, tokens, rewards)
