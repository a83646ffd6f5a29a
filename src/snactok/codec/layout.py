"""Token and padding arithmetic of a SNAC architecture: no torch, so any stage can import it."""

from __future__ import annotations

import math
from typing import Any


def token_rates(arch: dict[str, Any]) -> list[float]:
    """Tokens per second of audio of each layer: sampling_rate / (prod(encoder_rates) * stride)."""
    hop = math.prod(arch["encoder_rates"])
    return [arch["sampling_rate"] / (hop * stride) for stride in arch["vq_strides"]]


def pad_multiple(arch: Any) -> int:
    """Samples SNAC pads every clip to a multiple of."""
    hop = math.prod(arch["encoder_rates"])
    return hop * math.lcm(arch["vq_strides"][0], arch["attn_window_size"] or 1)


def padded_length(num_samples: int, multiple: int) -> int:
    return max(1, math.ceil(num_samples / multiple)) * multiple


def token_lengths(padded: int, arch: Any) -> list[int]:
    frames = padded // math.prod(arch["encoder_rates"])
    return [frames // s for s in arch["vq_strides"]]
