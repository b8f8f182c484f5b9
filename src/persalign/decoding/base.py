"""One decoding loop, many decoders: what decodes and how the next token is chosen differ.

    @register_decoder("my-decoder", summary="The policy alone, with a twist")
    class MyDecoder(Decoder):
        settings_class = MySettings          # a DecodeSettings subclass (extra options)
        def chooser(self): return MyChooser(self.settings)

    decoder = DECODERS.get("my-decoder")(policy, settings=MySettings())
    outputs = decoder.generate(requests)          # list[Generation], in request order

A decoder turns GenerationRequests (user, prompt id, prompt) into Generations. Every decoder
shares ``Decoder.generate`` (batches, a progress bar) and ``decode``: left-padded prompts
encoded once, one cached step per new token, rows that finish (end of sequence, a stop string,
``max_new_tokens``) leave the batch so they stop costing work. What a decoder changes is:
the ``stepper`` (the model that writes: the base Policy, or P-DPO's personalized policy), the
``chooser`` (a TokenChooser: the policy's own choice, greedy or sampling, or reward-guided),
and ``prepare`` (ICL renders demonstrations into each prompt there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from persalign.decoding.policy import Policy
from persalign.errors import ConfigError
from persalign.logs import track
from persalign.models.encoding import PromptFormatter
from persalign.registry import Registry

log = logging.getLogger(__name__)
DECODERS: Registry[type[Decoder]] = Registry("decoder", packages=("persalign.decoding",))
DecoderT = TypeVar("DecoderT", bound="Decoder")


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


class DecodeState(Protocol):
    """The live rows of a stepper: next-token scores [B, V] (logits or log-probs)."""

    logits: torch.Tensor  # [B, V]

    def select(self, rows: torch.Tensor) -> None: ...


class Stepper(Protocol):
    """The model that writes, one cached token per row at a time (``Policy`` is one)."""

    formatter: PromptFormatter

    @property
    def tokenizer(self) -> Any: ...

    def eos_ids(self) -> set[int]: ...

    def start(self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str]) -> DecodeState: ...

    def advance(self, state: Any, tokens: torch.Tensor) -> None: ...


class TokenChooser(Protocol):
    """Picks the next token of every live row from the stepper's scores [B, V]."""

    def start(self, requests: Sequence[GenerationRequest]) -> None: ...

    def choose(self, logits: torch.Tensor) -> torch.Tensor: ...

    def select(self, rows: torch.Tensor) -> None: ...


def pick(scores: torch.Tensor, settings: DecodeSettings, generator: torch.Generator):
    """Index of the chosen column of every row of ``scores`` [B, C], as a [B] tensor.

    greedy: the argmax; sample: a draw from softmax(scores / temperature) with ``generator``
    (on CPU, so a seed gives the same draws on every device).
    """
    if settings.mode == "greedy":
        return scores.argmax(dim=-1)  # [B]
    probs = torch.softmax(scores / settings.temperature, dim=-1).cpu()  # [B, C]
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(scores.device)  # [B]


class PolicyChooser:
    """The stepper alone: argmax, or a sample from softmax(logits / temperature)."""

    def __init__(self, settings: DecodeSettings):
        self.settings = settings
        self.generator = torch.Generator().manual_seed(settings.seed)

    def start(self, requests: Sequence[GenerationRequest]) -> None:
        pass

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        return pick(logits, self.settings, self.generator)  # [B]

    def select(self, rows: torch.Tensor) -> None:
        pass


