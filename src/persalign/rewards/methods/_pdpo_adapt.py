"""P-DPO's few-shot adaptation, fast: each support pair's prompt encoded once, few backbone passes.

    shared = collate_shared(tokenize_pairs(rm.formatter, pairs), pad_id)   # pair_batching
    chosen, rejected = pair_logprob_sums(rm.backbone, shared, soft)   # [B] each, with gradients
    losses, passes = train_user_tokens(rm, pairs, z)          # Adam on z; support losses, passes

A support pair's chosen and rejected responses share its prompt, and in P-DPO both sit after the
same soft tokens, so one row holds [soft | prompt | chosen | rejected] (``pair_batching``'s
shared-prompt row with the soft tokens put in front) with a 4D mask: the chosen
tokens see the soft tokens, the prompt and the earlier chosen tokens; the rejected tokens see the
soft tokens, the prompt and the earlier rejected tokens (never the chosen ones), and both
continue the positions from the prompt. Every log-prob equals the two-sequence path's (the
``adapt_shared_prompt=False`` path) up to float rounding, and the prompt, usually the longest
part (TL;DR posts), is run once instead of twice, forward and backward, at every pass.

Few backbone passes (``adapt_steps_per_pass``): the DPO loss of a support pair depends on z only
through its policy margin m_i(z) = log pi_theta(y_w | e_0 + z, x) - log pi_theta(y_l | e_0 + z, x).
One forward and one backward through the backbone give every m_i at the current z and, because
row i of a batch reads only its own copy of the soft tokens, every pair's gradient g_i = dm_i/dz
([P, D], ``margin_jacobian``). The next ``adapt_steps_per_pass`` Adam steps use the first-order
model m_i(z_a) + g_i . (z - z_a) around that anchor z_a, which costs nothing next to a backbone
pass; then a new pass re-anchors. At each anchor the loss and its gradient are the exact ones,
so ``adapt_steps_per_pass=1`` is plain Adam on the true loss (checked against a naive autograd
loop), and Adam's steps of about lr per coordinate keep z within steps_per_pass * lr of the
anchor, where the first-order model is accurate (the support loss falls linearly over the
paper's 100 steps at 5e-5). 100 steps at 10 per pass are 10 backbone passes instead of 100.

Validated range (docs/fidelity.md row 10): the first-order path was compared with the exact one
(``adapt_steps_per_pass=1``) at lr 5e-5 x 10 steps per pass only, i.e. z moving at most about
VALIDATED_LR_X_STEPS = 5e-4 per coordinate between anchors. Outside that (a larger adaptation
learning rate or more steps per pass) adaptation logs a warning once per (lr, steps per pass);
the paper's configs pin the exact path (``adapt_steps_per_pass: 1``).

Early stopping (``adapt_patience``): the support loss is computed at every step anyway (exact at
an anchor, first-order between); when it has not dropped by more than ``adapt_min_delta`` below
its best for ``adapt_patience`` steps in a row, adaptation stops there (z keeps the last update).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from persalign.rewards.engine.pair_batching import (
    SharedBatch,
    collate_shared,
    length_buckets,
    shared_cost,
    tokenize_pairs,
)
from persalign.rewards.methods._likelihood import adapters_disabled
from persalign.types import Preference


def with_soft_prefix(shared: SharedBatch, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask [B, 1, n + T, n + T] and positions [B, n + T] of ``shared`` with n soft tokens
    in front: they see each other causally, and every token sees all of them."""
    batch, _, length, _ = shared.attention_mask.shape
    mask = shared.attention_mask.new_zeros(batch, 1, n + length, n + length)
    blocked = torch.finfo(mask.dtype).min
    mask[:, :, :n, n:] = blocked  # soft tokens come first: they see no later token
    mask[:, :, :n, :n] = torch.full((n, n), blocked, device=mask.device).triu(1).to(mask.dtype)
    mask[:, :, n:, n:] = shared.attention_mask
    first = torch.arange(n, device=shared.position_ids.device).expand(batch, n)
    return mask, torch.cat([first, shared.position_ids + n], dim=1)


