"""Request bodies of the OpenAI-compatible API, the server's limits, and user-id checks.

    data = strip_neutral(json.loads(raw))          # Unsupported for e.g. n=2, logprobs=true
    body = validated(CompletionRequest, data, head="request")
    check_user_id("user 7/ä")                      # any benchmark id; ValueError: "", NUL, 513

Field names follow OpenAI's completions and chat completions. ``user`` selects whose vector
guides decoding; ``persalign`` (sent by the official client as ``extra_body``) chooses the
decoder, lambda and k within the server's limits. ``temperature`` 0 or absent is greedy (the
paper's decoding), above 0 samples with ``seed`` (a fresh one when absent, returned). OpenAI
parameters the server does not implement are accepted at their neutral value (what SDKs send:
``logprobs: false``, ``n: 1``, ``presence_penalty: 0``, ``echo: false``...) and refused
otherwise, naming the parameter. User ids are any string a benchmark may hold (1-512
characters, not blank, no NUL); files are named from an encoding of them (users.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_USER_ID = 512
DEFAULT_USER = "\x00default"  # the reward model's row for unknown users (never a valid id)
ANY = object()
# parameter -> its neutral values (ANY: every value is neutral, e.g. metadata)
NEUTRAL: dict[str, tuple[Any, ...] | object] = {
    "n": (None, 1),
    "top_p": (None, 1),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "suffix": (None, ""),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "parallel_tool_calls": ANY,
    "store": (None, False),
    "metadata": ANY,
    "service_tier": (None, "auto", "default"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "user_id": (None,),
}


class Unsupported(ValueError):
    """An OpenAI parameter with a value the server does not implement."""

    def __init__(self, param: str, value: Any):
        neutral = NEUTRAL[param]
        shown = ", ".join(repr(v) for v in neutral if v is not None)  # type: ignore[union-attr]
        super().__init__(
            f"{param}={value!r} is not supported by this server (accepted: {shown or 'absent'})"
        )
        self.param = param


def strip_neutral(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the OpenAI parameters the server ignores; Unsupported when one of
    them asks for something (``n: 2``, ``logprobs: true``, ``presence_penalty: 0.5``...)."""
    out = {}
    for key, value in data.items():
        neutral = NEUTRAL.get(key)
        if neutral is None:
            out[key] = value
        elif neutral is not ANY and value not in neutral:  # type: ignore[operator]
            raise Unsupported(key, value)
    return out


def check_user_id(user: str) -> str:
    """``user`` when it is 1-512 characters, not blank and without NUL (any benchmark id)."""
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_ID or "\x00" in user:
        raise ValueError(
            f"a user id is 1-{MAX_USER_ID} characters, not blank, without NUL characters"
        )
    return user


