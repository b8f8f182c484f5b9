"""ARGS: reward-guided decoding with a (personalized) reward model (paper Eq. 1).

    decoder = ArgsDecoder(policy, rm, ArgsSettings(lam=1.0, k=10))
    decoder.generate([GenerationRequest("q1", "user-7", "Generate a title for ...")])

At every step: score(v) = log pi(v | x, y_<t) + lambda * r(x, y_<t, v) over the policy's top-k
tokens v; greedy takes the argmax, sampling draws from softmax(score / temperature). The cost
per token is one cached policy step plus k reward-model tokens against the reward model's cached
prefix (``RewardModel.step_rewards`` / ``commit``). Rows carry their own user, so one batch mixes
prompts and users.

When the reward model's backbone is frozen, is the policy and encodes prompts as the policy does
(``fused_args.fused_reason`` is None), one forward of the policy per step does both jobs
(``fused: auto``, the default; ``on`` makes it an error when impossible, ``off`` never fuses);
otherwise one INFO line says why the two-model path runs.

When the policy and the reward model do not share a vocabulary, token ids cannot pass through:
``allow_retokenize=True`` re-encodes every candidate continuation as text and scores it from
scratch (slow, quadratic in length); without it the mismatch is an error, never silent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import torch
from pydantic import Field, ValidationInfo, field_validator

from persalign.decoding.base import (
    Decoder,
    DecodeSettings,
    GenerationRequest,
    Stepper,
    TokenChooser,
    pick,
    register_decoder,
)
from persalign.decoding.fused_args import FusedArgs, FusedState, cut_differently, fused_reason
from persalign.decoding.policy import Policy
from persalign.errors import ConfigError

log = logging.getLogger(__name__)


class ArgsSettings(DecodeSettings):
    """ARGS options (paper: k = 10; lambda chosen per model by ``select-lambda``)."""

    allow_negative_lam: bool = Field(
        False,
        description="Accept lambda < 0, which steers decoding AWAY from what the reward model "
        "prefers (an ablation, never a default).",
    )
    lam: float = Field(1.0, description="lambda: the weight of the reward in the score.")
    k: int = Field(10, ge=1, description="Candidates per step: the policy's top-k tokens.")
    allow_retokenize: bool = Field(
        False, description="Score by re-encoding text when the vocabularies differ (slow)."
    )
    fused: str = Field(
        "auto",
        pattern="^(auto|on|off)$",
        description="One policy forward per step for both models when the reward model's "
        "frozen backbone is the policy (auto: when possible; on: an error when not; off: never).",
    )

    @field_validator("lam")
    @classmethod
    def _non_negative(cls, value: float, info: ValidationInfo) -> float:
        if value < 0 and not info.data.get("allow_negative_lam", False):
            raise ValueError(
                "must be >= 0 (a negative lambda steers away from the reward; set "
                "allow_negative_lam, --allow-negative-lam, to mean that)"
            )
        return value


def same_vocabulary(a, b) -> bool:
    return a is b or a.get_vocab() == b.get_vocab()


class ArgsChooser:
    """Top-k of the policy, rescored with lambda * reward, for every live row."""

    def __init__(self, rm, settings: ArgsSettings, policy: Policy):
        self.rm = rm
        self.settings = settings
        self.policy = policy
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.state = None

    def start(self, requests: Sequence[GenerationRequest]) -> None:
        prompt_ids = [self.rm.formatter.prompt_ids(r.prompt) for r in requests]
        self.state = self.rm.start(prompt_ids, [r.user for r in requests])

    def candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's top-k: log-probs and token ids, both [B, k]."""
        logp = torch.log_softmax(logits, dim=-1)  # [B, V]
        return logp.topk(self.settings.k, dim=-1)

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        top_logp, top_ids = self.candidates(logits)  # [B, k]
        rewards = self.rm.step_rewards(self.state, top_ids.to(self.rm.backbone.device))  # [B, k]
        scores = top_logp + self.settings.lam * rewards.to(top_logp.device)  # [B, k]
        choice = pick(scores, self.settings, self.generator)  # [B]
        self.rm.commit(self.state, choice.to(self.rm.backbone.device))
        return top_ids.gather(1, choice[:, None])[:, 0]

    def select(self, rows: torch.Tensor) -> None:
        self.state.select(rows.to(self.rm.backbone.device))


class RetokenizingChooser(ArgsChooser):
    """The slow path for different vocabularies: candidates are scored as text, from scratch."""

    def start(self, requests: Sequence[GenerationRequest]) -> None:
        self.requests = list(requests)
        self.tokens: list[list[int]] = [[] for _ in requests]

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        top_logp, top_ids = self.candidates(logits)  # [B, k]
        decode = self.policy.tokenizer.decode
        prompts, texts, users = [], [], []
        for row, request in enumerate(self.requests):
            for token in top_ids[row].tolist():
                prompts.append(request.prompt)
                texts.append(decode(self.tokens[row] + [token], skip_special_tokens=True) or " ")
                users.append(request.user)
        rewards = self.rm.sequence_rewards(prompts, texts, users).reshape(top_ids.shape)
        scores = top_logp + self.settings.lam * rewards.to(top_logp.device)  # [B, k]
        choice = pick(scores, self.settings, self.generator)  # [B]
        chosen = top_ids.gather(1, choice[:, None])[:, 0]  # [B]
        for row, token in enumerate(chosen.tolist()):
            self.tokens[row].append(token)
        return chosen

    def select(self, rows: torch.Tensor) -> None:
        keep = rows.tolist()
        self.requests = [self.requests[i] for i in keep]
        self.tokens = [self.tokens[i] for i in keep]


