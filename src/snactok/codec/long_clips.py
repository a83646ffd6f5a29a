"""Long clips encoded in overlapping parts, so memory stays bounded whatever a clip's length.

SNAC's encoder is local: convolutions with zero "same" padding, strided downsampling, and at 32 and
44.1 kHz attention over non-overlapping windows aligned to frame 0. A part that starts and ends on a
pad unit (`codec.layout.pad_multiple`) therefore sees the same stride phases, attention windows and
quantizer pooling as the whole clip, and the encoder frames it keeps equal the whole clip's as long
as the part reaches past them by the encoder's receptive field, up to rounding. The field is measured
here with autograd, not written down: it is one attention window plus the convolutions' reach at
32/44.1 kHz, which no rule of thumb gets right.

Up to rounding: a part is a shorter input, and a convolution kernel may order its sums by the
input's length. Measured: oneDNN's gemm convolutions on an AMD EPYC (AVX2) do, and 4 of 3,696
tokens of a 45 s clip in 10 s parts differed from the whole-clip encode; on an Intel Xeon
(AVX-512) the chunked clip was exact. The verifier reports what a run's chunked clips get.

    rf = receptive_field(arch, cache_dir)
    parts = plan_parts(len(wave), pad_multiple(arch), chunk_samples, overlap_for(arch, rf))
    flat = encode_in_parts(encoder, wave, parts)  # == torch.cat(SNAC.encode(wave), dim=1)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from snac import SNAC

from snactok.codec.encoder import BatchEncoder
from snactok.codec.layout import pad_multiple, padded_length
from snactok.codec.weights import arch_dict
from snactok.output.files import write_bytes_atomic

RF_RECIPE = 1  # bump when the measurement changes what it returns


@dataclass(frozen=True)
class Part:
    """One encoder call: the input span [start, stop) and the span [keep_start, keep_stop) whose
    tokens it contributes, in samples of the zero-padded clip, all multiples of the pad unit."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def receptive_field(arch: Any, cache_dir: Path | None = None) -> tuple[int, int]:
    """Samples left of a pad-unit block's start and right of its end that its latent frames read.

    Measured on a randomly initialised encoder: only the structure decides which inputs a frame
    reads. It takes seconds (measured in docs/reliability.md, "Long audio: chunks"), so with `cache_dir`
    the answer is kept on disk, keyed by the arch and the snac version.
    """
    arch = arch_dict(arch)
    path = _cache_path(arch, cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file():
        cached = json.loads(path.read_text())
        return cached["left"], cached["right"]
    left, right = _measure(arch)
    if path is not None:
        _write_atomic(path, {"left": left, "right": right, "arch": arch})
    return left, right


def _measure(arch: dict[str, Any]) -> tuple[int, int]:
    """Grow the context around a middle block until the gradient's support stays off both ends."""
    unit = pad_multiple(arch)
    # Callable from inside inference_mode or no_grad: the weights must be built outside them too.
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = SNAC(**arch).encoder.requires_grad_(False)
        margin = 1  # pad units either side of the block
        while True:
            lo, hi = _support(encoder, unit, margin, math.prod(arch["encoder_rates"]))
            if lo > 0 and hi < (2 * margin + 1) * unit:
                return margin * unit - lo, hi - (margin + 1) * unit
            margin *= 2


def _support(encoder: torch.nn.Module, unit: int, margin: int, hop: int) -> tuple[int, int]:
    """[first, last + 1) of the input samples with a non-zero gradient from the middle unit's frames.

    Float32 is enough: the smallest edge gradients seen are ~1e-13, far above underflow, and
    float64 gives the same support.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, (2 * margin + 1) * unit, generator=gen).requires_grad_(True)
    frames = encoder(x)[..., margin * unit // hop : (margin + 1) * unit // hop]
    # A random projection, so no channels cancel out.
    (frames * torch.randn(frames.shape, generator=gen)).sum().backward()
    touched = x.grad[0, 0].nonzero()[:, 0]
    return int(touched[0]), int(touched[-1]) + 1


def _cache_path(arch: dict[str, Any], cache_dir: Path) -> Path:
    from importlib import metadata

    recipe = {"arch": arch, "snac": metadata.version("snac"), "recipe": RF_RECIPE}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"receptive_field-{arch['sampling_rate']}hz-{key}.json"


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(data, indent=2).encode())  # concurrent writers agree


def overlap_for(arch: Any, rf: tuple[int, int]) -> int:
    """Context each side of a kept span, in samples: the wider side of `rf`, up to whole pad units
    so that parts stay aligned to the whole clip's stride phases and attention windows."""
    unit = pad_multiple(arch)
    return math.ceil(max(rf) / unit) * unit


def plan_parts(num_samples: int, multiple: int, chunk_samples: int, overlap: int) -> list[Part]:
    """Cut a clip of `num_samples` into parts of at most `chunk_samples` input samples.

    Kept spans tile [0, padded length) in order; each part reaches `overlap` past its kept span on
    both sides, clipped at the clip's ends. A clip that fits in one chunk is one part, whose tokens
    are the whole clip's by definition.
    """
    _check_plan(multiple, chunk_samples, overlap)
    padded = padded_length(num_samples, multiple)
    usable = chunk_samples // multiple * multiple
    parts: list[Part] = []
    keep_start = 0
    while True:
        start = max(0, keep_start - overlap)
        if padded - start <= usable:
            parts.append(Part(start, padded, keep_start, padded))
            return parts
        keep_stop = start + usable - overlap
        parts.append(Part(start, keep_stop + overlap, keep_start, keep_stop))
        keep_start = keep_stop


def _check_plan(multiple: int, chunk_samples: int, overlap: int) -> None:
    if multiple <= 0 or overlap < 0 or overlap % multiple:
        raise ValueError(
            f"overlap={overlap} must be a non-negative multiple of the pad unit {multiple}; "
            "get it from overlap_for(arch, receptive_field(arch))"
        )
    need = 2 * overlap + multiple
    if chunk_samples // multiple * multiple < need:
        raise ValueError(
            f"chunk_samples={chunk_samples} cannot hold an overlap of {overlap} on each side of one "
            f"pad unit of {multiple}; use chunk_samples >= {need} (2 * overlap + pad unit)"
        )


def part_waves(wave: torch.Tensor, parts: list[Part]) -> list[torch.Tensor]:
    """Each part's input from a 1-D clip, zero-padded past the clip's end as SNAC pads it."""
    pieces = [wave[p.start : p.stop] for p in parts]
    return [F.pad(piece, (0, p.length - len(piece))) for piece, p in zip(pieces, parts, strict=True)]


def encode_in_parts(
    encoder: BatchEncoder, wave: torch.Tensor, parts: list[Part], **how: Any
) -> np.ndarray:
    """The whole clip's flat codes (layer 1, then 2, ...), encoding it part by part; `how` is
    `frames_in_parts`' `max_batch` and `step`.

    The quantizer runs once over the joined frames (`frames_in_parts`), as `SNAC.encode` runs it.
    Joining each part's tokens instead is worse: the quantizer's 1x1 convolutions round
    differently at other lengths, which flipped 95 of 8,701 tokens of the demo clips in 1 s
    chunks, far from any seam.
    """
    return encoder.quantize(frames_in_parts(encoder, wave, parts, **how)[None])[0]


def frames_in_parts(
    encoder: BatchEncoder,
    wave: torch.Tensor,
    parts: list[Part],
    max_batch: int = 1,
    step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """The whole clip's encoder frames (D, frames), joined from each part's kept span. Parts of
    one length go `max_batch` at a time; `step` is called after each group (the worker counts it
    as progress, so an hour-long clip does not look stuck)."""
    hop = math.prod(encoder.arch["encoder_rates"])
    waves = part_waves(wave, parts)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, part in enumerate(parts):
        by_length[part.length].append(i)
    kept: list[torch.Tensor | None] = [None] * len(parts)
    for indices in by_length.values():
        for first in range(0, len(indices), max_batch):
            group = indices[first : first + max_batch]
            # Not the pinned staging buffers: they may be reused before this copy has run.
            batch = torch.stack([waves[i] for i in group])
            frames = encoder.latents(batch)
            for row, i in enumerate(group):
                part = parts[i]
                lo, hi = (part.keep_start - part.start) // hop, (part.keep_stop - part.start) // hop
                kept[i] = frames[row, :, lo:hi]
            if step is not None:
                step()
    return torch.cat(kept, dim=-1)