def pair_logprob_sums(
    backbone, shared: SharedBatch, soft: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_t log p(y_t | soft, x, y_<t) of the chosen and the rejected responses, [B] each."""
    if bool((shared.prompt_lengths < 1).any()):
        raise ValueError("a likelihood reward needs a non-empty prompt before the response")
    ids = shared.input_ids
    if soft is None:
        n = 0
        hidden, _ = backbone.hidden(ids, shared.attention_mask, shared.position_ids)
    else:
        n = soft.shape[1]
        mask, positions = with_soft_prefix(shared, n)
        embeds = torch.cat([soft.to(backbone.dtype), backbone.embed(ids)], dim=1)  # [B, n+T, H]
        hidden, _ = backbone.hidden(None, mask, positions, inputs_embeds=embeds)
    sums = []
    for side in ("chosen", "rejected"):
        index, valid = shared.response_index(side)  # [B, R]
        source = (shared.predictor_index(side) + n)[..., None].expand(-1, -1, hidden.shape[-1])
        logits = backbone.lm_head(hidden.gather(1, source)).float()  # [B, R, V]
        picked = logits.gather(-1, ids.gather(1, index)[..., None]).squeeze(-1)  # [B, R]
        sums.append(((picked - logits.logsumexp(dim=-1)) * valid).sum(dim=1))  # [B]
    return sums[0], sums[1]


def should_stop(losses: Sequence[float], patience: int | None, min_delta: float) -> bool:
    """Whether the last ``patience`` losses all failed to beat the best before them by more
    than ``min_delta`` (None: never stop early)."""
    if patience is None or len(losses) <= patience:
        return False
    best = min(losses[:-patience])
    return all(loss >= best - min_delta for loss in losses[-patience:])


@torch.no_grad()
def shared_prompt_chunks(rm, pairs: Sequence[Preference]) -> list[tuple]:
    """(pairs, SharedBatch, pi_ref's ([b], [b]) log-prob sums) per chunk of similar lengths."""
    size = max(1, rm.config.eval_batch_size // 2)  # a row holds a pair: <= the old path's tokens
    items = tokenize_pairs(rm.formatter, pairs)
    (order,) = length_buckets([shared_cost(item) for item in items], None)
    pad_id, dtype = rm.formatter.tokenizer.pad_token_id, rm.backbone.dtype
    chunks = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        shared = collate_shared([items[i] for i in rows], pad_id, dtype).to(rm.backbone.device)
        with adapters_disabled(rm.backbone):
            reference = pair_logprob_sums(rm.backbone, shared)
        chunks.append(([pairs[i] for i in rows], shared, reference))
    return chunks


@torch.no_grad()
def two_sequence_chunks(rm, pairs: Sequence[Preference]) -> list[tuple]:
    """The old layout: (pairs, EncodedBatch of chosen rows then rejected rows, pi_ref's sums)."""
    size = max(1, rm.config.eval_batch_size // 2)
    chunks = []
    for start in range(0, len(pairs), size):
        part = pairs[start : start + size]
        responses = [p.chosen for p in part] + [p.rejected for p in part]
        batch = rm.encode([p.prompt for p in part] * 2, responses)
        reference = rm.reference_logprobs(batch).sum(dim=1)  # [2b]
        chunks.append((part, batch, (reference[: len(part)], reference[len(part) :])))
    return chunks


def margin_jacobian(
    rm, chunks: Sequence[tuple], z: torch.Tensor, shared: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """At ``z``: each support pair's chosen and rejected log-ratio sums (policy minus pi_ref),
    [P] each, and the gradient of the policy margin chosen - rejected with respect to z, [P, D];
    pairs in chunk order. One forward and one backward through the backbone per chunk."""
    chosen_all, rejected_all, grads = [], [], []
    for part, batch, (ref_c, ref_r) in chunks:
        size = len(part)
        copies = size if shared else 2 * size  # row i reads only its own copy of z
        rows = z.detach()[None].expand(copies, -1).clone().requires_grad_(True)  # [copies, D]
        if shared:
            chosen, rejected = pair_logprob_sums(rm.backbone, batch, rm.soft_tokens(rows))
        else:
            policy = rm.policy_logprobs(batch, rows).sum(dim=1)  # [2b]: chosen rows, rejected
            chosen, rejected = policy[:size], policy[size:]
        (chosen - rejected).sum().backward()
        grad = rows.grad if shared else rows.grad[:size] + rows.grad[size:]  # [b, D]
        chosen_all.append(chosen.detach() - ref_c)
        rejected_all.append(rejected.detach() - ref_r)
        grads.append(grad)
    return torch.cat(chosen_all), torch.cat(rejected_all), torch.cat(grads)


log = logging.getLogger(__name__)
VALIDATED_LR_X_STEPS = 5e-4  # lr 5e-5 x 10 steps per pass: the validated first-order range
_warned: set[tuple[float, int]] = set()


def check_first_order_range(lr: float, steps_per_pass: int) -> bool:
    """Whether (lr, steps_per_pass) is within the validated first-order range; logs a warning
    (once per pair of values) when it is not. The exact path (1 step per pass) always is."""
    if steps_per_pass <= 1 or lr * steps_per_pass <= VALIDATED_LR_X_STEPS * (1 + 1e-9):
        return True
    if (lr, steps_per_pass) not in _warned:
        _warned.add((lr, steps_per_pass))
        log.warning(
            "P-DPO adaptation: adapt lr %g x adapt_steps_per_pass %d = %g is outside the "
            "validated first-order range (lr x steps per pass <= %g, docs/fidelity.md row 10); "
            "set adapt_steps_per_pass: 1 for the exact path",
            lr, steps_per_pass, lr * steps_per_pass, VALIDATED_LR_X_STEPS,
        )  # fmt: skip
    return False


def train_user_tokens(
    rm, pairs: Sequence[Preference], z: torch.nn.Parameter
) -> tuple[list[float], int]:
    """Adam on ``z`` by DPO on ``pairs`` (theta frozen by the caller): the support loss before
    each update and the number of backbone passes. One row per pair unless
    ``adapt_shared_prompt`` is off; a backbone pass every ``adapt_steps_per_pass`` steps, the
    first-order margins between; stops early as ``should_stop`` says."""
    cfg = rm.config
    shared = cfg.adapt_shared_prompt
    chunks = shared_prompt_chunks(rm, pairs) if shared else two_sequence_chunks(rm, pairs)
    ordered = [pair for part, _, _ in chunks for pair in part]
    lr = cfg.adapt_lr or cfg.user_lr
    check_first_order_range(lr, cfg.adapt_steps_per_pass)
    optimizer = torch.optim.Adam([z], lr=lr)
    scale = rm.reward_scale()
    losses: list[float] = []
    passes = 0
    while len(losses) < cfg.adapt_steps:
        chosen_at, rejected, jacobian = margin_jacobian(rm, chunks, z, shared)  # exact at z
        passes += 1
        anchor = z.detach().clone()  # [D]
        for _ in range(min(cfg.adapt_steps_per_pass, cfg.adapt_steps - len(losses))):
            optimizer.zero_grad(set_to_none=True)
            chosen = chosen_at + jacobian @ (z - anchor)  # [P]: first order, exact at anchor
            loss = rm.pair_loss(scale * chosen, scale * rejected, ordered)
            loss.backward()
            losses.append(float(loss.detach()))
            if should_stop(losses, cfg.adapt_patience, cfg.adapt_min_delta):
                return losses, passes
            optimizer.step()
    return losses, passes
