"""``colon``: whether the response has a colon or a subtitle (a title of the form "X: Y").

colon("...", "BERT: Pre-training of Deep Bidirectional Transformers")   # 1.0
colon("...", "Deep learning - a survey")                                # 1.0 (a dash subtitle)
colon("...", "Attention Is All You Need")                               # 0.0
"""

from __future__ import annotations

import re

from persalign.data.attributes import register_attribute

_SUBTITLE = re.compile(r":|\s[-–—]\s")


@register_attribute("colon", summary="1 if the response has a colon or a dash subtitle, else 0")
def colon(prompt: str, response: str) -> float:
    """1.0 when the response contains a colon, or a dash between spaces (" - ", " – ", " — ")."""
    return 1.0 if _SUBTITLE.search(response) else 0.0
