"""``p-dpo`` decoding: the personalized policy of a P-DPO model writes the response itself.

    decoder = PersonalizedPolicyDecoder(policy, reward_model=pdpo_model)
    decoder.generate(requests)     # greedy, each row with its own user's soft tokens

P-DPO learns a policy, not only a reward: its LoRA backbone with the user's soft tokens in front
of the prompt (``PDPO.generate_ids``, cached and batched). The ``policy`` argument is unused; stop
strings are applied to the decoded text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from persalign.decoding.base import DECODERS, DecodeSettings, Generation, GenerationRequest
from persalign.errors import ConfigError
from persalign.logs import track


@DECODERS.register("p-dpo", summary="Generate with a P-DPO model's personalized policy")
class PersonalizedPolicyDecoder:
    """Greedy generation from a P-DPO reward model's personalized policy."""

    def __init__(self, policy=None, reward_model=None, settings=None, support=None):
        if reward_model is None or not hasattr(reward_model, "generate_ids"):
            raise ConfigError("the p-dpo decoder needs a trained p-dpo model (--reward MODEL_DIR)")
        self.rm = reward_model
        self.settings = settings or DecodeSettings()

    def generate(
        self, requests: Sequence[GenerationRequest], progress: bool = True
    ) -> list[Generation]:
        out: list[Generation] = []
        size = self.settings.batch_size
        decode = self.rm.formatter.tokenizer.decode
        batches = [requests[i : i + size] for i in range(0, len(requests), size)]
        for batch in track(batches, "p-dpo decoding", show=progress):
            started = time.perf_counter()
            prompt_ids = [self.rm.formatter.prompt_ids(r.prompt) for r in batch]
            rows = self.rm.generate_ids(
                prompt_ids, [r.user for r in batch], self.settings.max_new_tokens
            )
            seconds = (time.perf_counter() - started) / len(batch)
            for request, tokens in zip(batch, rows, strict=True):
                text, reason = decode(tokens, skip_special_tokens=True), "eos"
                if len(tokens) >= self.settings.max_new_tokens:
                    reason = "length"
                for stop in self.settings.stop:
                    at = text.find(stop)
                    if at > 0:
                        text, reason = text[:at], "stop"
                out.append(
                    Generation(request.id, request.user, text.strip(), tokens, reason, seconds)
                )
        return out
