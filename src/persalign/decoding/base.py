"""One decoding loop, many decoders: how the next token is chosen is the only difference.

    decoder = DECODERS.get("args")(policy, reward_model=rm, settings=ArgsSettings(lam=1.0))
    outputs = decoder.generate(requests)          # list[Generation], in request order

A decoder turns :class:`GenerationRequest` s (user, prompt id, prompt) into :class:`Generation`
s. They share :func:`decode`: left-padded prompts encoded once, one cached policy step per new
token, rows that finish (end of sequence, a stop string, ``max_new_tokens``) leave the batch so
they stop costing work. What differs is a :class:`TokenChooser`: the policy alone (greedy or
sampling) or reward-guided (ARGS).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field

from persalign.decoding.policy import Policy, PolicyState
from persalign.registry import Registry

log = logging.getLogger(__name__)
DECODERS: Registry[type] = Registry("decoder", packages=("persalign.decoding",))


class DecodeSettings(BaseModel):
    """How long to generate, when to stop, greedy or sampling. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(64, ge=1, description="Hard cap on generated tokens.")
    stop: tuple[str, ...] = Field((), description="Stop strings (e.g. a newline for titles).")
    mode: str = Field("greedy", pattern="^(greedy|sample)$", description="greedy or sample.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    seed: int = Field(0, description="Seed of the sampling generator.")
    batch_size: int = Field(8, ge=1, description="Rows decoded together.")
    ignore_eos: bool = Field(False, description="Never end at eos (forced-length benchmarks).")


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to answer for one user."""

    id: str
    user: str
    prompt: str
    prompt_ids: tuple[int, ...] | None = None  # pre-tokenized policy prompt (ICL builds these)


@dataclass
class Generation:
    """What a decoder wrote for one request."""

    id: str
    user: str
    text: str
    tokens: list[int]
    finish_reason: str  # "eos" | "stop" | "length"
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "text": self.text,
            "tokens": self.tokens,
            "finish_reason": self.finish_reason,
            "seconds": round(self.seconds, 4),
            "meta": self.meta,
        }


class TokenChooser(Protocol):
    """Picks the next token of every live row from the policy's logits [B, V]."""

    def start(self, requests: Sequence[GenerationRequest]) -> None: ...

    def choose(self, logits: torch.Tensor) -> torch.Tensor: ...

    def select(self, rows: torch.Tensor) -> None: ...


class PolicyChooser:
    """The policy alone: argmax, or a sample from softmax(logits / temperature)."""

    def __init__(self, settings: DecodeSettings):
        self.settings = settings
        self.generator = torch.Generator().manual_seed(settings.seed)

    def start(self, requests: Sequence[GenerationRequest]) -> None:
        pass

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        if self.settings.mode == "greedy":
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / self.settings.temperature, dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=self.generator)[:, 0].to(logits.device)

    def select(self, rows: torch.Tensor) -> None:
        pass


def decode(
    policy: Policy,
    requests: Sequence[GenerationRequest],
    chooser: TokenChooser,
    settings: DecodeSettings,
) -> list[Generation]:
    """Generate for ``requests`` (one batch) with ``chooser`` picking every token."""
    started = time.perf_counter()
    prompt_ids = [
        list(r.prompt_ids) if r.prompt_ids is not None else policy.formatter.prompt_ids(r.prompt)
        for r in requests
    ]
    state: PolicyState = policy.start(prompt_ids)
    chooser.start(requests)
    eos = policy.eos_ids()
    live = list(range(len(requests)))
    tokens_out: list[list[int]] = [[] for _ in requests]
    texts = [""] * len(requests)
    finish = ["length"] * len(requests)
    for _ in range(settings.max_new_tokens):
        if settings.ignore_eos:
            state.logits[:, sorted(eos)] = float("-inf")
        chosen = chooser.choose(state.logits)  # [b]
        keep = []
        for i, row in enumerate(live):
            token = int(chosen[i])
            if token in eos:
                finish[row] = "eos"
                continue
            tokens_out[row].append(token)
            texts[row], stopped = _cut_at_stop(policy, tokens_out[row], settings.stop)
            if stopped:
                finish[row] = "stop"
            else:
                keep.append(i)
        if not keep:
            live = []
            break
        if len(keep) < len(live):
            index = torch.tensor(keep, device=state.logits.device)
            state.select(index)
            chooser.select(index)
            chosen = chosen[index]
            live = [live[i] for i in keep]
        policy.advance(state, chosen)
    seconds = (time.perf_counter() - started) / max(1, len(requests))
    return [
        Generation(r.id, r.user, texts[i].strip(), tokens_out[i], finish[i], seconds)
        for i, r in enumerate(requests)
    ]


def _cut_at_stop(policy: Policy, tokens: list[int], stops: Sequence[str]) -> tuple[str, bool]:
    text = policy.tokenizer.decode(tokens, skip_special_tokens=True)
    for stop in stops:
        at = text.find(stop)
        if at != -1 and text[:at].strip():  # a leading stop string does not end a response
            return text[:at], True
    return text, False
