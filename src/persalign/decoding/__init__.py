"""Decoders: reward-guided decoding (ARGS), zero-shot, ICL and ICL-RAG behind one interface.

from persalign.decoding import Policy, create_decoder, GenerationRequest
policy = Policy.load("bundled:smollm2-135m-instruct")
decoder = create_decoder("args", policy, reward_model=rm, lam=1.0, k=10)
decoder.generate([GenerationRequest("q1", "user-7", "Generate a title for ...")])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from persalign.decoding.base import DECODERS, DecodeSettings, Generation, GenerationRequest
from persalign.decoding.policy import Policy
from persalign.errors import ConfigError
from persalign.types import Preference

SETTINGS = {
    "args": ("persalign.decoding.args", "ArgsSettings"),
    "icl": ("persalign.decoding.icl", "IclSettings"),
    "icl-rag": ("persalign.decoding.icl", "IclSettings"),
}


def create_decoder(
    name: str,
    policy: Policy,
    *,
    reward_model: Any = None,
    support: Mapping[str, Sequence[Preference]] | None = None,
    **settings: Any,
):
    """A decoder by name; ``settings`` are checked strictly against its settings model."""
    import importlib

    from pydantic import ValidationError

    cls = DECODERS.get(name)
    module, attr = SETTINGS.get(name, ("persalign.decoding.base", "DecodeSettings"))
    settings_class = getattr(importlib.import_module(module), attr)
    try:
        parsed = settings_class(**settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings for decoder {name}: {problems}") from None
    return cls(policy, reward_model=reward_model, settings=parsed, support=support)


__all__ = [
    "DECODERS",
    "DecodeSettings",
    "Generation",
    "GenerationRequest",
    "Policy",
    "create_decoder",
]
