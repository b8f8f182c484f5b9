"""Request bodies of the OpenAI-compatible API, the server's limits, and user-id checks.

    body = validated(CompletionRequest, json.loads(raw), head="request")
    check_user_id("alice-01")                     # raises ValueError for "../x", "", 65 chars

Field names follow OpenAI's completions and chat completions. ``user`` selects whose vector
guides decoding; ``persalign`` (sent by the official client as ``extra_body``) chooses the
decoder, lambda and k within the server's limits. ``temperature`` 0 or absent is greedy (the
paper's decoding), above 0 samples with ``seed``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_USER = "__default__"  # the reward model's row for unknown users (never a valid id)


def check_user_id(user: str) -> str:
    """``user`` when it is 1-64 characters of [A-Za-z0-9._-] starting alphanumeric."""
    if not isinstance(user, str) or not USER_ID.fullmatch(user):
        raise ValueError(
            "user ids are 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
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
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body.")
    max_preferences: int = Field(256, ge=1, description="Largest preference set per request.")
    unknown_user: Literal["default", "404"] = Field(
        "default", description="default: the population's vector; 404: reject."
    )


class PersalignOptions(BaseModel):
    """The ``persalign`` extension of a request."""

    model_config = ConfigDict(extra="forbid")

    decoder: str | None = Field(None, description="args | zero-shot | icl-rag.")
    lam: float | None = Field(None, ge=0, description="ARGS lambda.")
    k: int | None = Field(None, ge=1, description="ARGS candidates per step.")
    ignore_eos: bool = Field(False, description="Always write max_tokens tokens (benchmarks).")


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The served model id (GET /v1/models).")
    max_tokens: int | None = Field(None, description="Tokens to generate at most.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 or absent: greedy.")
    top_p: float | None = Field(None, description="Only 1 is supported.")
    n: int | None = Field(None, description="Only 1 is supported.")
    seed: int | None = Field(None, description="Seed of the sampling generator.")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    stream: bool = Field(False, description="Stream tokens as server-sent events.")
    stream_options: dict | None = Field(None, description="Accepted, ignored.")
    user: str | None = Field(None, description="Whose reward vector guides decoding.")
    persalign: PersalignOptions = Field(default_factory=PersalignOptions, description="Extras.")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return None if value is None else check_user_id(value)

    @model_validator(mode="after")
    def _supported(self):
        if self.n not in (None, 1):
            raise ValueError("n must be 1")
        if self.top_p not in (None, 1, 1.0):
            raise ValueError("top_p must be 1")
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: at most 4 non-empty strings")
        return self

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(_Common):
    """POST /v1/completions: ``prompt`` is the user's instruction (rendered as a chat turn)."""

    prompt: str = Field(min_length=1, description="The prompt.")


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"] = Field(description="Who wrote it.")
    content: str = Field(description="What was written.")
    name: str | None = Field(None, description="Accepted, ignored.")


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