class Decoder:
    """Base of every decoder: checks its inputs, batches requests, runs ``decode``.

    Subclasses set the class attributes and override ``stepper``, ``chooser``, ``prepare``
    or ``finish``; ``generate`` itself is shared. ``name`` is set by ``register_decoder``.
    """

    name: ClassVar[str] = ""
    settings_class: ClassVar[type[DecodeSettings]] = DecodeSettings
    needs_policy: ClassVar[bool] = True  # False: the reward model writes (p-dpo)
    needs_reward_model: ClassVar[bool] = False
    needs_support: ClassVar[bool] = False
    # True: greedy output still depends on the seed (icl draws its demonstrations); False: only
    # sampling reads it, so a greedy cell is the same at every seed (a run plans it once)
    seeded: ClassVar[bool] = False
    reward_methods: ClassVar[tuple[str, ...]] = ()  # the reward methods it works with; (): any
    reward_model_kind: ClassVar[str] = "a reward model"  # for the missing-model error
    servable: ClassVar[bool] = False  # True: `persalign serve` can run it (serve/engine.py)

    def __init__(
        self,
        policy: Policy | None,
        reward_model: Any = None,
        settings: DecodeSettings | None = None,
        support: Any = None,
    ):
        if self.needs_policy and policy is None:
            raise ConfigError(f"the {self.name} decoder needs a policy (--policy MODEL)")
        if self.needs_reward_model and reward_model is None:
            raise ConfigError(
                f"the {self.name} decoder needs {self.reward_model_kind} (--reward MODEL_DIR)"
            )
        method = getattr(reward_model, "name", None)
        if reward_model is not None and self.reward_methods and method not in self.reward_methods:
            raise ConfigError(
                f"the {self.name} decoder needs {self.reward_model_kind} (--reward MODEL_DIR), "
                f"not a {method or type(reward_model).__name__} model"
            )
        if self.needs_support and support is None:
            raise ConfigError(f"the {self.name} decoder needs the users' support sets")
        if settings is not None and not isinstance(settings, self.settings_class):
            raise TypeError(f"the {self.name} decoder takes {self.settings_class.__name__}")
        self.policy = policy
        self.reward_model = reward_model
        self.support = support
        self.settings = settings or self.settings_class()

    @classmethod
    def takes(cls, option: str) -> bool:
        """Whether ``option`` (e.g. "lam", "k", "shots") is one of this decoder's settings."""
        return option in cls.settings_class.model_fields

    @classmethod
    def options(cls) -> list[str]:
        """This decoder's own settings, beyond the common DecodeSettings (e.g. lam, k)."""
        return [k for k in cls.settings_class.model_fields if k not in DecodeSettings.model_fields]

    # ------------------------------------------------------------------ hooks
    def prepare(self, requests: list[GenerationRequest]) -> list[GenerationRequest]:
        """The requests as decoded (ICL renders demonstrations into ``prompt_ids``)."""
        return requests

    def stepper(self) -> Stepper:
        """The model that writes: the base policy."""
        return self.policy

    def chooser(self) -> TokenChooser:
        """A fresh chooser for one batch."""
        return PolicyChooser(self.settings)

    def finish(self) -> None:
        """Called once after every batch of a ``generate`` call is decoded."""

    def parts(self) -> tuple[Stepper, TokenChooser]:
        """The stepper and chooser of one batch (a pair when they share state: fused ARGS)."""
        return self.stepper(), self.chooser()

    # ------------------------------------------------------------------ the shared loop
    def generate(
        self, requests: Sequence[GenerationRequest], progress: bool = True
    ) -> list[Generation]:
        """Generations for ``requests``, in order, ``settings.batch_size`` rows at a time."""
        requests = self.prepare(list(requests))
        size = self.settings.batch_size
        out: list[Generation] = []
        batches = [requests[i : i + size] for i in range(0, len(requests), size)]
        for batch in track(batches, f"{self.name} decoding", show=progress):
            stepper, chooser = self.parts()
            out += decode(stepper, batch, chooser, self.settings)
        self.finish()
        return out


def register_decoder(name: str, summary: str = "") -> Callable[[type[DecoderT]], type[DecoderT]]:
    """Class decorator: set ``cls.name`` and register ``cls`` in DECODERS as ``name``."""

    def decorate(cls: type[DecoderT]) -> type[DecoderT]:
        if not (isinstance(cls, type) and issubclass(cls, Decoder)):
            raise TypeError(f"decoder {name!r} must subclass Decoder")
        cls.name = name
        return DECODERS.register(name, summary)(cls)

    return decorate


def decode(
    stepper: Stepper,
    requests: Sequence[GenerationRequest],
    chooser: TokenChooser,
    settings: DecodeSettings,
) -> list[Generation]:
    """Generate for ``requests`` (one batch) with ``chooser`` picking every token."""
    started = time.perf_counter()
    prompt_ids = [
        list(r.prompt_ids) if r.prompt_ids is not None else stepper.formatter.prompt_ids(r.prompt)
        for r in requests
    ]
    state = stepper.start(prompt_ids, [r.user for r in requests])
    chooser.start(requests)
    eos = stepper.eos_ids()
    live = list(range(len(requests)))
    tokens_out: list[list[int]] = [[] for _ in requests]
    texts = [""] * len(requests)
    finish = ["length"] * len(requests)
    for step in range(settings.max_new_tokens):
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
            texts[row], stopped = _cut_at_stop(stepper, tokens_out[row], settings.stop)
            if stopped:
                finish[row] = "stop"
            else:
                keep.append(i)
        if not keep or step == settings.max_new_tokens - 1:
            break  # nothing left to write: no step for logits nobody reads
        if len(keep) < len(live):
            index = torch.tensor(keep, device=state.logits.device)
            state.select(index)
            chooser.select(index)
            chosen = chosen[index]
            live = [live[i] for i in keep]
        stepper.advance(state, chosen)
    seconds = (time.perf_counter() - started) / max(1, len(requests))
    return [
        Generation(r.id, r.user, texts[i].strip(), tokens_out[i], finish[i], seconds)
        for i, r in enumerate(requests)
    ]


def _cut_at_stop(stepper: Stepper, tokens: list[int], stops: Sequence[str]) -> tuple[str, bool]:
    """The text of ``tokens`` up to the first stop string that has text before it."""
    text = stepper.tokenizer.decode(tokens, skip_special_tokens=True)
    for stop in stops:
        at = text.find(stop)
        if at != -1 and text[:at].strip():  # a leading stop string does not end a response
            return text[:at], True
    return text, False
