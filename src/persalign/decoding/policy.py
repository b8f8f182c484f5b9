"""Incremental decoding of a causal LM over a batch of rows, with one KV cache.

    policy = Policy.load("bundled:smollm2-135m-instruct")
    state = policy.start([policy.formatter.prompt_ids(p) for p in prompts], users)  # [B, V]
    state.logits.shape
    policy.advance(state, next_tokens)          # one cached forward of one token per row
    state.select(keep)                          # finished rows stop costing work

Prompts are left-padded once; every later step feeds one token per row against the cache, with
the 2D padding mask grown by one column, so no prefix is ever encoded twice.

Fused ARGS (``decoding.fused_args``) runs the decoder stack alone (``decode_hidden``: hidden
states [B, T, H], any 2D or 4D mask) and the output layer on the rows it keeps (``head_logits``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache

from persalign.models import load_causal_lm, load_tokenizer
from persalign.models.encoding import DEFAULT_MAX_PROMPT_TOKENS, PromptFormatter, pad_sequences
from persalign.rewards.engine.inference import MergedCache, use_onednn


@dataclass
class PolicyState:
    """The cache, padding mask, next positions and last logits of every live row."""

    cache: Cache
    attention: torch.Tensor  # [B, L] 1 on real tokens
    next_position: torch.Tensor  # [B]
    logits: torch.Tensor  # [B, V] next-token logits (float32)

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.attention = self.attention[rows]
        self.next_position = self.next_position[rows]
        self.logits = self.logits[rows]


class Policy:
    """A causal LM and its prompt formatter, decoded incrementally."""

    def __init__(self, model: PreTrainedModel, formatter: PromptFormatter, spec: str = ""):
        self.model = model.eval()
        self.formatter = formatter
        self.spec = spec
        self._merged = MergedCache()  # the oneDNN view of the decoder, built on first use

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        use_chat_template: bool = True,
        max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
        trust_remote_code: bool = False,
    ) -> Policy:
        model = load_causal_lm(
            spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
        tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
        formatter = PromptFormatter(
            tokenizer, use_chat_template=use_chat_template, max_prompt_tokens=max_prompt_tokens
        )
        return cls(model, formatter, spec)

    @property
    def tokenizer(self):
        return self.formatter.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def eos_ids(self) -> set[int]:
        """Token ids that end a response (the tokenizer's and the generation config's eos)."""
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list):
                ids.update(source)
        return ids

    @torch.no_grad()
    def start(
        self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str] | None = None
    ) -> PolicyState:
        """Encode the left-padded prompts once; returns the state with next-token logits.

        ``users`` is ignored: the base policy is the same for every user (a personalized
        stepper, such as P-DPO's, reads it).
        """
        pad_id = self.tokenizer.pad_token_id
        batch = pad_sequences(
            [list(p) for p in prompt_ids], [[] for _ in prompt_ids], pad_id, "left"
        )
        batch = batch.to(self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return PolicyState(
            cache=cache,
            attention=batch.attention_mask,
            next_position=batch.attention_mask.sum(dim=1),
            logits=out.logits[:, -1].float(),
        )

    @torch.no_grad()
    def advance(self, state: PolicyState, tokens: torch.Tensor) -> None:
        """Append one token per row [B] and compute the next logits."""
        state.attention = torch.cat([state.attention, state.attention.new_ones(len(tokens), 1)], 1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=state.attention,
            position_ids=state.next_position[:, None],
            cache=state.cache,
            use_cache=True,
        )
        state.next_position = state.next_position + 1
        state.logits = out.logits[:, -1].float()

    @torch.no_grad()
    def decode_hidden(
        self,
        input_ids: torch.Tensor,  # [B, T]
        attention_mask: torch.Tensor,  # [B, T] or [B, 1, T, past + T] additive
        position_ids: torch.Tensor,  # [B, T]
        cache: Cache,
    ) -> tuple[torch.Tensor, Cache]:
        """Last-layer hidden states [B, T, H] of the decoder stack (no output layer), cached.

        On a float32 CPU this runs the merged oneDNN view (``rewards.engine.inference``): it
        shares the weights and runs the few rows of a decoding step fastest.
        """
        decoder: nn.Module = self.model.get_decoder()
        if use_onednn(self.model.get_output_embeddings().weight):
            decoder = self._merged.get(decoder)
        out = decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        return out.last_hidden_state, out.cache

    @torch.no_grad()
    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [..., V] (float32) of hidden states [..., H]."""
        return self.model.get_output_embeddings()(hidden).float()
