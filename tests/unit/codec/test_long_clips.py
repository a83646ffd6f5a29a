"""Long clips in overlapping parts: the plan, the stitching, the measured receptive field, and
stitched encoder frames equal to the whole clip's up to float32 rounding, through the production
encoder.

Up to rounding, not bit for bit: a kernel may order its sums by the input's length (oneDNN's gemm
convolutions on AVX2 do), and then a token with a near tie can flip. Those flips are a property of
the machine, not of the plan; the run's verifier reports them. What the plan must get right is
the reach: with one window less overlap the seams are wrong by far more than rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import CODECS, ROOT, compose_cfg
from snac import SNAC

from snactok.codec import long_clips as chunks
from snactok.codec.encoder import BatchEncoder
from snactok.codec.layout import pad_multiple, padded_length
from snactok.codec.long_clips import (
    Part,
    frames_in_parts,
    overlap_for,
    part_waves,
    plan_parts,
    receptive_field,
)
from snactok.codec.weights import Weights, arch_dict, calibration_audio, load_model
from snactok.inputs.audio import Resampler, decode

# Clip and chunk sizes, in pad units (minus a few samples, so the clip is not a multiple of the pad
# and the chunk is floored). At 24 kHz a long clip with production-sized 30 s chunks; at 32 and
# 44.1 kHz, whose overlap is two pad units, small chunks so the clip still spans three parts.
CASES = {
    "snac_24khz": {"clip": 24000 * 120 + 777, "chunk": 24000 * 30},
    "snac_32khz": {"clip": 9 * 12288 - 1000, "chunk": 6 * 12288 + 5000},
    "snac_44khz": {"clip": 9 * 12288 - 1000, "chunk": 6 * 12288 + 5000},
}


def _arch(codec: str) -> dict:
    return arch_dict(compose_cfg([f"codec={codec}"]).codec.arch)


def _tiling_ok(parts: list[Part], padded: int, multiple: int, chunk: int, overlap: int) -> None:
    assert parts[0].keep_start == 0 and parts[-1].keep_stop == padded
    for before, after in zip(parts, parts[1:], strict=False):
        assert before.keep_stop == after.keep_start
    for p in parts:
        assert p.length <= chunk
        assert p.start <= p.keep_start < p.keep_stop <= p.stop
        assert all(v % multiple == 0 for v in (p.start, p.stop, p.keep_start, p.keep_stop))
        assert p.keep_start - p.start == min(overlap, p.keep_start)
        assert p.stop - p.keep_stop == min(overlap, padded - p.keep_stop)


@pytest.mark.parametrize(
    "num_samples, chunk",
    [(1, 12_000), (2048, 2048 * 5), (2048 * 5, 2048 * 5), (2048 * 5 + 1, 2048 * 5), (10**6 + 3, 20_000)],
)
def test_plan_tiles_the_padded_clip_with_overlap_inside_the_chunk(num_samples, chunk):
    multiple, overlap = 2048, 4096
    parts = plan_parts(num_samples, multiple, chunk, overlap)
    padded = padded_length(num_samples, multiple)
    _tiling_ok(parts, padded, multiple, chunk, overlap)
    if padded <= chunk // multiple * multiple:
        assert parts == [Part(0, padded, 0, padded)]
    else:
        assert len(parts) >= 2


def test_plan_of_a_long_clip_uses_full_chunks_except_the_last():
    parts = plan_parts(24000 * 120 + 777, 2048, 24000 * 30, 6144)
    assert [p.length for p in parts[:-1]] == [351 * 2048] * (len(parts) - 1)  # 30 s floored
    assert [p.keep_stop - p.keep_start for p in parts[1:-1]] == [345 * 2048] * (len(parts) - 2)
    assert len(parts) == 5


def test_plan_refuses_a_chunk_that_cannot_hold_the_overlap():
    with pytest.raises(ValueError, match=r"chunk_samples=20000 .* use chunk_samples >= 22528"):
        plan_parts(10**6, 2048, 20_000, 10_240)
    plan_parts(10**6, 2048, 22_528, 10_240)  # the size it names is enough
    with pytest.raises(ValueError, match=r"overlap=5000 must be a non-negative multiple of .* 2048"):
        plan_parts(10**6, 2048, 10**5, 5000)


def test_part_waves_cut_the_clip_and_zero_pad_the_last_part():
    wave = torch.arange(1, 10_001, dtype=torch.float32)
    parts = plan_parts(len(wave), 1024, 5 * 1024, 1024)
    waves = part_waves(wave, parts)
    assert [len(w) for w in waves] == [p.length for p in parts]
    for w, p in zip(waves, parts, strict=True):
        assert torch.equal(w[: max(0, min(p.stop, len(wave)) - p.start)], wave[p.start : p.stop])
    assert torch.equal(waves[-1][len(wave) - parts[-1].start :], torch.zeros(parts[-1].stop - len(wave)))


@pytest.fixture(scope="module")
def rf_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("receptive_field")


@pytest.mark.parametrize("codec", CODECS)
def test_receptive_field_is_a_few_pad_units_and_cached(codec, rf_cache, monkeypatch):
    arch = _arch(codec)
    unit = pad_multiple(arch)
    left, right = receptive_field(arch, rf_cache)
    assert 0 < left < 3 * unit and 0 < right < 3 * unit, (left, right, unit)
    monkeypatch.setattr(chunks, "_measure", lambda arch: pytest.fail("measured again"))
    assert receptive_field(arch, rf_cache) == (left, right)  # read back from disk
    assert overlap_for(arch, (left, right)) % unit == 0
    assert overlap_for(arch, (left, right)) >= max(left, right)


def _speech(rate: int, num_samples: int) -> torch.Tensor:
    """Bundled speech, repeated at varying gain over a faint noise floor: never silent, never
    exactly periodic."""
    base = calibration_audio(rate, seconds=20.0, clip_seconds=20.0).reshape(-1)
    gen = torch.Generator().manual_seed(rate)
    reps = -(-num_samples // len(base))
    gains = 0.5 + torch.rand(reps, generator=gen)
    wave = torch.cat([g * base for g in gains])[:num_samples]
    return wave + 1e-3 * torch.randn(num_samples, generator=gen)


ROUNDING = 1e-4  # max |difference| / max |frame| that float32 rounding leaves, with margin


@pytest.fixture(scope="module")
def whole_clip(weights_dir):
    """codec -> (clip, the encoder frames and flat codes `SNAC.encode` computes on it whole)."""
    done: dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]] = {}

    def get(codec: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        if codec not in done:
            arch = _arch(codec)
            wave = _speech(arch["sampling_rate"], CASES[codec]["clip"])
            reference = SNAC.from_pretrained(str(weights_dir(codec)))  # weight norm unfolded
            with torch.inference_mode():
                frames = reference.encoder(reference.preprocess(wave.view(1, 1, -1)))
                codes = reference.quantizer(frames)[1]
            done[codec] = (wave, frames[0], torch.cat(codes, dim=1)[0].numpy())
        return done[codec]

    return get


def _frames_in_parts(codec, weights_dir, wave, overlap, chunk=None):
    """The production path: plan, then `frames_in_parts` with BatchEncoder (eager)."""
    arch = _arch(codec)
    path = str(weights_dir(codec))
    encoder = BatchEncoder(load_model(Weights("local", path, path), arch), torch.device("cpu"), arch)
    parts = plan_parts(len(wave), pad_multiple(arch), chunk or CASES[codec]["chunk"], overlap)
    frames = frames_in_parts(encoder, wave, parts, max_batch=len(parts))
    return frames, encoder.quantize(frames[None])[0], parts


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Per frame: max |difference| over channels, relative to the clip's largest frame value."""
    return (got - want).abs().amax(dim=0) / want.abs().max()


