"""What `make_demo_data.py`'s speech and music share: the clip it writes, and two small edits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clip:
    """One synthesized or spoken clip, ready to be written to disk."""

    audio: np.ndarray  # float32, shape (frames,) or (frames, channels)
    sample_rate: int
    fmt: str
    text: str
    speaker: str


def normalize(audio: np.ndarray, peak: float) -> np.ndarray:
    """Scale ``audio`` so its absolute peak equals ``peak``."""
    top = float(np.max(np.abs(audio)))
    return (audio * (peak / top)).astype(np.float32) if top > 0 else audio.astype(np.float32)


def delayed(audio: np.ndarray, delay_s: float, rate: int) -> np.ndarray:
    """Return ``audio`` delayed by ``delay_s`` seconds (same length, zeros shifted in)."""
    shift = int(delay_s * rate)
    return np.concatenate([np.zeros(shift, np.float32), audio[: len(audio) - shift]])
