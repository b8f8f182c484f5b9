"""One forward pass per model for every response: the sums each policy-accuracy scorer needs.

    parts = score_parts(policy, prompts, responses, reward_model=rm, users=users)
    parts.logp_sum, parts.tokens      # [N] sum_t log pi(y_t | x, y_<t), [N] |y| (policy tokens)
    parts.reward_sum                   # [N] sum_t r(y_t | x, y_<t) (the reward model's tokens)
    parts.scores("personal-rgd", lam=0.5)   # any lambda, no new forward pass
    parts = personalized_parts(pdpo, prompts, responses, users)   # P-DPO's own policy
    parts.scores("personalized-policy")                           # mean log-prob, as Eq. 4

The policy's log-probabilities come from ONE forward pass over each padded batch of prompt +
response (left or right padding, position ids from the mask): the logits at position p - 1 are
read at token p, and only the positions from the earliest response onwards are projected to the
vocabulary (``logits_to_keep``). The prefix rewards come from ONE reward-model pass per batch
(``RewardModel.prefix_rewards``). Log-softmax and sums run in float64. The policy renders
prompts with its own chat template (``policy.formatter``) and the reward model with its own
formatter, so with different tokenizers the two sums run over different tokens of the same text.

The token reward r(y_t | x, y_<t) of Eqs. 5/6 is the prefix reward r(x, y_<=t) that ARGS compares
at step t, except for a ``cumulative`` method (GenARM, P-DPO), whose prefix reward is already the
running sum of its token rewards: its token reward is the difference of consecutive prefix
rewards, so the reward sum is its last prefix reward (summing the prefix rewards would count
token t |y| - t + 1 times). ARGS can compare the prefix sums: at one step they differ from the
token rewards by the same constant for all k candidates of a row (``token_rewards``).

A method that writes with its own policy (P-DPO, the ``p-dpo`` decoder) is scored by that policy
(``personalized-policy``: its mean token log-likelihood with the user's soft tokens, normalised
as Eq. 4; ``personalized-policy-sum``: the plain sum); see ``method_scorer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from persalign.errors import ConfigError, DataError
from persalign.logs import track
from persalign.models.encoding import pad_sequences
from persalign.rewards.base import PrefixRewards, response_index

RGD_SCORERS = ("global-rgd", "personal-rgd")
POLICY_MODEL_SCORERS = ("personalized-policy", "personalized-policy-sum")  # the method's policy
SCORERS = ("base", *RGD_SCORERS, "icl", *POLICY_MODEL_SCORERS)
REWARD_MODEL_SCORERS = (*RGD_SCORERS, *POLICY_MODEL_SCORERS)  # need a trained reward model
CHUNK = 16  # response positions per float64 log-softmax (bounds memory with large vocabularies)


@dataclass
class ScoreParts:
    """Per-response sums every scorer is made of; computed once, combined for any lambda."""

    logp_sum: torch.Tensor  # [N] float64: sum_t log pi(y_t | x, y_<t) over the policy's tokens
    tokens: torch.Tensor  # [N] long: |y| in policy tokens
    reward_sum: torch.Tensor | None = None  # [N] float64: sum_t r(y_t | x, y_<t), RM's tokens

    def scores(self, scorer: str, lam: float = 1.0) -> torch.Tensor:
        """[N] float64 scores of ``scorer`` (Eqs. 4-7; the personalized policy's for P-DPO)."""
        check_scorer(scorer)
        if scorer in RGD_SCORERS:
            if self.reward_sum is None:
                raise ConfigError(f"the {scorer} scorer needs a reward model")
            return self.logp_sum + lam * self.reward_sum
        if scorer == "personalized-policy-sum":
            return self.logp_sum
        return self.logp_sum / self.tokens.to(torch.float64)


def check_scorer(scorer: str) -> None:
    if scorer not in SCORERS:
        raise ConfigError(f"unknown scorer {scorer!r}; choose from {', '.join(SCORERS)}")


def method_scorer(reward_class: type, decoder_class: type, score: str = "mean") -> str | None:
    """The policy-accuracy scorer of a method cell: the scoring function its decoder generates
    with (Eq. 3), or None where there is none.

    A decoder that writes with the method's own policy (``needs_policy`` False: ``p-dpo``) gives
    ``personalized-policy`` (``score="mean"``, Eq. 4's normalisation) or
    ``personalized-policy-sum`` (``"sum"``), with no lambda. A decoder that guides the base
    policy (ARGS) gives the RGD scorer, Eq. 6 for a personalized method and Eq. 5 for a global
    one, unless the method does not support RGD (``supports_rgd`` False: PAL): None.
    """
    if not getattr(decoder_class, "needs_policy", True):
        return POLICY_MODEL_SCORERS[0] if score == "mean" else POLICY_MODEL_SCORERS[1]
    if not getattr(reward_class, "supports_rgd", True):
        return None
    return "personal-rgd" if getattr(reward_class, "personalized", True) else "global-rgd"


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
        part = logits.gather(1, rel[:, cols, None].expand(-1, -1, logits.shape[-1]))
        logp[:, cols] = target_logprobs(part, targets[:, cols])
    return logp * valid, valid


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """float64 log softmax(logits)[target] over the last dim ([..., V] and [...] -> [...]).

    As accurate as a float64 log-softmax, without a float64 copy of the logits: the max is
    subtracted in float32 (exact for the terms that matter), the exponentials are summed in
    float64, and the target's logit minus the max is taken in float64.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()  # bf16/fp16: subtracting the max there would lose digits
    top = logits.max(dim=-1, keepdim=True).values  # [..., 1]
    total = (logits - top).exp_().sum(dim=-1, dtype=torch.float64)  # [...]
    picked = logits.gather(-1, targets[..., None])[..., 0].double()  # [...]
    return picked - top[..., 0].double() - total.log()


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


def token_rewards(prefix: PrefixRewards, cumulative: bool) -> torch.Tensor:
    """[N, R] float64 token rewards r(y_t | x, y_<t) of Eqs. 5/6 (0 beyond each response).

    The prefix reward r(x, y_<=t) itself, or for a ``cumulative`` method (its prefix reward is a
    running sum of token rewards) the difference of consecutive prefix rewards.
    """
    rewards = prefix.rewards.double()  # [N, R]
    if not cumulative:
        return rewards
    steps = torch.arange(rewards.shape[1])  # [R]
    valid = steps[None, :] < prefix.lengths[:, None]  # [N, R]
    previous = torch.nn.functional.pad(rewards[:, :-1], (1, 0))  # [N, R] r(x, y_<=t-1)
    return (rewards - previous) * valid


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
    """[N] float64 sum_t r(y_t | x, y_<t) over the reward model's own tokens (see
    ``token_rewards``), one pass per batch."""
    sums = torch.zeros(len(prompts), dtype=torch.float64)
    cumulative = bool(getattr(reward_model, "cumulative", False))
    starts = range(0, len(prompts), batch_size)
    for start in track(starts, "prefix rewards", show=progress):
        sl = slice(start, start + batch_size)
        prefix = reward_model.prefix_rewards(
            prompts[sl], responses[sl], users[sl], padding_side=padding_side, batch_size=batch_size
        )
        sums[sl] = token_rewards(prefix, cumulative).sum(dim=1)  # [b]
    return sums


def personalized_parts(
    model,
    prompts: Sequence[str],
    responses: Sequence[str],
    users: Sequence[str],
    *,
    batch_size: int = 8,
) -> ScoreParts:
    """ScoreParts of a method's own personalized policy (``model.personalized_logprob_sums``:
    P-DPO's LoRA backbone with each user's soft tokens), in that model's tokens."""
    if not hasattr(model, "personalized_logprob_sums"):
        name = getattr(model, "name", type(model).__name__)
        raise ConfigError(
            f"the personalized-policy scorer needs a policy model (P-DPO), not {name}"
        )
    logp, tokens = model.personalized_logprob_sums(
        list(prompts), list(responses), list(users), batch_size=batch_size
    )
    return ScoreParts(logp.double().cpu(), tokens.long().cpu())


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
    policy_sums: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ScoreParts:
    """The policy sums (and the reward sums when ``reward_model`` is given) of every response.

    ``prompt_ids`` overrides the policy's rendering of ``prompts`` (ICL prompts); the reward
    model always renders ``prompts`` with its own formatter.
    ``policy_sums``: the ([N] log-prob sums, [N] lengths) computed already, another way (policy
    accuracy's pairs: both responses on one row of their prompt); no policy pass then.
    """
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    if prompt_ids is None:
        prompt_ids = [policy.formatter.prompt_ids(p) for p in prompts]

    def row_pass() -> tuple[torch.Tensor, torch.Tensor]:
        return policy_logprob_sums(
            policy,
            prompt_ids,
            responses,
            batch_size=batch_size,
            padding_side=padding_side,
            progress=progress,
        )

    logp, tokens = policy_sums if policy_sums is not None else row_pass()
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
