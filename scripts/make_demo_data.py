"""Generate the small audio datasets bundled with snactok.

Outputs (all paths relative to ``--out-root``, which defaults to the repository root):

* ``data/demo/`` -- a Hugging Face "audiofolder" speech set: 40 espeak-ng clips (1.5-6 s) in
  several languages and voices, written with mixed sample rates (16000, 22050, 24000, 44100,
  48000 Hz), mixed formats (.wav PCM_16, .flac, .mp3, .ogg/vorbis) and a few stereo files, plus
  ``metadata.csv`` with the columns ``file_name,text,speaker``.
* ``data/demo_music/`` -- an audiofolder of 16 synthesized music-like clips (chords, arpeggios,
  scales; 2-5 s) at 32000/44100/48000 Hz as .wav/.flac/.ogg, some stereo, with a
  ``metadata.csv`` of the same columns (``text`` describes the clip, ``speaker`` is an
  "instrument" label).
* ``src/snactok/assets/calibration_speech.flac`` -- about 23 s of mono 24 kHz espeak-ng speech in
  several voices and languages, used to calibrate randomly initialised codec weights.

The two ``data/`` directories are deleted and recreated on every run; in ``src/snactok/assets/``
only the calibration file is (over)written.

System requirements:
    espeak-ng (Debian/Ubuntu: ``apt-get update && apt-get install -y espeak-ng``; tested with 1.51)
    libsndfile >= 1.1 with MP3 and Vorbis support (the one bundled with the ``soundfile`` wheels).

Python requirements: numpy, soundfile, torch, torchaudio.

Usage:
    python scripts/make_demo_data.py [--out-root PATH]

The output is deterministic (fixed seeds, fixed tables) for a given espeak-ng version.  The
decoded audio is reproducible, but .ogg files are not byte-identical across runs because
libsndfile picks a random Ogg stream serial number.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from demo_audio import Clip, delayed, normalize  # scripts/ is on sys.path when this file runs
from demo_music import build_music_clips
from torchaudio.functional import resample as ta_resample

REPO_ROOT = Path(__file__).resolve().parents[1]
ESPEAK_RATE = 22050  # espeak-ng always synthesizes at 22050 Hz
METADATA_FIELDS = ("file_name", "text", "speaker")

# (voice, transcript) for data/demo; the voice string is also the "speaker" label.
DEMO_UTTERANCES: tuple[tuple[str, str], ...] = (
    ("en", "The quick brown fox jumps over the lazy dog."),
    ("en+f3", "Please call Stella, and ask her to bring these things from the store."),
    ("en+m3", "It is a bright, cold day in April."),
    ("en", "Open the window, please."),
    ("en+f3", "Numbers like forty-two, seven, and nineteen are easy to read."),
    ("en+m3", "She sells sea shells by the sea shore."),
    ("en-us", "Where did you put the keys?"),
    ("en-us+f2", "The meeting starts at nine, so don't be late."),
    ("en-us", "A rainbow appears when sunlight meets the rain."),
    ("en-us+f2", "Could you turn the music down a little?"),
    ("de", "Guten Morgen, wie geht es dir heute?"),
    ("de+m3", "Der Zug nach Berlin fährt um acht Uhr ab."),
    ("de+f2", "Ich trinke gern Kaffee mit Milch."),
    ("de", "Heute scheint die Sonne, aber es ist kalt."),
    ("de+m3", "Das Buch liegt auf dem Tisch."),
    ("fr", "Bonjour, comment allez-vous ?"),
    ("fr+f3", "Le chat dort sur le canapé depuis ce matin."),
    ("fr+m3", "Nous allons au marché samedi, avec mes amis."),
    ("fr", "Il fait beau aujourd'hui."),
    ("fr+f3", "La bibliothèque ferme à dix-huit heures."),
    ("es", "Buenos días, ¿cómo estás?"),
    ("es+m3", "El perro corre por el parque con su pelota."),
    ("es+f2", "Mañana vamos a la playa, si no llueve."),
    ("es", "Me gusta leer libros por la noche."),
    ("es+f2", "La cena está lista."),
    ("it", "Buongiorno, come stai?"),
    ("it+f2", "Il treno per Roma parte alle dieci."),
    ("it+m3", "Mi piace la pizza con il basilico."),
    ("it", "Domani andiamo al mare, se fa bel tempo."),
    ("it+f2", "La chiave è sotto il tappeto."),
    ("nl", "Goedemorgen, hoe gaat het met je?"),
    ("nl+f3", "De fiets staat naast het huis."),
    ("pt", "Bom dia, tudo bem com você?"),
    ("pt+m3", "O café está muito quente."),
    ("sv", "God morgon, hur mår du?"),
    ("sv+f2", "Katten sover i solen."),
    ("en+f2", "Seven, eight, nine, ten."),
    ("en-us+m3", "The weather forecast says rain, then sun, then rain again."),
    ("en+f2", "Hello there."),
    ("en-us+m3", "Thank you for listening to this short demonstration."),
)

# Different sentences for the calibration file.
CALIBRATION_UTTERANCES: tuple[tuple[str, str], ...] = (
    ("en+m3", "Calibration starts with a calm and steady voice."),
    ("en-us+f3", "Bright vowels and sharp consonants fill the spectrum."),
    ("de+f2", "Die kleine Katze spielt mit einem roten Ball."),
    ("fr+m3", "Le soleil se couche derrière les montagnes."),
    ("es+f3", "Los niños cantan en la plaza del pueblo."),
    ("it+m3", "La primavera porta fiori colorati."),
    ("en+f2", "Zebras, violins, and shiny fish."),
    ("pt+f2", "O barco navega devagar pelo rio."),
)

# Per-format sample-rate cycles; uncompressed WAV stays at low rates to keep the set small.
DEMO_FORMAT_RATES: dict[str, tuple[int, ...]] = {
    "wav": (16000, 22050, 24000, 16000, 22050),
    "flac": (24000, 44100, 16000, 48000, 22050),
    "mp3": (44100, 48000, 22050, 24000, 16000),
    "ogg": (48000, 16000, 44100, 22050, 24000),
}
DEMO_STEREO = frozenset({3, 10, 21, 32})  # one clip of each format: ogg, mp3, flac, wav
MIN_SPEECH_S, MAX_SPEECH_S = 1.5, 6.0
CALIBRATION_RATE = 24000
CALIBRATION_GAP_S = 0.3
CALIBRATION_RANGE_S = (20.0, 30.0)

# ----------------------------------------------------------------------------- speech


def require_espeak() -> str:
    """Return the espeak-ng executable path or exit with an installation hint."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng not found; install it with: apt-get install -y espeak-ng")
    return exe


