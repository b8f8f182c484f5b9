"""Turning (prompt, response) text into padded token batches, the same way everywhere.

    fmt = PromptFormatter(tokenizer, use_chat_template=True, max_prompt_tokens=512)
    ids = fmt.prompt_ids("Generate a title for ...")      # what a decoder feeds the policy
    batch = encode_pairs(fmt, prompts, responses, padding_side="left")
    batch.input_ids.shape, batch.response_mask.shape       # [B, T], [B, T]

The prompt is rendered once (chat template with the generation prompt, if the tokenizer has one
and ``use_chat_template``), then the response is tokenized on its own and appended. So the
response's token ids do not depend on the prompt, which is what lets reward-guided decoding pass
policy token ids straight to the reward model, and lets a prefix reward at response position t
mean "the first t response tokens". Over-long prompts lose tokens from the middle (the
instruction at the start and the cue at the end survive); every truncation is counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from persalign.errors import DataError

log = logging.getLogger(__name__)
KEEP_HEAD = 32  # prompt tokens kept from the start when the middle is cut


# The prompt budget of a policy and its scorers (and of ICL's context) where none is given: the
# one place this default is written.
DEFAULT_MAX_PROMPT_TOKENS = 2048


class PromptFormatter:
    """Renders and tokenizes prompts and responses, counting truncations."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        use_chat_template: bool = True,
        max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
        max_response_tokens: int = 128,
    ):
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template and bool(
            getattr(tokenizer, "chat_template", None)
        )
        self.max_prompt_tokens = max_prompt_tokens
        self.max_response_tokens = max_response_tokens
        self.truncated: Counter[str] = Counter()

    def render(self, prompt: str) -> str:
        if not self.use_chat_template:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the rendered prompt, at most ``max_prompt_tokens`` (middle cut)."""
        ids = self._tokenize(self.render(prompt), special=not self.use_chat_template)
        limit = self.max_prompt_tokens
        if len(ids) > limit:
            self.truncated["prompt"] += 1
            head = min(KEEP_HEAD, limit // 2)
            ids = ids[:head] + ids[len(ids) - (limit - head) :]
        return ids

    def render_messages(self, messages: list[dict[str, str]]) -> str:
        """A conversation (user/assistant turns, ending with a user turn) as prompt text."""
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def messages_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a rendered conversation (not truncated: callers drop turns to fit)."""
        return self._tokenize(self.render_messages(messages), special=not self.use_chat_template)

    def response_ids(self, response: str) -> list[int]:
        """Token ids of a response (no special tokens), at most ``max_response_tokens``."""
        ids = self._tokenize(response, special=False)
        if len(ids) > self.max_response_tokens:
            self.truncated["response"] += 1
            ids = ids[: self.max_response_tokens]
        return ids

    def _tokenize(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def report(self) -> dict[str, int]:
        """How many prompts and responses were truncated so far."""
        return dict(self.truncated)


@dataclass
class EncodedBatch:
    """A padded batch of prompt+response sequences."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 1 on real tokens
    position_ids: torch.Tensor  # [B, T] long, 0 at each row's first real token
    response_mask: torch.Tensor  # [B, T] bool, True on response tokens
    response_lengths: torch.Tensor  # [B] long

    def to(self, device: torch.device) -> EncodedBatch:
        return EncodedBatch(*(t.to(device) for t in vars(self).values()))

    @property
    def last_index(self) -> torch.Tensor:
        """[B] index of each row's last real token (the last response token)."""
        positions = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        return (self.attention_mask.bool() * positions).amax(dim=1)


def pad_sequences(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int, padding_side: str
) -> EncodedBatch:
    """Concatenate each prompt and response and pad the batch on ``padding_side``."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    rows, masks, resp = [], [], []
    for p, r in zip(prompts, responses, strict=True):
        pad = width - len(p) - len(r)
        seq, real, is_resp = p + r, [1] * (len(p) + len(r)), [0] * len(p) + [1] * len(r)
        if padding_side == "left":
            rows.append([pad_id] * pad + seq)
            masks.append([0] * pad + real)
            resp.append([0] * pad + is_resp)
        else:
            rows.append(seq + [pad_id] * pad)
            masks.append(real + [0] * pad)
            resp.append(is_resp + [0] * pad)
    attention = torch.tensor(masks, dtype=torch.long)
    return EncodedBatch(
        input_ids=torch.tensor(rows, dtype=torch.long),
        attention_mask=attention,
        position_ids=(attention.cumsum(dim=1) - 1).clamp(min=0),
        response_mask=torch.tensor(resp, dtype=torch.bool),
        response_lengths=torch.tensor([len(r) for r in responses], dtype=torch.long),
    )


def encode_pairs(
    formatter: PromptFormatter,
    prompts: list[str],
    responses: list[str],
    *,
    padding_side: str = "right",
) -> EncodedBatch:
    """Tokenize and pad (prompt, response) pairs; an empty response is an error."""
    prompt_ids = [formatter.prompt_ids(p) for p in prompts]
    response_ids = [formatter.response_ids(r) for r in responses]
    for i, ids in enumerate(response_ids):
        if not ids:
            raise DataError(
                f"response {i} of the batch is empty (nothing to score): {prompts[i][:60]!r}"
            )
    pad_id = formatter.tokenizer.pad_token_id
    return pad_sequences(prompt_ids, response_ids, pad_id, padding_side)