class ServeLimits(BaseModel):
    """What a server accepts; requests outside these get a 400."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field("persalign", description="The model id clients send.")
    decoder: str = Field("args", description="Default decoder: args, zero-shot or icl-rag.")
    lam: float = Field(1.0, ge=0, description="Default ARGS lambda.")
    k: int = Field(10, ge=1, description="Default ARGS candidates per step (paper: 10).")
    max_lam: float = Field(100.0, ge=0, description="Largest lambda a request may ask for.")
    max_k: int = Field(50, ge=1, description="Largest k a request may ask for.")
    max_batch: int = Field(16, ge=1, description="Live rows decoded together at most.")
    default_max_tokens: int = Field(64, ge=1, description="max_tokens when a request has none.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for.")
    max_queue: int = Field(
        64, ge=0, description="Requests waiting for a row at most; beyond it a 429 (Retry-After)."
    )
    queue_timeout: float = Field(
        60.0, gt=0, description="Seconds a request may wait for a row; longer: a 503."
    )
    spare_connections: int = Field(
        32, ge=1, description="Open connections beyond max_batch + max_queue (health, users)."
    )
    max_user_preferences: int = Field(
        1000, ge=1, description="Preferences kept per user (the latest) for adaptation."
    )
    adapt_timeout: float = Field(
        120.0, gt=0, description="Seconds an onboarding may take; longer: a 503, nothing kept."
    )
    max_onboarding_queue: int = Field(
        8, ge=1, description="Onboardings running or waiting at most; beyond it a 429."
    )
    adapt_in: Literal["process", "thread"] = Field(
        "process",
        description="Where users are adapted: a child process at idle CPU priority with its "
        "own copy of the reward model (decoding never waits for it), or a thread of the server "
        "(no second copy in memory; it competes with decoding for the GIL and the cores).",
    )
    sync_interval: float = Field(
        0.25, ge=0, description="Seconds between two reads of a user's version in the store."
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="Admission by tokens: live rows x the longest (prompt + max_tokens) at most.",
    )
    health_timeout: float = Field(
        30.0, gt=0, description="/health is 503 when the decoding loop has not passed for longer."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body.")
    max_preferences: int = Field(256, ge=1, description="Largest preference set per request.")
    unknown_user: Literal["default", "404"] = Field(
        "default", description="default: the population's vector; 404: reject."
    )
    completions_chat_template: bool = Field(
        False,
        description="/v1/completions renders prompts with the chat template (default: raw).",
    )


class PersalignOptions(BaseModel):
    """The ``persalign`` extension of a request."""

    model_config = ConfigDict(extra="forbid")

    decoder: str | None = Field(None, description="args | zero-shot | icl-rag.")
    lam: float | None = Field(None, ge=0, description="ARGS lambda.")
    k: int | None = Field(None, ge=1, description="ARGS candidates per step.")
    ignore_eos: bool = Field(False, description="Always write max_tokens tokens (benchmarks).")
    chat_template: bool | None = Field(
        None, description="/v1/completions: render the prompt as a chat turn (default: server's)."
    )


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(False, description="Send a last chunk with the usage.")
    continuous_usage_stats: bool = Field(
        False,
        description="vLLM's extension: every text chunk carries the usage so far, so a client "
        "knows how many tokens each chunk holds (blanks are held back until the next visible "
        "text, so a chunk may hold more than one).",
    )


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The served model id (GET /v1/models).")
    max_tokens: int | None = Field(None, description="Tokens to generate at most.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 or absent: greedy.")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed of the sampling generator (absent: a fresh one)."
    )
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    stream: bool = Field(False, description="Stream tokens as server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="include_usage.")
    user: str | None = Field(None, description="Whose reward vector guides decoding.")
    persalign: PersalignOptions = Field(default_factory=PersalignOptions, description="Extras.")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return None if value is None else check_user_id(value)

    @model_validator(mode="after")
    def _supported(self):
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: at most 4 non-empty strings")
        return self

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(_Common):
    """POST /v1/completions: ``prompt`` as given (raw), or as a chat turn with
    ``persalign.chat_template`` (or the server's ``--completions-chat-template``)."""

    prompt: str = Field(min_length=1, description="The prompt.")


class TextPart(BaseModel):
    """A text content part of a chat message (the only kind served)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(description="Only text parts are accepted.")
    text: str = Field(description="The text.")


class Message(BaseModel):
    """One chat message; ``content`` a string or a list of text parts (joined)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"] = Field(description="Who wrote it.")
    content: str | list[TextPart] = Field(description="What was written.")
    name: str | None = Field(None, description="Accepted, ignored.")

    def as_dict(self) -> dict[str, str]:
        """The message for a chat template (``developer`` is a system turn)."""
        text = (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Common):
    """POST /v1/chat/completions: a conversation ending with a user turn."""

    messages: list[Message] = Field(min_length=1, description="The conversation.")
    max_completion_tokens: int | None = Field(None, description="Alias of max_tokens.")

    @model_validator(mode="after")
    def _ends_with_user(self):
        if self.messages[-1].role != "user":
            raise ValueError("the last message must be the user's")
        return self


class PreferenceIn(BaseModel):
    """One preference of a user: ``chosen`` over ``rejected`` for ``prompt``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="The prompt.")
    chosen: str = Field(min_length=1, description="The response the user preferred.")
    rejected: str = Field(min_length=1, description="The response the user did not prefer.")

    @model_validator(mode="after")
    def _differ(self):
        if not self.prompt.strip() or not self.chosen.strip() or not self.rejected.strip():
            raise ValueError("prompt, chosen and rejected must not be blank")
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected must differ")
        return self


class PreferenceSet(BaseModel):
    """POST /v1/users/{user_id}/preferences: a list, or {"preferences": [...]}."""

    model_config = ConfigDict(extra="forbid")

    preferences: list[PreferenceIn] = Field(min_length=1, description="The user's judgements.")