def espeak(exe: str, voice: str, text: str, speed: int, pitch: int) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng and return mono float32 audio at 22050 Hz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "tts.wav"
        cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav_path), text]
        subprocess.run(cmd, check=True, capture_output=True)
        audio, rate = sf.read(wav_path, dtype="float32")
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"unexpected espeak-ng sample rate {rate}")
    return audio


def trim_silence(
    audio: np.ndarray, rate: int, threshold: float = 0.01, pad_s: float = 0.08
) -> np.ndarray:
    """Cut leading/trailing near-silence, keeping ``pad_s`` seconds of margin on each side."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    pad = int(pad_s * rate)
    return audio[max(loud[0] - pad, 0) : loud[-1] + pad + 1]


def pad_to(audio: np.ndarray, frames: int) -> np.ndarray:
    """Zero-pad ``audio`` symmetrically to at least ``frames`` samples."""
    missing = frames - len(audio)
    if missing <= 0:
        return audio
    return np.pad(audio, (missing // 2, missing - missing // 2))


def speak_clip(exe: str, voice: str, text: str, speed: int, pitch: int) -> np.ndarray:
    """Synthesize a 1.5-6 s utterance, speeding up if it is too long and padding if too short."""
    for attempt in range(6):
        audio = trim_silence(espeak(exe, voice, text, speed + 25 * attempt, pitch), ESPEAK_RATE)
        if len(audio) <= MAX_SPEECH_S * ESPEAK_RATE:
            return pad_to(audio, int(MIN_SPEECH_S * ESPEAK_RATE))
    raise RuntimeError(f"could not fit {text!r} into {MAX_SPEECH_S} s")


def resample(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono float32 audio with torchaudio's windowed-sinc resampler."""
    if src_rate == dst_rate:
        return audio
    tensor = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    return ta_resample(tensor, src_rate, dst_rate).numpy()


