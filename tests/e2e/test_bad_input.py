"""The real `python encode.py` on a folder of broken and awkward audio: nothing crashes, and every row
is either written or rejected once, with the reason code its defect calls for.

What the libraries do with each defect is pinned here (libsndfile 1.2.2, PyAV 18): a FLAC cut
mid-stream is a decode_error in both (libsndfile "flac decoder lost sync", FFmpeg rejects the partial
packet), unlike a truncated WAV, which yields the samples it has (test_audio_sources.py).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import compose_cfg, run_cli
from snac import SNAC

from snactok.codec.layout import pad_multiple, padded_length, token_lengths
from snactok.codec.weights import arch_dict, calibration_audio
from snactok.inputs.audio import Resampler
from snactok.output.files import read_jsonl
from snactok.output.formats import read_shard

pytestmark = pytest.mark.slow

CODEC_RATE = 24000
LINES_PER_FILE = 4  # 17 rows -> 5 shards, each mixing good and bad rows
LONG_SECONDS = 40.0  # a long clip, under runtime.max_chunk_seconds (120 s): encoded whole

# file_name -> reason; the order is the metadata's row order, good and bad rows interleaved.
BAD = {
    "corrupt.mp3": "decode_error",  # 4 KiB of random bytes
    "truncated.flac": "decode_error",  # the first 60% of a 2 s FLAC
    "empty.wav": "empty_audio",  # a valid header, 0 frames
    "nan_inf.wav": "non_finite",  # float32 with a NaN and an Inf
    "text.wav": "decode_error",  # a text file
    "zero_bytes.wav": "decode_error",  # a 0-byte file
    "missing.wav": "missing_file",  # listed in the metadata, not on disk
    "null_text.wav": "bad_text",  # good audio, text null
    "number_text.wav": "bad_text",  # good audio, text 42
    "rate_1hz.wav": "bad_sample_rate",  # the header says 1 Hz
    "rate_10mhz.wav": "bad_sample_rate",  # the header says 10 MHz
}
GOOD = ("rate_8k.wav", "rate_96k.flac", "stereo_48k.wav", "one_sample.wav", "long.flac", "plain.wav")
ORDER = [
    "plain.wav",
    "corrupt.mp3",
    "rate_8k.wav",
    "truncated.flac",
    "empty.wav",
    "rate_96k.flac",
    "nan_inf.wav",
    "text.wav",
    "stereo_48k.wav",
    "zero_bytes.wav",
    "missing.wav",
    "one_sample.wav",
    "null_text.wav",
    "long.flac",
    "number_text.wav",
    "rate_1hz.wav",
    "rate_10mhz.wav",
]


def _tone(rate: int, frames: int, channels: int = 1) -> np.ndarray:
    t = np.arange(frames) / rate
    mono = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([mono * (1 - 0.5 * c) for c in range(channels)], axis=1)


def _speech(seconds: float, rate: int) -> np.ndarray:
    """Bundled espeak speech, looped to `seconds`."""
    once = calibration_audio(rate, seconds=20.0, clip_seconds=20.0).flatten().numpy()
    return np.tile(once, int(np.ceil(seconds / 20.0)))[: int(seconds * rate)]


def _write_corpus(folder: Path) -> None:
    folder.mkdir()
    sf.write(folder / "plain.wav", _tone(16000, 8000), 16000)
    sf.write(folder / "rate_8k.wav", _tone(8000, 4000), 8000)
    sf.write(folder / "rate_96k.flac", _tone(96000, 48000), 96000)
    sf.write(folder / "stereo_48k.wav", _tone(48000, 36000, channels=2), 48000)
    sf.write(folder / "one_sample.wav", np.array([0.25], np.float32), 16000)
    sf.write(folder / "long.flac", _speech(LONG_SECONDS, 16000), 16000)
    sf.write(folder / "null_text.wav", _tone(16000, 4000), 16000)
    sf.write(folder / "number_text.wav", _tone(16000, 4000), 16000)

    (folder / "corrupt.mp3").write_bytes(np.random.default_rng(0).bytes(4096))
    whole = io.BytesIO()
    sf.write(whole, _tone(16000, 32000), 16000, format="FLAC")
    (folder / "truncated.flac").write_bytes(whole.getvalue()[: int(0.6 * len(whole.getvalue()))])
    sf.write(folder / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    nan_inf = _tone(16000, 4000)
    nan_inf[100], nan_inf[200] = np.nan, np.inf
    sf.write(folder / "nan_inf.wav", nan_inf, 16000, subtype="FLOAT")
    (folder / "text.wav").write_text("this is not audio\n" * 20)
    (folder / "zero_bytes.wav").write_bytes(b"")
    sf.write(folder / "rate_1hz.wav", _tone(16000, 1000), 1)  # libsndfile writes any rate
    sf.write(folder / "rate_10mhz.wav", _tone(16000, 1000), 10_000_000)

    texts = {"null_text.wav": None, "number_text.wav": 42}
    lines = [
        json.dumps({"file_name": name, "text": texts.get(name, f"the words of {name}")})
        for name in ORDER
    ]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_input") / "awkward"
    _write_corpus(folder)
    assert sorted(ORDER) == sorted([*BAD, *GOOD])
    return folder


def _encode(corpus: Path, run_dir: Path, weights: Path, *overrides: str) -> None:
    proc = run_cli(
        [
            "runtime=debug",
            "runtime.max_rows=null",
            "dataset=local_folder",
            f"dataset.path={corpus}",
            f"codec.weights={weights}",
            f"output.lines_per_file={LINES_PER_FILE}",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ]
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]


def _check_run(run_dir: Path, corpus: Path, reasons: dict[str, str]) -> None:
    """Every row of `corpus` once: the ones in `reasons` rejected with that code, the rest written
    with their source duration and the token count of their padded length."""
    arch = arch_dict(compose_cfg(["codec=snac_24khz"]).codec.arch)
    records = read_jsonl(run_dir / "manifest.jsonl")
    header, shards, summary = records[0], records[1:-1], records[-1]
    assert (header["type"], summary["type"]) == ("header", "summary")
    assert {s["type"] for s in shards} == {"shard"}

    # Each shard accounts for its row range, and holds that range's good rows in input order.
    shards.sort(key=lambda s: s["start"])
    assert [(s["start"], s["stop"]) for s in shards] == [
        (i, min(i + LINES_PER_FILE, len(ORDER))) for i in range(0, len(ORDER), LINES_PER_FILE)
    ]
    written = {}
    for s in shards:
        names = ORDER[s["start"] : s["stop"]]
        rows = read_shard(run_dir / s["file"])
        assert [r["id"] for r in rows] == [n for n in names if n not in reasons], s["file"]
        assert s["rows"] == len(rows) and s["rejected"] == sum(n in reasons for n in names)
        assert s["rows"] + s["rejected"] == s["rows_read"] == s["stop"] - s["start"]
        written.update((r["id"], r) for r in rows)

    assert summary["rows_read"] == len(ORDER)
    assert summary["rows_written"] + summary["rows_rejected"] == summary["rows_read"]
    assert summary["rows_written"] == len(written) == len(ORDER) - len(reasons)
    assert summary["rejected_by_reason"] == Counter(reasons.values())

    rejects = read_jsonl(run_dir / "rejects.jsonl")
    assert len(rejects) == len(reasons)  # one record per bad row
    assert {r["id"]: r["reason"] for r in rejects} == reasons
    for r in rejects:
        assert r["row"] == ORDER.index(r["id"]) and r["source"] == "awkward-default-train"
        assert r["detail"], r

    resample = Resampler(CODEC_RATE)
    for name, row in written.items():
        audio, rate = sf.read(corpus / name, dtype="float32", always_2d=True)
        assert row["duration"] == pytest.approx(audio.shape[0] / rate, abs=1e-6), name
        assert row["text"] == f"the words of {name}"
        padded = padded_length(resample(audio, rate).shape[0], pad_multiple(arch))
        assert row["token_lengths"] == token_lengths(padded, arch), name
        assert [len(row[f"snac_layer_{i}"]) for i in (1, 2, 3)] == row["token_lengths"], name


def test_broken_and_awkward_files_are_each_written_or_rejected_once(corpus, weights_dir, tmp_path):
    run_dir = tmp_path / "run"
    _encode(corpus, run_dir, weights_dir("snac_24khz"))
    _check_run(run_dir, corpus, BAD)
    rows = {r["id"]: r for p in (run_dir / "shards").glob("*.jsonl.gz") for r in read_shard(p)}
    # 1 sample pads to one 2048-sample unit; 40 s at 24 kHz (960000 samples) pads to 960512
    assert rows["one_sample.wav"]["token_lengths"] == [1, 2, 4]
    assert rows["long.flac"]["duration"] == LONG_SECONDS
    assert rows["long.flac"]["token_lengths"] == [469, 938, 1876]
    assert rows["stereo_48k.wav"]["duration"] == 0.75
    # 40 s is under the 120 s chunk: encoded whole, its tokens are SNAC.encode's on any CPU.
    assert read_jsonl(run_dir / "manifest.jsonl")[0]["chunking"]["chunk_samples"] > 960512
    model = SNAC.from_pretrained(str(weights_dir("snac_24khz")))
    audio, rate = sf.read(corpus / "long.flac", dtype="float32", always_2d=True)
    with torch.inference_mode():
        whole = model.encode(Resampler(CODEC_RATE)(audio, rate).view(1, 1, -1))
    for i, layer in enumerate(whole, 1):
        np.testing.assert_array_equal(rows["long.flac"][f"snac_layer_{i}"], layer[0].numpy())


def test_length_limits_reject_too_long_and_too_short_after_the_other_checks(
    corpus, weights_dir, tmp_path
):
    """min_samples counts source-rate frames; the other checks come first (empty.wav stays
    empty_audio, rate_1hz.wav's 1000 s stays bad_sample_rate)."""
    run_dir = tmp_path / "run"
    limits = ["runtime.max_duration=30.0", "runtime.min_samples=2"]
    _encode(corpus, run_dir, weights_dir("snac_24khz"), *limits)
    _check_run(run_dir, corpus, {**BAD, "long.flac": "too_long", "one_sample.wav": "too_short"})
    details = {r["id"]: r["detail"] for r in read_jsonl(run_dir / "rejects.jsonl")}
    assert details["long.flac"] == "40.0 s > runtime.max_duration=30.0"
    assert details["one_sample.wav"] == "1 samples < runtime.min_samples=2"
