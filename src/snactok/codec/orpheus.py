"""Orpheus TTS's flat token order for snac_24khz codes (`output.flatten=orpheus`).

Orpheus reads a clip as 7 tokens per coarse frame i:
`[L1[i], L2[2i], L3[4i], L3[4i+1], L2[2i+1], L3[4i+2], L3[4i+3]]`, the token at position k of the
frame shifted by `128266 + k * 4096` into its own slice of the LM vocabulary. Nothing is dropped or
deduplicated, so `unflatten` gives back the three layers exactly.
"""

from __future__ import annotations

import numpy as np

# The codec the layout is defined for: snac_24khz, 3 layers at ~12, 23 and 47 Hz.
VQ_STRIDES = (4, 2, 1)
CODEBOOK_SIZE = 4096
TOKENS_PER_FRAME = 7
# Orpheus's first audio token id (128256 Llama-3 tokens + 10 special tokens).
AUDIO_TOKEN_OFFSET = 128266
# (layer index, offset inside the frame's run of that layer) for positions k = 0..6.
FRAME_ORDER = ((0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (2, 2), (2, 3))
POSITION_OFFSETS = AUDIO_TOKEN_OFFSET + CODEBOOK_SIZE * np.arange(TOKENS_PER_FRAME, dtype=np.int32)
MAX_TOKEN = int(POSITION_OFFSETS[-1]) + CODEBOOK_SIZE - 1  # 156937: needs int32


def flatten(layers: list[np.ndarray]) -> np.ndarray:
    """Three layers of n, 2n and 4n codes (each < 4096) -> 7n int32 tokens in Orpheus order."""
    l1, l2, l3 = (np.asarray(layer) for layer in layers)
    n = len(l1)
    if (len(l2), len(l3)) != (2 * n, 4 * n):
        raise ValueError(
            f"orpheus needs layers of n, 2n and 4n codes; got {[len(l1), len(l2), len(l3)]}"
        )
    by_layer = (l1.reshape(n, 1), l2.reshape(n, 2), l3.reshape(n, 4))
    frames = np.stack([by_layer[layer][:, j] for layer, j in FRAME_ORDER], axis=1).astype(np.int32)
    frames += POSITION_OFFSETS
    return frames.reshape(-1)


def unflatten(codes: np.ndarray) -> list[np.ndarray]:
    """Orpheus tokens -> the three int16 layers they came from; raises on tokens out of place."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size % TOKENS_PER_FRAME:
        raise ValueError(f"{codes.size} tokens is not a whole number of 7-token frames")
    frames = codes.reshape(-1, TOKENS_PER_FRAME) - POSITION_OFFSETS
    if frames.size and (frames.min() < 0 or frames.max() >= CODEBOOK_SIZE):
        raise ValueError("a token is outside the id range of its position in the frame")
    n = len(frames)
    layers = [np.empty((n, 1), np.int16), np.empty((n, 2), np.int16), np.empty((n, 4), np.int16)]
    for k, (layer, j) in enumerate(FRAME_ORDER):
        layers[layer][:, j] = frames[:, k]
    return [layer.reshape(-1) for layer in layers]
