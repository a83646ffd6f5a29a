"""template=orpheus's sequences against the layout written out by hand here, and first_token
dedup against the reference notebook's loop (Orpheus-TTS finetune, remove_duplicate_frames)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import typed_cfg

from snactok.codec import orpheus


def _template(dedup: str = "none"):
    return typed_cfg(
        ["template=orpheus", "template.tokenizer=/nowhere", f"template.dedup={dedup}"]
    ).template


def _layers(n: int, rng: np.random.Generator, repeats: bool = False) -> list[np.ndarray]:
    l1 = rng.integers(0, 4096, n)
    if repeats:  # runs of one layer-1 code, as silence and held notes give
        l1 = np.repeat(rng.integers(0, 4096, n // 3 + 1), 3)[:n]
        l1[5:9] = l1[4]
    return [
        l1.astype(np.int16),
        rng.integers(0, 4096, 2 * n).astype(np.int16),
        rng.integers(0, 4096, 4 * n).astype(np.int16),
    ]


def _by_hand(layers: list[np.ndarray]) -> list[int]:
    """Orpheus's 7 tokens per frame, written out as its preprocessing notebook does."""
    l1, l2, l3 = (list(map(int, x)) for x in layers)
    out = []
    for i in range(len(l1)):
        out += [
            l1[i] + 128266,
            l2[2 * i] + 128266 + 4096,
            l3[4 * i] + 128266 + 2 * 4096,
            l3[4 * i + 1] + 128266 + 3 * 4096,
            l2[2 * i + 1] + 128266 + 4 * 4096,
            l3[4 * i + 2] + 128266 + 5 * 4096,
            l3[4 * i + 3] + 128266 + 6 * 4096,
        ]
    return out


def _notebook_dedup(codes: list[int]) -> list[int]:
    """The reference notebook's rule, as it is written there: keep the first frame, then a frame
    only when its first token differs from the last kept frame's first token."""
    result = codes[:7]
    for i in range(7, len(codes), 7):
        if codes[i] != result[-7]:
            result.extend(codes[i : i + 7])
    return result


def test_the_template_holds_the_published_ids():
    t = _template()
    ids = (t.start_of_human, t.end_of_text, t.end_of_human, t.start_of_ai, t.start_of_speech)
    assert ids == (128259, 128009, 128260, 128261, 128257)
    assert (t.end_of_speech, t.end_of_ai, t.pad, t.audio_offset) == (128258, 128262, 128263, 128266)
    assert orpheus.max_id(t) == 156937


@pytest.mark.parametrize("frames", [1, 2, 37])
def test_a_sequence_is_the_canonical_layout_and_splits_back_into_the_layers(frames):
    rng = np.random.default_rng(frames)
    layers = _layers(frames, rng)
    text_ids = [128000, 17, 402, 9]
    got = orpheus.sequence(text_ids, layers, _template())
    want = [128259, *text_ids, 128009, 128260, 128261, 128257, *_by_hand(layers), 128258, 128262]
    assert got.dtype == np.int32 and got.tolist() == want
    back_text, back_layers = orpheus.split_sequence(got, _template())
    assert back_text == text_ids
    assert all(np.array_equal(a, b) for a, b in zip(back_layers, layers, strict=True))


@pytest.mark.parametrize("seed", range(4))
def test_first_token_dedup_is_the_notebook_rule(seed):
    rng = np.random.default_rng(seed)
    layers = _layers(40, rng, repeats=True)
    got = orpheus.audio_tokens(layers, _template("first_token")).tolist()
    want = _notebook_dedup(_by_hand(layers))
    assert got == want and len(want) < 7 * 40  # the repeats were there, and they went
    assert (~orpheus.kept_frames(layers[0])).sum() == 40 - len(want) // 7
    sequence = orpheus.sequence([128000, 5], layers, _template("first_token"))
    _, kept = orpheus.split_sequence(sequence, _template("first_token"))
    assert _by_hand(kept) == want


def test_a_sequence_out_of_layout_is_refused():
    t = _template()
    good = orpheus.sequence([128000, 5], _layers(3, np.random.default_rng(0)), t)
    with pytest.raises(ValueError, match="start with start_of_human"):
        orpheus.split_sequence(good[1:], t)
    with pytest.raises(ValueError, match="end_of_text, end_of_human"):
        orpheus.split_sequence(np.delete(good, 3), t)
    with pytest.raises(ValueError, match="whole number of 7-token frames"):
        orpheus.split_sequence(np.delete(good, 8), t)
