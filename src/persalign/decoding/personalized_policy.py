"""``p-dpo`` decoding: the personalized policy of a P-DPO model writes the response itself.

    decoder = create_decoder("p-dpo", None, reward_model=pdpo_model, max_new_tokens=64)
    decoder.generate(requests)     # each row with its own user's soft tokens

P-DPO learns a policy, not only a reward: its LoRA backbone with the user's soft tokens in front
of the prompt. ``PersonalizedPolicy`` wraps it as a stepper (the interface of ``Policy`` that
the shared ``decode`` loop uses), so p-dpo decodes like every other decoder: greedy or seeded
sampling with a temperature, the shared stop-string and eos rules, finished rows leave the
batch. Greedy output is the same tokens as ``PDPO.generate_ids``. The ``policy`` argument is
unused (the base policy does not write here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from persalign.decoding.base import Decoder, register_decoder
from persalign.models.encoding import PromptFormatter
from persalign.rewards.methods._likelihood import TokenStream, feed, open_stream
from persalign.rewards.methods.p_dpo import PDPO


@dataclass
class SoftTokenState:
    """The live rows of a personalized policy: one cached token stream."""

    stream: TokenStream

    @property
    def logits(self) -> torch.Tensor:
        """[B, V] next-token log-probs (same argmax and softmax as the logits)."""
        return self.stream.logp

    def select(self, rows: torch.Tensor) -> None:
        self.stream.select(rows)


class PersonalizedPolicy:
    """A P-DPO model as a stepper: its LoRA backbone with each row's user soft tokens."""

    def __init__(self, model: PDPO):
        self.model = model

    @property
    def formatter(self) -> PromptFormatter:
        return self.model.formatter

    @property
    def tokenizer(self):
        return self.model.formatter.tokenizer

    def eos_ids(self) -> set[int]:
        return self.model.eos_ids()

    @torch.no_grad()
    def start(self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str]) -> SoftTokenState:
        """Encode e_0 + o_u, then the left-padded prompt, once per row."""
        soft = self.model.soft_tokens(self.model.user_vectors(users))  # [B, n, H]
        pad_id = self.tokenizer.pad_token_id
        return SoftTokenState(open_stream(self.model.backbone, prompt_ids, pad_id, soft))

    def advance(self, state: SoftTokenState, tokens: torch.Tensor) -> None:
        """Append one token per row, ``tokens`` [B]: one cached forward."""
        feed(self.model.backbone, state.stream, tokens.to(self.model.backbone.device))


@register_decoder("p-dpo", summary="Generate with a P-DPO model's personalized policy")
class PersonalizedPolicyDecoder(Decoder):
    """Generation from a P-DPO reward model's personalized policy (greedy by default)."""

    needs_policy = False
    needs_reward_model = True
    reward_methods = ("p-dpo",)
    reward_model_kind = "a trained p-dpo model"

    def stepper(self) -> PersonalizedPolicy:
        return PersonalizedPolicy(self.reward_model)
