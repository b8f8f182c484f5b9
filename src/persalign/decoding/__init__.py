"""Decoders: reward-guided decoding (ARGS), zero-shot, ICL, ICL-RAG and P-DPO's own policy.

    from persalign.decoding import Policy, create_decoder, GenerationRequest
    policy = Policy.load("bundled:smollm2-135m-instruct")
    decoder = create_decoder("args", policy, reward_model=rm, lam=1.0, k=10)
    decoder.generate([GenerationRequest("q1", "user-7", "Generate a title for ...")])
    DECODERS.get("args").takes("lam")        # True: what a run may pass to a decoder

Every decoder is a ``Decoder`` subclass in its own module of this package, registered with
``@register_decoder(name)``; a new decoder is one new file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from persalign.decoding.base import (
    DECODERS,
    Decoder,
    DecodeSettings,
    Generation,
    GenerationRequest,
    register_decoder,
)
from persalign.decoding.policy import Policy
from persalign.errors import validated
from persalign.types import Preference


def seed_free(decoder: str, settings: Mapping[str, Any]) -> bool:
    """Whether ``decoder`` with these settings writes the same at every seed: greedy, and a
    decoder that draws nothing (``Decoder.seeded`` False). A run plans such a baseline once."""
    return settings.get("mode", "greedy") == "greedy" and not DECODERS.get(decoder).seeded


def create_decoder(
    name: str,
    policy: Policy | None,
    *,
    reward_model: Any = None,
    support: Mapping[str, Sequence[Preference]] | None = None,
    **settings: Any,
) -> Decoder:
    """A decoder by name; ``settings`` are checked strictly against its ``settings_class``."""
    cls = DECODERS.get(name)
    parsed = validated(cls.settings_class, settings, head=f"invalid settings for decoder {name}")
    return cls(policy, reward_model=reward_model, settings=parsed, support=support)


__all__ = [
    "DECODERS",
    "DecodeSettings",
    "Decoder",
    "Generation",
    "GenerationRequest",
    "Policy",
    "create_decoder",
    "register_decoder",
    "seed_free",
]
