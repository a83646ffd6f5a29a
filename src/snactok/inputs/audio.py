"""Decoding and resampling one row's audio: bytes or a path in, mono float32 at the codec rate out.

soundfile (libsndfile) reads wav, flac, ogg and mp3; PyAV takes what it cannot (m4a/aac, webm).
Anything wrong with a row raises `Rejected` with a short fixed reason code, so the reader can
count it and go on.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np
import torch

MIN_RATE, MAX_RATE = 1000, 768_000  # Hz; anything outside is a corrupt header


class Rejected(Exception):
    """A row that cannot be encoded. `reason` is one of a fixed set of codes."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode(value: Any) -> tuple[np.ndarray, int]:
    """An `Audio(decode=False)` value ({bytes, path}) or a path -> ((frames, channels) float32, rate)."""
    data, path = bytes_or_path(value)
    if data is None:
        if not path or not os.path.exists(path):
            raise Rejected("missing_file", f"no such file: {path!r}")
        if os.path.getsize(path) == 0:
            raise Rejected("decode_error", f"0-byte file: {path!r}")
    elif len(data) == 0:
        raise Rejected("decode_error", "0 bytes of audio")
    errors = []
    for reader in (_read_soundfile, _read_av):
        try:
            return reader(data, path)
        except Exception as err:  # each library has its own error types
            errors.append(f"{reader.__name__[6:]}: {err}")
    raise Rejected("decode_error", "; ".join(errors)[:500])


def bytes_or_path(value: Any) -> tuple[bytes | None, str | None]:
    if isinstance(value, str):
        return None, value
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    raise Rejected("decode_error", f"audio value of type {type(value).__name__} is not bytes or a path")


def _read_soundfile(data: bytes | None, path: str | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(
        io.BytesIO(data) if data is not None else path, dtype="float32", always_2d=True
    )
    return audio, rate


def _read_av(data: bytes | None, path: str | None) -> tuple[np.ndarray, int]:
    import av

    with av.open(io.BytesIO(data) if data is not None else path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        chunks = [
            out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)
        ]
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
        rate = stream.rate
    if not chunks:
        return np.zeros((0, 1), np.float32), rate
    return np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False), rate


def downmix(audio: np.ndarray) -> torch.Tensor:
    """(frames, channels) -> mono float32 by the channel mean, as a contiguous 1-D tensor."""
    return torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1, dtype=np.float32)))


class Resampler:
    """Mono down-mix + `torchaudio.functional.resample` with its defaults, to one target rate.

    The reference's own call, not `torchaudio.transforms.Resample`: the transform builds its
    kernel in float64 and the function in float32, and their outputs differ in the last bits.
    The function builds its sinc kernel on every call, which for 16 kHz -> 44.1 kHz costs ~30x
    the resampling of a 0.25 s clip; here each source rate's kernel is built once, by the
    function's own two steps, so the output is the same tensor bit for bit (tests/unit/inputs/test_audio_sources.py).
    """

    def __init__(self, target_rate: int):
        self.target_rate = target_rate
        self._kernels: dict[int, tuple[torch.Tensor, int]] = {}

    def __call__(self, audio: np.ndarray, rate: int) -> torch.Tensor:
        from torchaudio.functional.functional import _apply_sinc_resample_kernel

        mono = downmix(audio)
        if rate == self.target_rate:
            return mono
        gcd = math.gcd(rate, self.target_rate)
        with torch.inference_mode():
            kernel, width = self._kernel(rate, gcd)
            return _apply_sinc_resample_kernel(mono, rate, self.target_rate, gcd, kernel, width)

    def _kernel(self, rate: int, gcd: int) -> tuple[torch.Tensor, int]:
        """`torchaudio.functional.resample`'s kernel for `rate`, with its defaults (width 6,
        rolloff 0.99, sinc_interp_hann), for float32 on the CPU."""
        if rate not in self._kernels:
            from torchaudio.functional.functional import _get_sinc_resample_kernel

            self._kernels[rate] = _get_sinc_resample_kernel(
                rate, self.target_rate, gcd, 6, 0.99, "sinc_interp_hann", None, "cpu", torch.float32
            )
        return self._kernels[rate]


def check_audio(audio: np.ndarray, rate: int, min_samples: int, max_duration: float | None) -> None:
    """Reject what cannot or should not be encoded; `audio` is (frames, channels) at `rate`."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise Rejected("bad_sample_rate", f"{rate} Hz is outside {MIN_RATE}..{MAX_RATE}")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise Rejected("empty_audio", "0 samples")
    if not np.isfinite(audio).all():
        raise Rejected("non_finite", f"{int((~np.isfinite(audio)).sum())} NaN/Inf samples")
    if audio.shape[0] < min_samples:
        raise Rejected("too_short", f"{audio.shape[0]} samples < runtime.min_samples={min_samples}")
    duration = audio.shape[0] / rate
    if max_duration is not None and duration > max_duration:
        raise Rejected("too_long", f"{duration:.1f} s > runtime.max_duration={max_duration}")
