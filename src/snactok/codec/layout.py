"""Token and padding arithmetic of a SNAC architecture: no torch, so any stage can import it."""

from __future__ import annotations

import math
from typing import Any


def token_rates(arch: dict[str, Any]) -> list[float]:
    """Tokens per second of audio of each layer: sampling_rate / (prod(encoder_rates) * stride)."""
    hop = math.prod(arch["encoder_rates"])
    return [arch["sampling_rate"] / (hop * stride) for stride in arch["vq_strides"]]
