"""The LM-likelihood reward family (GenARM, P-DPO): rewards built from token log-probabilities.

    class MyRM(LikelihoodRM):                  # reward = beta * log p(y_t | x, y_<t), summed
        def reward_scale(self): return 0.05
    lp = response_logprobs(rm.backbone, batch)          # [B, R] log p of every response token
    with adapters_disabled(rm.backbone): ...            # the backbone without its LoRA weights

Here there is no head on hidden states: the value of response token y_t is a (scaled) log-prob,
optionally minus a reference model's (the LoRA adapters switched off), and a prefix reward is
the running sum (``aggregation = "sum"``). All prefix rewards come from one forward pass: the
log-softmax of the logits at position p - 1, read at token p. Optional soft tokens [B, n, H]
(P-DPO's user model) go in front of each sequence as input embeddings, positions 0..n-1, and
shift every real token's position by n.

Decoding (ARGS) never re-encodes a prefix and never copies a cache: ``start`` runs the prompts
once and keeps each model's next-token log-probs; ``step_rewards`` reads the k candidates'
values from them (no forward at all); ``commit`` feeds the chosen token, one token per model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers.cache_utils import Cache

from persalign.models.encoding import EncodedBatch, pad_sequences
from persalign.rewards.base import RewardModel, response_index
from persalign.rewards.engine.backbone import Backbone
from persalign.rewards.engine.stepping import StepState


@contextmanager
def adapters_disabled(backbone: Backbone) -> Iterator[None]:
    """Run ``backbone`` without its LoRA adapters (peft ``disable_adapter``), flags untouched.

    peft re-enables adapters by marking them trainable; the ``requires_grad`` flags are restored
    so that a frozen model stays frozen.
    """
    flags = [(p, p.requires_grad) for p in backbone.parameters()]
    model = backbone.model
    context = model.disable_adapter() if isinstance(model, PeftModel) else nullcontext()
    try:
        with context:
            yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def with_soft_tokens(
    backbone: Backbone,
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T]
    position_ids: torch.Tensor,  # [B, T]
    soft: torch.Tensor,  # [B, n, H]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input embeddings [B, n + T, H], mask and positions with ``soft`` in front of every row."""
    batch, n = soft.shape[:2]
    embeds = torch.cat([soft.to(backbone.dtype), backbone.embed(input_ids)], dim=1)
    mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)
    first = torch.arange(n, device=position_ids.device).expand(batch, n)
    positions = torch.cat([first, position_ids + n], dim=1)
    return embeds, mask, positions


def response_logprobs(
    backbone: Backbone, batch: EncodedBatch, soft: torch.Tensor | None = None
) -> torch.Tensor:
    """log p(y_t | soft, x, y_<t) of every response token, [B, R] (0 beyond each response)."""
    index, valid = response_index(batch)  # [B, R]
    if soft is None:
        prompt_lengths = batch.attention_mask.sum(dim=1) - batch.response_lengths
        if bool((prompt_lengths < 1).any()):
            raise ValueError("a likelihood reward needs a non-empty prompt before the response")
        hidden, _ = backbone.hidden(batch.input_ids, batch.attention_mask, batch.position_ids)
        offset = 0
    else:
        embeds, mask, positions = with_soft_tokens(
            backbone, batch.input_ids, batch.attention_mask, batch.position_ids, soft
        )
        hidden, _ = backbone.hidden(None, mask, positions, inputs_embeds=embeds)
        offset = soft.shape[1]
    previous = (index - 1 + offset).clamp(min=0)  # [B, R] the position that predicts y_t
    states = hidden.gather(1, previous[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, R, H]
    logits = backbone.lm_head(states).float()  # [B, R, V]
    targets = batch.input_ids.gather(1, index)  # [B, R]
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)  # [B, R]
    return (picked - logits.logsumexp(dim=-1)) * valid


def spread(values: torch.Tensor, batch: EncodedBatch) -> torch.Tensor:
    """Per-response-token values [B, R] -> per-position values [B, T] (0 off the response)."""
    index, valid = response_index(batch)
    out = values.new_zeros(batch.input_ids.shape)
    # scatter_add: padded steps point at a clamped index and add exactly 0 there.
    return out.scatter_add(1, index, values * valid)


@dataclass
class TokenStream:
    """One model's cached prefixes: cache, mask, next position, next-token log-probs [B, V]."""

    cache: Cache
    attention: torch.Tensor  # [B, L]
    next_position: torch.Tensor  # [B]
    logp: torch.Tensor  # [B, V] float32

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.attention = self.attention[rows]
        self.next_position = self.next_position[rows]
        self.logp = self.logp[rows]


@torch.no_grad()
def open_stream(
    backbone: Backbone,
    prompt_ids: Sequence[Sequence[int]],
    pad_id: int,
    soft: torch.Tensor | None = None,
) -> TokenStream:
    """Run the (left-padded) prompts once, soft tokens in front; keep the cache."""
    batch = pad_sequences([list(p) for p in prompt_ids], [[] for _ in prompt_ids], pad_id, "left")
    batch = batch.to(backbone.device)
    if soft is None and bool((batch.attention_mask.sum(dim=1) < 1).any()):
        raise ValueError("a likelihood reward needs a non-empty prompt to score the first token")
    cache = backbone.new_cache()
    if soft is None:
        ids, embeds, mask, positions = (
            batch.input_ids,
            None,
            batch.attention_mask,
            batch.position_ids,
        )
    else:
        embeds, mask, positions = with_soft_tokens(
            backbone, batch.input_ids, batch.attention_mask, batch.position_ids, soft
        )
        ids = None
    hidden, _ = backbone.hidden(ids, mask, positions, cache, inputs_embeds=embeds)
    logp = backbone.lm_head(hidden[:, -1]).float().log_softmax(dim=-1)  # [B, V]
    return TokenStream(cache, mask, positions[:, -1] + 1, logp)