def test_demo_clips_in_1s_chunks_match_their_whole_clip_encode(weights_dir, rf_cache):
    """Short real clips in many small parts: frames within rounding of the whole clip's."""
    arch = _arch("snac_24khz")
    reference = SNAC.from_pretrained(str(weights_dir("snac_24khz")))
    overlap = overlap_for(arch, receptive_field(arch, rf_cache))
    resample = Resampler(24000)
    for name in ("clip_025.flac", "clip_002.mp3", "clip_014.mp3"):
        wave = resample(*decode(str(ROOT / "data" / "demo" / name)))
        with torch.inference_mode():
            want = reference.encoder(reference.preprocess(wave.view(1, 1, -1)))[0]
            tokens = torch.cat(reference.quantizer(want[None])[1], dim=1)[0].numpy()
        frames, got, parts = _frames_in_parts("snac_24khz", weights_dir, wave, overlap, chunk=22528)
        assert len(parts) >= 3
        assert frames.shape == want.shape
        assert _relative_error(frames, want).max() < ROUNDING, name
        assert got.shape == tokens.shape


@pytest.mark.parametrize(
    "codec", [pytest.param(c, marks=pytest.mark.slow) if c == "snac_24khz" else c for c in CODECS]
)
def test_stitched_parts_match_the_whole_clip_encode(codec, weights_dir, whole_clip, rf_cache):
    """The 24 kHz case encodes 2 minutes twice (whole, then in 30 s parts): ~1 min on 2 cores."""
    arch = _arch(codec)
    wave, want, tokens = whole_clip(codec)
    overlap = overlap_for(arch, receptive_field(arch, rf_cache))
    frames, got, parts = _frames_in_parts(codec, weights_dir, wave, overlap)
    assert len(parts) >= 3
    assert len(wave) % pad_multiple(arch) != 0
    assert got.dtype == np.int16 and got.shape == tokens.shape
    assert _relative_error(frames, want).max() < ROUNDING, codec


def test_one_window_less_overlap_is_wrong_at_the_seams(weights_dir, whole_clip, rf_cache):
    """The checks above are not vacuous: at 44.1 kHz one attention window (one pad unit) less
    than the measured overlap puts frames next to each seam far outside rounding."""
    codec = "snac_44khz"
    arch = _arch(codec)
    wave, want, _ = whole_clip(codec)
    overlap = overlap_for(arch, receptive_field(arch, rf_cache)) - pad_multiple(arch)
    frames, _, parts = _frames_in_parts(codec, weights_dir, wave, overlap)
    error = _relative_error(frames, want)
    hop = math.prod(arch["encoder_rates"])
    wrong = torch.nonzero(error > 100 * ROUNDING)[:, 0].numpy() * hop  # sample where each starts
    assert len(wrong) > 0
    seams = np.array([p.keep_start for p in parts[1:]])
    assert np.abs(wrong[:, None] - seams[None]).min(axis=1).max() < pad_multiple(arch)


def test_receptive_field_can_be_measured_from_inside_inference_mode(rf_cache):
    """A device worker may ask while encoding; autograd must still work, and grad mode comes back."""
    arch = _arch("snac_24khz")
    with torch.inference_mode():
        measured = receptive_field(arch)
        assert torch.is_inference_mode_enabled()
    assert measured == receptive_field(arch, rf_cache)
