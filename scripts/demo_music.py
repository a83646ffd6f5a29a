"""The music-like clips of `data/demo_music/`, synthesized with fixed seeds (`make_demo_data.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from demo_audio import Clip, delayed, normalize

# (sample rate, format, channels, seconds) per music clip.  Uncompressed WAV clips are mono and
# short to keep data/demo_music small; stereo goes to FLAC and Ogg.
MUSIC_LAYOUT: tuple[tuple[int, str, int, float], ...] = (
    (32000, "wav", 1, 2.4),
    (44100, "flac", 2, 4.6),
    (48000, "ogg", 1, 3.2),
    (32000, "flac", 1, 2.8),
    (44100, "ogg", 2, 5.0),
    (48000, "flac", 1, 2.2),
    (32000, "ogg", 1, 4.2),
    (44100, "wav", 1, 2.2),
    (48000, "ogg", 2, 3.6),
    (32000, "flac", 2, 3.0),
    (44100, "flac", 1, 3.9),
    (48000, "wav", 1, 2.0),
    (32000, "ogg", 1, 2.6),
    (44100, "ogg", 1, 4.4),
    (48000, "flac", 1, 2.5),
    (32000, "wav", 1, 2.3),
)
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CHORDS: dict[str, tuple[int, ...]] = {
    "major": (0, 4, 7),
    "minor": (0, 3, 7),
    "diminished": (0, 3, 6),
    "sus4": (0, 5, 7),
    "major seventh": (0, 4, 7, 11),
    "minor seventh": (0, 3, 7, 10),
}
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11, 12)


@dataclass(frozen=True)
class Instrument:
    """Additive-synthesis recipe: partial amplitudes, envelope times and inharmonicity."""

    name: str
    partials: tuple[float, ...]
    attack_s: float
    decay_per_s: float
    inharmonic: float = 0.0


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("organ", (1.0, 0.5, 0.25), attack_s=0.03, decay_per_s=0.0),
    Instrument("pluck", (1.0, 0.6, 0.4, 0.25, 0.15), attack_s=0.005, decay_per_s=2.5),
    Instrument("pad", (1.0, 0.3, 0.1), attack_s=0.6, decay_per_s=0.2),
    Instrument("bell", (1.0, 0.7, 0.45, 0.3), attack_s=0.002, decay_per_s=1.2, inharmonic=0.37),
    Instrument("square lead", (1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14), attack_s=0.01, decay_per_s=0.4),
    Instrument("bass", (1.0, 0.8, 0.3), attack_s=0.01, decay_per_s=1.0),
)


def midi_to_hz(note: float) -> float:
    """Equal-tempered frequency of a MIDI note number (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def note_name(midi: int) -> str:
    """Name of a MIDI note's pitch class, e.g. 57 -> 'A'."""
    return NOTE_NAMES[midi % 12]


def render_note(inst: Instrument, hz: float, dur_s: float, rate: int, n_partials: int) -> np.ndarray:
    """Render one note: sum of partials under an attack/exponential-decay/release envelope."""
    t = np.arange(int(dur_s * rate)) / rate
    wave = np.zeros_like(t)
    for k, amp in enumerate(inst.partials[:n_partials], start=1):
        ratio = k * (1.0 + inst.inharmonic * (k - 1) / 10.0)
        if amp > 0 and hz * ratio < rate / 2:
            wave += amp / k**0.3 * np.sin(2 * np.pi * hz * ratio * t)
    env = np.minimum(t / inst.attack_s, 1.0) * np.exp(-inst.decay_per_s * t)
    release = np.clip((dur_s - t) / 0.05, 0.0, 1.0)
    return (wave * env * release).astype(np.float32)


def place(track: np.ndarray, note: np.ndarray, start: int) -> None:
    """Mix ``note`` into ``track`` starting at sample ``start`` (in place, clipped to length)."""
    end = min(start + len(note), len(track))
    track[start:end] += note[: end - start]


def chord_notes(root: int, kind: str) -> list[tuple[int, float]]:
    """(midi, onset fraction) pairs for a block chord: all notes start together."""
    return [(root + step, 0.0) for step in CHORDS[kind]]


def arpeggio_notes(root: int, kind: str) -> list[tuple[int, float]]:
    """(midi, onset fraction) pairs for a two-octave rising arpeggio."""
    steps = [s + 12 * octave for octave in (0, 1) for s in CHORDS[kind]]
    return [(root + step, i / len(steps)) for i, step in enumerate(steps)]


def scale_notes(root: int) -> list[tuple[int, float]]:
    """(midi, onset fraction) pairs for an ascending major scale."""
    return [(root + step, i / len(MAJOR_SCALE)) for i, step in enumerate(MAJOR_SCALE)]


def music_spec(idx: int, rng: np.random.Generator) -> tuple[Instrument, str, list[tuple[int, float]]]:
    """Pick the instrument, description and note list of music clip ``idx``."""
    inst = INSTRUMENTS[idx % len(INSTRUMENTS)]
    low = 36 if inst.name == "bass" else 52
    root = low + int(rng.integers(0, 12))
    kind = sorted(CHORDS)[int(rng.integers(0, len(CHORDS)))]
    pattern = ("chord", "arpeggio", "scale")[idx % 3]
    if pattern == "chord":
        return inst, f"{note_name(root)} {kind} chord", chord_notes(root, kind)
    if pattern == "arpeggio":
        return inst, f"{note_name(root)} {kind} arpeggio", arpeggio_notes(root, kind)
    return inst, f"{note_name(root)} major scale", scale_notes(root)


def render_music(
    notes: list[tuple[int, float]], inst: Instrument, dur_s: float, rate: int, n_partials: int
) -> np.ndarray:
    """Render a note list into a mono track of ``dur_s`` seconds."""
    track = np.zeros(int(dur_s * rate), np.float32)
    for midi, onset in notes:
        start = int(onset * 0.85 * dur_s * rate)
        place(track, render_note(inst, midi_to_hz(midi), dur_s - start / rate, rate, n_partials), start)
    return track


def pan_stereo(mono: np.ndarray, rate: int) -> np.ndarray:
    """Cheap stereo: the right channel is quieter and mixes in a 40 ms "room" reflection."""
    right = 0.6 * mono + 0.25 * delayed(mono, 0.04, rate)
    return np.stack([mono, right], axis=1).astype(np.float32)


def build_music_clips(seed: int = 2024) -> list[Clip]:
    """Synthesize one deterministic music-like clip per MUSIC_LAYOUT entry."""
    rng = np.random.default_rng(seed)
    clips = []
    for idx, (rate, fmt, channels, dur_s) in enumerate(MUSIC_LAYOUT):
        inst, desc, notes = music_spec(idx, rng)
        n_partials = int(rng.integers(2, len(inst.partials) + 1))
        mono = normalize(render_music(notes, inst, dur_s, rate, n_partials), peak=0.7)
        audio = pan_stereo(mono, rate) if channels == 2 else mono
        text = f"{desc}, {n_partials} harmonics{', stereo' if channels == 2 else ''}"
        clips.append(Clip(audio, rate, fmt, text, inst.name))
    return clips
