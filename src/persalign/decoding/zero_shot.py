"""Zero-shot decoding: the policy alone, greedy by default.

    decoder = create_decoder("zero-shot", policy, max_new_tokens=32, stop=("\\n",))
    decoder.generate(requests)

Everything is the shared Decoder: the base policy writes, the PolicyChooser picks (argmax, or
a seeded sample from softmax(logits / temperature)).
"""

from __future__ import annotations

from persalign.decoding.base import Decoder, register_decoder


@register_decoder("zero-shot", summary="The policy alone (greedy by default)")
class ZeroShotDecoder(Decoder):
    """Generate from the base policy without personalization."""

    servable = True
