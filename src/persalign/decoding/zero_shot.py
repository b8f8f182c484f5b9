"""Zero-shot decoding: the policy alone, greedy by default.

decoder = ZeroShotDecoder(policy, settings=DecodeSettings(max_new_tokens=32, stop=("\\n",)))
decoder.generate(requests)
"""

from __future__ import annotations

from collections.abc import Sequence

from persalign.decoding.base import (
    DECODERS,
    DecodeSettings,
    Generation,
    GenerationRequest,
    PolicyChooser,
    decode,
)
from persalign.decoding.policy import Policy
from persalign.logs import track


@DECODERS.register("zero-shot", summary="The policy alone (greedy by default)")
class ZeroShotDecoder:
    """Generate from the base policy without personalization."""

    def __init__(
        self,
        policy: Policy,
        reward_model=None,
        settings: DecodeSettings | None = None,
        support=None,
    ):
        self.policy = policy
        self.settings = settings or DecodeSettings()

    def generate(
        self, requests: Sequence[GenerationRequest], progress: bool = True
    ) -> list[Generation]:
        out: list[Generation] = []
        size = self.settings.batch_size
        batches = [requests[i : i + size] for i in range(0, len(requests), size)]
        for batch in track(batches, "zero-shot decoding", show=progress):
            out += decode(self.policy, batch, PolicyChooser(self.settings), self.settings)
        return out