class FusedStepper:
    """The policy as fused ARGS's stepper: ``start`` prefills the one cache; ``advance`` has
    nothing to run, as the chosen candidate's forward already gave the next logits."""

    def __init__(self, fused: FusedArgs):
        self.fused = fused
        self.formatter = fused.policy.formatter
        self.state: FusedState | None = None

    @property
    def tokenizer(self):
        return self.formatter.tokenizer

    def eos_ids(self) -> set[int]:
        return self.fused.policy.eos_ids()

    def start(self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str]) -> FusedState:
        self.state = self.fused.start(prompt_ids, users)
        return self.state

    def advance(self, state: FusedState, tokens: torch.Tensor) -> None:
        pass


class FusedChooser(ArgsChooser):
    """ARGS's choice on the stepper's shared state: one forward scores and advances."""

    def __init__(self, stepper: FusedStepper, settings: ArgsSettings):
        super().__init__(stepper.fused.rm, settings, stepper.fused.policy)
        self.stepper = stepper

    def start(self, requests: Sequence[GenerationRequest]) -> None:
        pass

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        def choose(scores: torch.Tensor) -> torch.Tensor:
            return pick(scores, self.settings, self.generator)

        settings = self.settings
        return self.stepper.fused.step(self.stepper.state, settings.lam, settings.k, choose, logits)

    def select(self, rows: torch.Tensor) -> None:
        pass  # the state is the stepper's: ``decode`` selects it once


@register_decoder("args", summary="Reward-guided decoding (ARGS, Eq. 1): top-k + lambda * r")
class ArgsDecoder(Decoder):
    """ARGS with any reward model of persalign.rewards (personalized per row)."""

    settings_class = ArgsSettings
    needs_reward_model = True
    servable = True
    settings: ArgsSettings

    def __init__(
        self,
        policy: Policy,
        reward_model=None,
        settings: ArgsSettings | None = None,
        support=None,
    ):
        super().__init__(policy, reward_model, settings, support)
        shared = same_vocabulary(policy.tokenizer, reward_model.formatter.tokenizer)
        if not shared and not self.settings.allow_retokenize:
            raise ConfigError(
                "the policy and the reward model have different vocabularies; pass "
                "allow_retokenize=True to score re-encoded text (slow)"
            )
        if not shared:
            log.warning("policy and reward model vocabularies differ: re-encoding candidates")
        self.chooser_class = ArgsChooser if shared else RetokenizingChooser
        self.fused_reason = "fused: off" if self.settings.fused == "off" else None
        if shared and self.fused_reason is None:
            self.fused_reason = fused_reason(policy, reward_model)
        if not shared:
            self.fused_reason = "the vocabularies differ"
        if self.fused_reason and self.settings.fused == "on":
            raise ConfigError(f"fused: on, but {self.fused_reason}")
        if self.fused_reason:
            log.info("ARGS runs the policy and the reward model apart: %s", self.fused_reason)
        else:
            log.info("ARGS fused: one policy forward per step also gives the rewards")
        self.fused_now = self.fused_reason is None

    def prepare(self, requests: list[GenerationRequest]) -> list[GenerationRequest]:
        """Encode the policy prompts once; fuse this call unless one of them may reach the
        reward model otherwise (cut at another budget, or ids of its own)."""
        if self.fused_reason is not None:
            return requests
        rm, out, odd = self.reward_model, [], None
        for r in requests:
            ids = self.policy.formatter.prompt_ids(r.prompt) if r.prompt_ids is None else None
            if ids is not None and cut_differently(self.policy, rm, ids):
                odd = odd or f"request {r.id}'s prompt is cut at another token budget"
            elif ids is None and list(r.prompt_ids) != rm.formatter.prompt_ids(r.prompt):
                odd = odd or f"request {r.id} brings prompt ids the reward model does not use"
            out.append(r if ids is None else replace(r, prompt_ids=tuple(ids)))
        self.fused_now = odd is None
        if odd and self.settings.fused == "on":
            raise ConfigError(f"fused: on, but {odd}")
        if odd:
            log.info("ARGS runs the policy and the reward model apart for this call: %s", odd)
        return out

    def parts(self) -> tuple[Stepper, TokenChooser]:
        if not self.fused_now:
            return super().parts()
        stepper = FusedStepper(FusedArgs(self.policy, self.reward_model))
        return stepper, FusedChooser(stepper, self.settings)

    def chooser(self) -> TokenChooser:
        return self.chooser_class(self.reward_model, self.settings, self.policy)
