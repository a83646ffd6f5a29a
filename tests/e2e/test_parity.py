"""Token parity with the reference method, on broadly generated audio, through the real pipeline.

The reference is computed here, independently of snactok's code, as users run it: soundfile, the
channel mean, `torchaudio.functional.resample` with its defaults, and `SNAC.encode` on a
(1, 1, T) tensor of a model from `SNAC.from_pretrained`, with torch's default backends, on this
machine. Nothing is compared against stored numbers, so the test holds on any CPU.

Each codec runs twice, with two independently calibrated random weight sets: the fixture's
(seed 0, codebook jitter 1e-3, near-duplicate codes that flip on 1-ulp differences) and a coarser
one (seed 7, jitter 0.05). The first run is compiled (the default fast path), the second eager.
`runtime.verify_fraction=1` makes the run check every row itself, and the test holds its report
to what it measures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from helpers import CODECS, ROOT, compose_cfg, run_cli, run_rows
from snac import SNAC

from snactok.codec.layout import pad_multiple
from snactok.codec.weights import arch_dict, random_snac, save_pretrained

pytestmark = pytest.mark.slow

WEIGHT_SETS = {"seed0-jitter1e-3": (0, 1e-3), "seed7-jitter0.05": (7, 0.05)}


def _arch(codec: str) -> dict:
    return arch_dict(compose_cfg([f"codec={codec}"]).codec.arch)


def _demo(name: str) -> tuple[np.ndarray, int]:
    return sf.read(ROOT / "data" / "demo" / name, dtype="float32", always_2d=True)


def _speech(rate: int, seconds: float, offset: int = 0) -> np.ndarray:
    """Demo speech (several voices and languages) joined, resampled to `rate`, mono."""
    waves = []
    for i in range(offset, offset + 6):
        audio, sr = _demo(_demo_name(i))
        waves.append(AF.resample(torch.from_numpy(audio.mean(axis=1)), sr, rate).numpy())
    joined = np.concatenate(waves)
    return joined[: int(seconds * rate)]


def _demo_name(i: int) -> str:
    with open(ROOT / "data" / "demo" / "metadata.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))[i]["file_name"]


def _pluck(rate: int, seconds: float, freq: float, seed: int) -> np.ndarray:
    """Karplus-Strong: a noise burst through a decaying delay line."""
    rng = np.random.default_rng(seed)
    period = max(2, int(rate / freq))
    buf = list(rng.uniform(-0.5, 0.5, period))
    out = np.empty(int(seconds * rate), np.float32)
    for n in range(len(out)):
        out[n] = buf[n % period]
        buf[n % period] = 0.996 * 0.5 * (buf[n % period] + buf[(n + 1) % period])
    return out


def clip_set(codec_rate: int, unit: int) -> list[tuple[str, np.ndarray, int, str]]:
    """(name, (frames, channels) audio, file rate, subtype): voices, speeds and pitches, gains with
    clipping, noise, tones, sweeps, plucks, near-silence, lengths either side of the pad unit,
    input rates from 8 to 48 kHz, mono and stereo."""
    rng = np.random.default_rng(codec_rate)
    clips = []
    speech = _speech(codec_rate, 6.0)

    def add(name, audio, rate, subtype="FLOAT"):
        audio = np.asarray(audio, np.float32)
        clips.append((name, audio[:, None] if audio.ndim == 1 else audio, rate, subtype))

    for i in (1, 5, 10, 17, 26, 33):  # voices of the demo set in their own rates and formats
        audio, sr = _demo(_demo_name(i))
        add(f"voice{i}", audio[: int(1.2 * sr)], sr, "PCM_16")
    # the same speech declared at another rate: faster and higher, slower and lower
    add("fast_high", speech[: int(0.9 * codec_rate)], int(codec_rate * 1.25))
    add("slow_low", speech[: int(0.9 * codec_rate)], int(codec_rate * 0.8))
    for db in (-12, -6, 6, 12):  # +12 dB clips: PCM_16 stores it clipped
        add(
            f"gain{db:+d}dB", np.clip(speech[:codec_rate] * 10 ** (db / 20), -1, 1), codec_rate, "PCM_16"
        )
    t = np.arange(int(0.8 * codec_rate)) / codec_rate
    add("noise", 0.3 * rng.standard_normal(len(t)), codec_rate)
    add("tone440", 0.5 * np.sin(2 * np.pi * 440 * t), codec_rate)
    add("sweep", 0.5 * np.sin(2 * np.pi * (50 * t + 0.5 * (codec_rate / 3) * t**2 / t[-1])), codec_rate)
    add("pluck", _pluck(codec_rate, 0.8, 196.0, 1), codec_rate)
    add("near_silence", 1e-4 * rng.standard_normal(len(t)), codec_rate)
    add("digital_silence", np.zeros(unit // 2), codec_rate)
    for n in (1, unit - 1, unit, unit + 1, 2 * unit - 1, 2 * unit + 1, 3 * unit - 5):
        add(f"len{n}", speech[2000 : 2000 + n], codec_rate)
    for rate in (8000, 11025, 16000, 22050, 32000, 44100, 48000):
        mono = AF.resample(
            torch.from_numpy(speech[codec_rate : 2 * codec_rate]), codec_rate, rate
        ).numpy()
        add(f"rate{rate}", mono, rate, "PCM_16")
        if rate in (16000, 48000):
            stereo = np.stack([mono, 0.7 * mono[::-1] + 0.05 * rng.standard_normal(len(mono))], 1)
            add(f"rate{rate}_stereo", stereo, rate, "PCM_24")
    return clips


def write_folder(folder: Path, clips: list) -> list[str]:
    folder.mkdir(parents=True)
    names = []
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text"])
        for name, audio, rate, subtype in clips:
            fmt = "FLAC" if subtype == "PCM_24" else "WAV"
            file = f"{name}.{fmt.lower()}"
            sf.write(folder / file, audio, rate, subtype=subtype, format=fmt)
            writer.writerow([file, name])
            names.append(file)
    return names


def reference_tokens(path: Path, model: SNAC, rate: int) -> list[list[int]]:
    """The reference method, written out here rather than taken from snactok."""
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = torch.from_numpy(audio.mean(axis=1))
    if sr != rate:
        mono = AF.resample(mono, sr, rate)
    with torch.inference_mode():
        codes = model.encode(mono.view(1, 1, -1))
    return [c[0].tolist() for c in codes]


@pytest.fixture(scope="module")
def weight_sets(tmp_path_factory, weights_dir):
    def get(codec: str, name: str) -> Path:
        seed, jitter = WEIGHT_SETS[name]
        if seed == 0:
            return weights_dir(codec)
        target = tmp_path_factory.getbasetemp() / f"parity-{codec}-{name}"
        if not target.exists():
            save_pretrained(random_snac(_arch(codec), seed, jitter), _arch(codec), target)
        return target

    return get


@pytest.mark.parametrize("weights", list(WEIGHT_SETS))
@pytest.mark.parametrize("codec", CODECS)
def test_pipeline_tokens_equal_single_clip_snac_encode(codec, weights, weight_sets, tmp_path):
    arch = _arch(codec)
    rate = arch["sampling_rate"]
    clips = clip_set(rate, pad_multiple(arch))
    names = write_folder(tmp_path / "audio", clips)
    wdir = weight_sets(codec, weights)
    compiled = weights == "seed0-jitter1e-3"
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            f"codec={codec}",
            f"codec.weights={wdir}",
            "dataset=local_folder",
            f"dataset.path={tmp_path / 'audio'}",
            "runtime=cpu",
            f"runtime.compile={str(compiled).lower()}",
            "runtime.verify_fraction=1",
            "output.lines_per_file=16",
            "wandb.mode=disabled",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {Path(r["id"]).name: r for r in run_rows(run_dir)}
    assert sorted(rows) == sorted(names)  # nothing rejected, nothing lost
    model = SNAC.from_pretrained(str(wdir))
    total = differ = 0
    bad = []
    for name in names:
        want = reference_tokens(tmp_path / "audio" / name, model, rate)
        got = [rows[name][f"snac_layer_{i + 1}"] for i in range(len(want))]
        assert [len(g) for g in got] == [len(w) for w in want], name
        n = sum(int((np.array(g) != np.array(w)).sum()) for g, w in zip(got, want, strict=True))
        total += sum(len(w) for w in want)
        differ += n
        if n:
            bad.append((name, n))
    assert total > 1000
    assert differ == 0, f"{differ} of {total} tokens differ from SNAC.encode: {bad}"
    summary = json.loads((run_dir / "manifest.jsonl").read_text().splitlines()[-1])
    assert summary["verify"] | {"mismatched_rows": None} == {
        "clips": len(names),
        "tokens": total,
        "tokens_equal": total,
        "fraction_equal": 1.0,
        "mismatched_rows": None,
    }
    worker = summary["workers"]["0"]
    assert worker["path"] == ("compiled" if compiled else "eager"), worker
    assert worker["startup_check"]["passed"] is True and not worker["startup_check"]["failed"]
    log = proc.stdout + proc.stderr
    assert f"verified {len(names)} clips: 100.000% of tokens equal single-clip SNAC.encode" in log