def fake_stereo(mono: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Make two slightly different channels: the right one has a faint echo, less gain and noise.

    The channels stay highly correlated, so a down-mix does not comb-filter the speech.
    """
    right = 0.8 * mono + 0.08 * delayed(mono, 0.03, rate)
    right = right + rng.normal(0.0, 0.002, len(mono)).astype(np.float32)
    return np.stack([mono, right], axis=1).astype(np.float32)


def build_speech_clips(exe: str, seed: int = 1234) -> list[Clip]:
    """Render DEMO_UTTERANCES with varied speed/pitch, rates, formats and channel counts."""
    rng = np.random.default_rng(seed)
    formats = tuple(DEMO_FORMAT_RATES)
    clips = []
    for idx, (voice, text) in enumerate(DEMO_UTTERANCES):
        speed, pitch = int(rng.integers(110, 171)), int(rng.integers(30, 71))
        fmt = formats[idx % len(formats)]
        rate = DEMO_FORMAT_RATES[fmt][(idx // len(formats)) % len(DEMO_FORMAT_RATES[fmt])]
        mono = resample(speak_clip(exe, voice, text, speed, pitch), ESPEAK_RATE, rate)
        mono = normalize(mono, peak=float(rng.uniform(0.5, 0.9)))
        audio = fake_stereo(mono, rate, rng) if idx in DEMO_STEREO else mono
        clips.append(Clip(audio, rate, fmt, text, voice))
    return clips


def build_calibration(exe: str, seed: int = 4321) -> np.ndarray:
    """Concatenate CALIBRATION_UTTERANCES (mono, 24 kHz) separated by short silences."""
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(CALIBRATION_GAP_S * CALIBRATION_RATE), np.float32)
    pieces = [gap]
    for voice, text in CALIBRATION_UTTERANCES:
        speed, pitch = int(rng.integers(150, 181)), int(rng.integers(35, 66))
        speech = trim_silence(espeak(exe, voice, text, speed, pitch), ESPEAK_RATE)
        speech = normalize(resample(speech, ESPEAK_RATE, CALIBRATION_RATE), peak=0.7)
        pieces += [speech, gap]
    audio = np.concatenate(pieces)
    seconds = len(audio) / CALIBRATION_RATE
    if not CALIBRATION_RANGE_S[0] <= seconds <= CALIBRATION_RANGE_S[1]:
        raise RuntimeError(f"calibration audio is {seconds:.1f} s, expected {CALIBRATION_RANGE_S}")
    return audio


# ----------------------------------------------------------------------------- output


def write_audio(path: Path, audio: np.ndarray, rate: int) -> None:
    """Write ``audio`` with a codec chosen from the file suffix."""
    subtype = {".wav": "PCM_16", ".flac": "PCM_16", ".ogg": "VORBIS", ".mp3": "MPEG_LAYER_III"}
    # Strongest FLAC compression; for the lossy codecs keep libsndfile's default quality.
    extra = {"compression_level": 1.0} if path.suffix == ".flac" else {}
    sf.write(path, audio, rate, subtype=subtype[path.suffix], **extra)


def write_audiofolder(out_dir: Path, clips: list[Clip]) -> None:
    """(Re)create ``out_dir`` with clip_NNN.<fmt> files and a metadata.csv."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    rows = []
    for idx, clip in enumerate(clips):
        name = f"clip_{idx:03d}.{clip.fmt}"
        write_audio(out_dir / name, clip.audio, clip.sample_rate)
        rows.append({"file_name": name, "text": clip.text, "speaker": clip.speaker})
    with open(out_dir / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METADATA_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def summarize(paths: list[Path]) -> str:
    """Decode every file with soundfile and summarise counts by format/rate/channels and size."""
    counts: Counter[str] = Counter()
    total_s = 0.0
    for path in sorted(paths):
        info = sf.info(path)
        audio, _ = sf.read(path, dtype="float32", always_2d=True)
        if audio.shape[1] != info.channels or not np.isfinite(audio).all():
            raise RuntimeError(f"bad decode: {path}")
        total_s += len(audio) / info.samplerate
        counts[f"{path.suffix[1:]}/{info.samplerate}Hz/{info.channels}ch"] += 1
    size_kb = sum(path.stat().st_size for path in paths) / 1024
    lines = [f"  {key}: {n}" for key, n in sorted(counts.items())]
    header = f"{len(paths)} files, {total_s:.1f} s audio, {size_kb:.0f} KiB"
    return "\n".join([header, *lines])


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT, help="repository root to write into")
    return parser.parse_args()


def main() -> None:
    """Build all three outputs and print a decoded summary of each."""
    out_root = parse_args().out_root.resolve()
    exe = require_espeak()
    demo_dir, music_dir = out_root / "data" / "demo", out_root / "data" / "demo_music"
    calib_path = out_root / "src" / "snactok" / "assets" / "calibration_speech.flac"

    write_audiofolder(demo_dir, build_speech_clips(exe))
    write_audiofolder(music_dir, build_music_clips())
    calib_path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(calib_path, build_calibration(exe), CALIBRATION_RATE)

    for label, paths in (
        ("data/demo", [p for p in demo_dir.iterdir() if p.suffix != ".csv"]),
        ("data/demo_music", [p for p in music_dir.iterdir() if p.suffix != ".csv"]),
        ("calibration", [calib_path]),
    ):
        print(f"{label}: {summarize(paths)}")


if __name__ == "__main__":
    main()