@torch.no_grad()
def feed(backbone: Backbone, stream: TokenStream, tokens: torch.Tensor) -> None:
    """Append one token per row, ``tokens`` [B], to ``stream`` (one cached forward)."""
    attention = torch.cat([stream.attention, stream.attention.new_ones(len(tokens), 1)], dim=1)
    positions = stream.next_position[:, None]  # [B, 1]
    hidden, _ = backbone.hidden(tokens[:, None], attention, positions, stream.cache)  # [B, 1, H]
    stream.logp = backbone.lm_head(hidden[:, -1]).float().log_softmax(dim=-1)
    stream.attention = attention
    stream.next_position = stream.next_position + 1


@dataclass
class LikelihoodState(StepState):
    """A StepState over token streams: the scoring model's (``policy``) and maybe a reference.

    StepState's own cache, attention and next_position are those of ``policy``.
    """

    policy: TokenStream | None = None
    reference: TokenStream | None = None
    candidates: torch.Tensor | None = None  # [B, k] the last step's candidates

    def select(self, rows: torch.Tensor) -> None:
        super().select(rows)  # the policy's cache, z, totals, pending
        if self.policy is not None:
            self.policy.attention, self.policy.next_position = self.attention, self.next_position
            self.policy.logp = self.policy.logp[rows]
        if self.reference is not None:
            self.reference.select(rows)
        self.candidates = None if self.candidates is None else self.candidates[rows]


class LikelihoodRM(RewardModel):
    """Base of rewards r(x, y_<=t) = scale * sum_{s<=t} [log p(y_s|...) - log p_ref(y_s|...)]."""

    aggregation = "sum"
    cumulative = True
    uses_reference = False  # subtract the log-probs of the backbone without LoRA (P-DPO)
    reads_hidden_states = False  # a likelihood: no backbone_training="frozen"
    pair_eval_mode = "logprobs"  # a pair's log-prob sums from one shared-prompt row

    def reward_scale(self) -> float:
        """The factor beta in front of the log-probs."""
        raise NotImplementedError

    def soft_tokens(self, z: torch.Tensor | None) -> torch.Tensor | None:
        """Soft tokens [B, n, H] to put before each prompt (None: none)."""
        return None

    def sequence_logprobs(self, batch: EncodedBatch, z: torch.Tensor | None) -> torch.Tensor:
        """[B, R] scale * (log p - log p_ref) of every response token (gradients to theta, z)."""
        values = response_logprobs(self.backbone, batch, self.soft_tokens(z))
        if self.uses_reference:
            values = values - self.reference_logprobs(batch)
        return self.reward_scale() * values

    @torch.no_grad()
    def reference_logprobs(self, batch: EncodedBatch) -> torch.Tensor:
        """[B, R] log-probs of the response tokens: the backbone without LoRA or soft tokens."""
        with adapters_disabled(self.backbone):
            return response_logprobs(self.backbone, batch)

    def token_values(self, batch: EncodedBatch, z: torch.Tensor | None) -> torch.Tensor:
        return spread(self.sequence_logprobs(batch, z), batch)  # [B, T]

    # ------------------------------------------------------------------ decoding hooks
    def start(self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str]) -> LikelihoodState:
        z = self.user_vectors(users)
        pad_id = self.formatter.tokenizer.pad_token_id
        policy = open_stream(self.backbone, prompt_ids, pad_id, self.soft_tokens(z))
        reference = None
        if self.uses_reference:
            with adapters_disabled(self.backbone):
                reference = open_stream(self.backbone, prompt_ids, pad_id)
        rows = len(prompt_ids)
        zeros = torch.zeros(rows, device=self.backbone.device)
        return LikelihoodState(
            cache=policy.cache,
            attention=policy.attention,
            next_position=policy.next_position,
            z=z,
            total=zeros,
            count=zeros.clone(),
            policy=policy,
            reference=reference,
        )

    @torch.no_grad()
    def step_rewards(self, state: LikelihoodState, candidates: torch.Tensor) -> torch.Tensor:
        """[B, k] prefix rewards of the k extensions, read from the cached log-probs."""
        if state.pending is not None:
            raise RuntimeError("step_rewards called twice without commit")
        candidates = candidates.to(state.policy.logp.device)
        values = state.policy.logp.gather(1, candidates)  # [B, k]
        if state.reference is not None:
            values = values - state.reference.logp.gather(1, candidates)
        state.pending = self.reward_scale() * values
        state.candidates = candidates
        return state.total[:, None] + state.pending

    @torch.no_grad()
    def commit(self, state: LikelihoodState, choice: torch.Tensor) -> None:
        """Append candidate ``choice`` [B]: one cached forward of that token per model."""
        if state.pending is None or state.candidates is None:
            raise RuntimeError("commit called before step_rewards")
        choice = choice.to(state.candidates.device)
        rows = torch.arange(len(choice), device=choice.device)
        tokens = state.candidates[rows, choice]  # [B]
        state.total = state.total + state.pending[rows, choice]
        state.count = state.count + 1
        state.pending, state.candidates = None, None
        feed(self.backbone, state.policy, tokens)
        state.attention, state.next_position = state.policy.attention, state.policy.next_position
        if state.reference is not None:
            with adapters_disabled(self.backbone):
                feed(self.backbone, state.reference, tokens)
