"""Decoding (soundfile, PyAV fallback), down-mix and resampling; local folders; shard files."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ROOT, compose_cfg, demo_rows, typed_cfg

from snactok.config.schema import typed
from snactok.errors import ConfigError
from snactok.inputs.audio import Rejected, Resampler, check_audio, decode
from snactok.inputs.sources import open_sources
from snactok.inputs.units import plan_units
from snactok.output.formats import format_row, write_shard


def _tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    return np.stack([mono * (1 - 0.5 * c) for c in range(channels)], axis=1)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".ogg"])
def test_every_bundled_format_decodes(suffix):
    files = sorted((ROOT / "data" / "demo").glob(f"*{suffix}"))
    assert files
    for f in files:
        audio, rate = decode({"bytes": None, "path": str(f)})
        assert audio.ndim == 2 and audio.shape[0] > rate and rate in (16000, 22050, 24000, 44100, 48000)
        bytes_audio, bytes_rate = decode({"bytes": f.read_bytes(), "path": None})
        assert bytes_rate == rate and bytes_audio.shape == audio.shape


def test_pyav_takes_what_libsndfile_cannot(tmp_path):
    import av

    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(_tone(44100, 1.0, 2).T), format="fltp", layout="stereo"
        )
        frame.rate = 44100
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(Exception):  # noqa: B017 - whichever error libsndfile gives
        sf.read(path)
    audio, rate = decode(str(path))
    assert rate == 44100 and audio.shape[1] == 2
    assert abs(audio.shape[0] - 44100) < 4096  # aac frames pad the ends
    rms = float(np.sqrt(np.mean(audio[:, 0] ** 2)))
    assert 0.15 < rms < 0.28  # a 0.3-amplitude sine: 0.21


def test_down_mix_and_resample():
    stereo = _tone(48000, 1.0, 2)  # right channel at half the left
    wave = Resampler(24000)(stereo, 48000)
    assert wave.ndim == 1 and wave.shape[0] == 24000
    assert abs(float(wave.abs().max()) - 0.3 * 0.75) < 0.01
    same = Resampler(24000)(_tone(24000, 0.5), 24000)
    assert same.shape[0] == 12000


@pytest.mark.parametrize("target", [24000, 32000, 44100])
def test_the_kept_kernel_resamples_as_torchaudio_does_bit_for_bit(target):
    """The reference resamples with `torchaudio.functional.resample`; Resampler keeps its kernel
    per source rate and must give the same tensor, on the first call and the later ones."""
    import torchaudio.functional as AF

    rng = np.random.default_rng(target)
    resample = Resampler(target)
    for rate in (8000, 11025, 16000, 22050, 44100, 48000, 96000):
        for frames in (1, 37, 4001, 48000 + 13, 4001):
            audio = rng.standard_normal((frames, 2)).astype(np.float32) * 0.3
            mono = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1, dtype=np.float32)))
            assert torch.equal(resample(audio, rate), AF.resample(mono, rate, target)), (rate, frames)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: str(d / "missing.wav"), "missing_file"),
        (lambda d: _write(d / "empty.wav", b""), "decode_error"),
        (lambda d: _write(d / "text.wav", b"this is not audio at all\n" * 20), "decode_error"),
        (lambda d: {"bytes": b"RIFF\x00\x00", "path": None}, "decode_error"),
    ],
)
def test_undecodable_input_is_rejected_with_a_reason(tmp_path, make, reason):
    with pytest.raises(Rejected) as info:
        decode(make(tmp_path))
    assert info.value.reason == reason and info.value.detail


@pytest.mark.parametrize(
    "audio, rate, reason",
    [
        (np.zeros((0, 1), np.float32), 16000, "empty_audio"),
        (np.full((100, 1), np.nan, np.float32), 16000, "non_finite"),
        (np.zeros((100, 1), np.float32), 10, "bad_sample_rate"),
        (np.zeros((3, 1), np.float32), 16000, "too_short"),
        (np.zeros((16000 * 5, 1), np.float32), 16000, "too_long"),
    ],
)
def test_unusable_audio_is_rejected_with_a_reason(audio, rate, reason):
    with pytest.raises(Rejected) as info:
        check_audio(audio, rate, min_samples=4, max_duration=4.0)
    assert info.value.reason == reason


def test_a_truncated_file_yields_the_samples_it_has():
    audio, rate = decode({"bytes": _wav_bytes(_tone(16000, 1.0))[:100], "path": None})
    assert (audio.shape, rate) == ((28, 1), 16000)  # 44-byte header + 56 bytes of int16


def test_one_sample_is_a_valid_clip_by_default():
    one = np.zeros((1, 1), np.float32)
    assert check_audio(one, 16000, min_samples=1, max_duration=None) is None
    with pytest.raises(Rejected, match="too_short"):
        check_audio(one, 16000, min_samples=2, max_duration=None)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV")
    return buf.getvalue()


def test_demo_folder_opens_with_ids_text_and_speakers():
    (source,) = open_sources(typed_cfg(["dataset=demo"]).dataset, max_rows=None)
    expected = demo_rows()
    assert source.label == "demo-default-train" and source.num_rows == len(expected) == 40
    rows = source.rows(0, source.num_rows)
    assert [r["id"] for r in rows] == [e["file_name"] for e in expected]
    assert [r["text"] for r in rows] == [e["text"] for e in expected]
    assert [r["speaker"] for r in rows] == [e["speaker"] for e in expected]
    assert rows[0]["audio"]["path"].endswith("data/demo/" + expected[0]["file_name"])


def test_unknown_column_lists_the_columns():
    cfg = compose_cfg(["dataset=demo", "dataset.sources.0.text_column=sentence"])
    with pytest.raises(ConfigError) as info:
        open_sources(typed(cfg).dataset, max_rows=None)
    assert "unknown dataset column 'sentence'" in str(info.value)
    assert "['file_name', 'text', 'speaker', 'audio']" in str(info.value)


def test_a_folder_needing_a_loading_script_is_refused_with_the_hint(tmp_path):
    folder = tmp_path / "old_dataset"
    folder.mkdir()
    (folder / "old_dataset.py").write_text("# a datasets loading script\n")
    cfg = compose_cfg(["dataset=local_folder", f"dataset.path={folder}"])
    with pytest.raises(ConfigError, match=r"loading script.*refs/convert/parquet"):
        open_sources(typed(cfg).dataset, max_rows=None)


def test_folder_without_metadata_uses_relative_paths_as_ids(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/x.wav", "a/y.flac", "z.wav"):
        sf.write(tmp_path / name, _tone(16000, 0.2), 16000)
    cfg = compose_cfg(
        ["dataset=local_folder", f"dataset.path={tmp_path}", "dataset.sources.0.text_column=null"]
    )
    (source,) = open_sources(typed(cfg).dataset, max_rows=None)
    assert [r["id"] for r in source.rows(0, 3)] == ["a/b/x.wav", "a/y.flac", "z.wav"]


def test_units_are_fixed_row_ranges_named_by_source_and_number():
    (source,) = open_sources(typed_cfg(["dataset=demo"]).dataset, max_rows=None)
    units = plan_units([source], lines_per_file=16)
    assert [(u.start, u.stop) for u in units] == [(0, 16), (16, 32), (32, 40)]
    assert [u.name for u in units] == [f"demo-default-train-0000{i}" for i in range(3)]


def test_shards_are_atomic_and_byte_reproducible(tmp_path):
    lines = [
        format_row(
            {"text": "hi", "speaker": "s", "id": "a.wav", "duration": 1.5},
            np.arange(7, dtype=np.int16),
            [1, 2, 4],
            {"lang": "en"},
            True,
        )
    ]
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    size, digest = write_shard(a, lines, gzip_level=1, buffer_size=1 << 16)
    write_shard(b, lines, gzip_level=1, buffer_size=1 << 16)
    assert a.read_bytes() == b.read_bytes() and size == a.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl.gz", "b.jsonl.gz"]  # no temp left
    with gzip.open(a, "rt") as f:
        row = json.loads(f.readline())
    assert list(row) == [
        "text",
        "snac_layer_1",
        "snac_layer_2",
        "snac_layer_3",
        "num_layers",
        "token_lengths",
        "speaker",
        "lang",
        "id",
        "duration",
    ]
    assert row["snac_layer_3"] == [3, 4, 5, 6] and row["token_lengths"] == [1, 2, 4]
    assert len(digest) == 64
