"""Orpheus TTS's flat token order for snac_24khz codes (`output.flatten=orpheus`), and its
training sequences (`template=orpheus`).

Orpheus reads a clip as 7 tokens per coarse frame i:
`[L1[i], L2[2i], L3[4i], L3[4i+1], L2[2i+1], L3[4i+2], L3[4i+3]]`, the token at position k of the
frame shifted by `128266 + k * 4096` into its own slice of the LM vocabulary. Nothing is dropped or
deduplicated, so `unflatten` gives back the three layers exactly.

A training sequence (`sequence`) puts the text's token ids and the audio tokens between the
template's special ids; `split_sequence` takes one apart again.
"""

from __future__ import annotations

from typing import Any

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


def flatten(layers: list[np.ndarray], offset: int = AUDIO_TOKEN_OFFSET) -> np.ndarray:
    """Three layers of n, 2n and 4n codes (each < 4096) -> 7n int32 tokens in Orpheus order,
    position k's codes shifted by `offset + k * 4096`."""
    l1, l2, l3 = (np.asarray(layer) for layer in layers)
    n = len(l1)
    if (len(l2), len(l3)) != (2 * n, 4 * n):
        raise ValueError(
            f"orpheus needs layers of n, 2n and 4n codes; got {[len(l1), len(l2), len(l3)]}"
        )
    by_layer = (l1.reshape(n, 1), l2.reshape(n, 2), l3.reshape(n, 4))
    frames = np.stack([by_layer[layer][:, j] for layer, j in FRAME_ORDER], axis=1).astype(np.int32)
    frames += POSITION_OFFSETS - AUDIO_TOKEN_OFFSET + offset
    return frames.reshape(-1)


def unflatten(codes: np.ndarray, offset: int = AUDIO_TOKEN_OFFSET) -> list[np.ndarray]:
    """Orpheus tokens -> the three int16 layers they came from; raises on tokens out of place."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size % TOKENS_PER_FRAME:
        raise ValueError(f"{codes.size} tokens is not a whole number of 7-token frames")
    frames = codes.reshape(-1, TOKENS_PER_FRAME) - (POSITION_OFFSETS - AUDIO_TOKEN_OFFSET + offset)
    if frames.size and (frames.min() < 0 or frames.max() >= CODEBOOK_SIZE):
        raise ValueError("a token is outside the id range of its position in the frame")
    n = len(frames)
    layers = [np.empty((n, 1), np.int16), np.empty((n, 2), np.int16), np.empty((n, 4), np.int16)]
    for k, (layer, j) in enumerate(FRAME_ORDER):
        layers[layer][:, j] = frames[:, k]
    return [layer.reshape(-1) for layer in layers]


def kept_frames(first_layer: np.ndarray) -> np.ndarray:
    """Which frames `dedup=first_token` keeps: the reference notebook drops a frame whose layer-1
    token equals the last kept frame's. A dropped frame has the last kept frame's token, so the
    last kept token is always the previous frame's, and the rule is `l1[i] != l1[i-1]`."""
    first_layer = np.asarray(first_layer)
    keep = np.ones(len(first_layer), dtype=bool)
    keep[1:] = first_layer[1:] != first_layer[:-1]
    return keep


def audio_tokens(layers: list[np.ndarray], template: Any) -> np.ndarray:
    """A clip's audio tokens as the template puts them: Orpheus order from the template's offset,
    with `first_token` dedup dropping whole frames."""
    tokens = flatten(layers, template.audio_offset).reshape(-1, TOKENS_PER_FRAME)
    if template.dedup == "first_token":
        tokens = tokens[kept_frames(layers[0])]
    return tokens.reshape(-1)


def sequence(text_ids: list[int], layers: list[np.ndarray], template: Any) -> np.ndarray:
    """One row's int32 training sequence: `[start_of_human] + text_ids + [end_of_text,
    end_of_human, start_of_ai, start_of_speech] + audio + [end_of_speech, end_of_ai]`."""
    t = template
    head = [t.start_of_human, *text_ids, t.end_of_text, t.end_of_human, t.start_of_ai, t.start_of_speech]
    parts = [
        np.asarray(head, np.int32),
        audio_tokens(layers, t),
        np.asarray([t.end_of_speech, t.end_of_ai], np.int32),
    ]
    return np.concatenate(parts).astype(np.int32)


def split_sequence(input_ids: Any, template: Any) -> tuple[list[int], list[np.ndarray]]:
    """`sequence`'s inverse: the text's token ids and the three layers of the frames it holds
    (with dedup off, exactly the clip's layers). Raises on a sequence not in the layout."""
    t = template
    ids = np.asarray(input_ids, dtype=np.int64)
    head = [t.end_of_text, t.end_of_human, t.start_of_ai, t.start_of_speech]
    starts = np.flatnonzero(ids == t.start_of_speech)
    if (
        len(ids) < 7
        or ids[0] != t.start_of_human
        or not len(starts)
        or list(ids[-2:]) != [t.end_of_speech, t.end_of_ai]
    ):
        raise ValueError(
            "not a template sequence: it must start with start_of_human and end with end_of_speech, end_of_ai"
        )
    speech = int(starts[-1])  # audio tokens lie above every special id: the last is the one
    if list(ids[speech - 3 : speech + 1]) != head:
        raise ValueError(
            "the text is not followed by end_of_text, end_of_human, start_of_ai, start_of_speech"
        )
    return ids[1 : speech - 3].tolist(), unflatten(ids[speech + 1 : -2], t.audio_offset)


def max_id(template: Any) -> int:
    """The largest id the template emits: the last audio token, or a special id above it."""
    specials = (
        template.start_of_human,
        template.end_of_text,
        template.end_of_human,
        template.start_of_ai,
        template.start_of_speech,
        template.end_of_speech,
        template.end_of_ai,
        template.pad,
    )
    return max(template.audio_offset + TOKENS_PER_FRAME * CODEBOOK_SIZE - 1, *specials)
