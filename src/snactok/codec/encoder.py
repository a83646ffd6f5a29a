"""Encoding with a loaded SNAC: the device's numerics, the reference, the batched fast path and
the start-up check that holds one to the other. (Where weights come from and how they are loaded:
`codec/weights.py`; the token and padding arithmetic: `codec/layout.py`.)

The reference for every token is single-clip `SNAC.encode` with torch's default backends
(`Reference`). The fast path (`BatchEncoder`) groups clips of one padded length: SNAC right-pads
every clip to a multiple of `hop_length * lcm(vq_strides[0], attn_window_size or 1)`, so a clip
in a group gets exactly the input it gets alone. On CPU each clip still goes through the encoder
alone (oneDNN rounds a batch differently, and batching was slower); on CUDA a group is one batch
of a fixed shape per padded length, so which clips share it cannot change a token.
`self_check` compares the fast path with the reference before a worker's first batch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from snac import SNAC

from snactok.codec.layout import pad_multiple, padded_length
from snactok.codec.weights import calibration_audio

log = logging.getLogger(__name__)


# oneDNN's gemm-based strided convolutions round differently at each intra-op thread count on AVX2
# CPUs (measured on an AMD EPYC: 1, 3, 4, 8, 16 and 48 threads each differ from 2, in 2% of tokens
# with near-duplicate codes), and at one thread torch sends 1x1 convolutions to another kernel.
# Every process whose arithmetic reaches a token (readers' resampling, encoding, the reference)
# runs torch at this count, torch's default on a 2-core machine. So tokens never depend on the
# number of workers, the cores of the machine or `runtime.cpu_threads`.
CPU_THREADS = 2


def set_cpu_numerics() -> None:
    """Torch's default backends (oneDNN on) at CPU_THREADS intra-op threads."""
    torch.set_num_threads(CPU_THREADS)


def prepare_device(device: str, tf32: bool | None = None) -> torch.device:
    """Per-process torch settings for one device worker.

    `tf32=None` keeps torch's defaults, which are the reference's: on CUDA that is TF32 in cuDNN
    convolutions (on by default) and none in matmuls. True or False sets both, and then tokens
    differ from a default `SNAC.encode` (the verifier, which runs in the same process, says by
    how much only against the same settings).
    """
    dev = torch.device(device)
    set_cpu_numerics()
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        if tf32 is not None:
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
        # torch's default, stated: autotuning would pick algorithms by timing, run to run.
        torch.backends.cudnn.benchmark = False
    return dev


def flat_codes(codes: Sequence[torch.Tensor]) -> torch.Tensor:
    """SNAC's per-layer (B, T_layer) codes as one (B, tokens) int16 tensor, layer 1 first."""
    return torch.cat(list(codes), dim=1).to(torch.int16)  # codebook_size 4096 < 2**15


class Reference:
    """The method users run: `SNAC.encode` on one (1, 1, T) clip, eager, the model as
    `SNAC.from_pretrained` returns it, torch's default backends on the device."""

    def __init__(self, model: SNAC, device: torch.device):
        self.model = model.to(device)
        self.device = device

    @torch.inference_mode()
    def tokens(self, wave: torch.Tensor) -> np.ndarray:
        """1-D float32 clip at the codec rate -> flat codes (layer 1, then 2, ...), int16."""
        codes = self.model.encode(wave.to(self.device).view(1, 1, -1))
        return flat_codes(codes)[0].cpu().numpy()

    @torch.inference_mode()
    def frames_and_tokens(self, wave: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """`SNAC.encode`'s own steps, keeping the encoder frames (D, frames) it quantizes."""
        z = self.model.encoder(self.model.preprocess(wave.to(self.device).view(1, 1, -1)))
        return z[0], flat_codes(self.model.quantizer(z)[1])[0].cpu().numpy()


AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


class BatchEncoder:
    """Encodes groups of same-padded-length clips on one device.

    `submit` queues a group and returns at once on CUDA (its own stream, pinned buffers,
    non-blocking copies, one device-to-host copy); `Pending.result` waits. A worker submits the
    next group before it waits for the last, so filling a group overlaps the device's work. On
    CPU the same calls simply run in order.

    On CUDA a group is one batch padded with zero rows to `rows_for(length)`, so every batch of a
    padded length has the same shape, runs the same kernels and gives each clip the same bits
    whatever its company. On CPU, and on any device once `exact` is set, the encoder sees one
    clip at a time. The quantizer always runs clip by clip: that is `SNAC.encode`'s own math, and
    it costs little next to the encoder.

    `compile=True` runs the encoder through `snactok.codec.compiled.compile_encoder`; if compiling fails,
    the encoder falls back to eager and `fallback` says why. `autocast="bf16"` runs the
    convolutions in bfloat16 and CHANGES TOKENS; the quantizer stays in float32.
    """

    def __init__(
        self,
        model: SNAC,
        device: torch.device,
        arch: Any,
        compile: bool = False,
        autocast: str | None = None,
        batch_samples: int = 1,
    ):
        self.model = model.to(device)
        self.device = device
        self.arch = arch
        self.multiple = pad_multiple(arch)
        self.batch_samples = batch_samples
        self.autocast = AUTOCAST_DTYPES[autocast] if autocast else None
        self.fallback: str | None = None
        self.compiled = compile
        self.exact = False
        self._forward = self.model.encoder
        if compile:
            from snactok.codec.compiled import compile_encoder

            # A copy: the eager fallback keeps the original layers.
            self._forward = compile_encoder(copy.deepcopy(self.model.encoder))
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pinned = [torch.empty(0), torch.empty(0)]  # CUDA staging; grown pinned on first use
        self._turn = 0

    @property
    def path(self) -> str:
        """What encodes: `exact` (the reference model, clip by clip), `compiled` or `eager`."""
        return "exact" if self.exact else "compiled" if self.compiled else "eager"

    def use_eager(self) -> None:
        """From now on run the encoder eagerly (its folded weights, the same groups)."""
        self.compiled = False
        self._forward = self.model.encoder

    def use_exact(self, reference: Reference) -> None:
        """From now on encode with the reference model itself, eager, one clip at a time."""
        self.model = reference.model
        self._forward = reference.model.encoder
        self.compiled = False
        self.autocast = None
        self.exact = True

    def rows_for(self, length: int, clips: int = 1) -> int:
        """Rows of the encoder input for `clips` clips of a padded `length`."""
        if self.device.type != "cuda" or self.exact:
            return clips
        return max(clips, self.batch_samples // length)

    def staging(self, clips: int, length: int) -> torch.Tensor:
        """A zeroed host buffer of `rows_for(length, clips)` rows; fill the first `clips`.

        On CUDA it is pinned, and two alternate across groups. Reuse is safe as long as a group's
        `result` is taken before the group after next is filled: by then its host-to-device copy
        has finished. On CPU it is a fresh tensor: compiled code guards on a view's base, and a
        view of a growing buffer recompiled the encoder (seconds) at every new longest clip.
        """
        rows = self.rows_for(length, clips)
        if self.device.type != "cuda":
            return torch.zeros(rows, length)
        self._turn ^= 1
        n = rows * length
        if self._pinned[self._turn].numel() < n:
            self._pinned[self._turn] = torch.empty(n, pin_memory=True)
        batch = self._pinned[self._turn][:n].view(rows, length)
        batch.zero_()
        return batch

    def encode(self, batch: torch.Tensor, clips: int | None = None) -> np.ndarray:
        return self.submit(batch, clips).result()

    def submit(self, batch: torch.Tensor, clips: int | None = None) -> Pending:
        """(rows, L) float32 host tensor, L a multiple of the pad -> pending (clips, tokens) int16
        for its first `clips` rows (all by default); the other rows are padding."""
        clips = len(batch) if clips is None else clips
        flat = self.quantize_on_device(self.latents(batch)[:clips])
        if self.stream is None:
            return Pending(flat)
        with self._on_stream(), torch.inference_mode():
            host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            host.copy_(flat, non_blocking=True)  # the one device-to-host copy of the batch
            done = torch.cuda.Event()
            done.record(self.stream)
        return Pending(host, done)

    @torch.inference_mode()
    def latents(self, batch: torch.Tensor) -> torch.Tensor:
        """(rows, L) host tensor -> the encoder's (rows, D, L / hop) frames, on the device."""
        if batch.shape[-1] % self.multiple:
            raise ValueError(f"batch length {batch.shape[-1]} is not a multiple of {self.multiple}")
        with self._on_stream():
            x = batch.to(self.device, non_blocking=True).unsqueeze(1)
            if self.device.type == "cuda" and not self.exact:
                return self._encoder(x)
            return torch.cat([self._encoder(x[i : i + 1]) for i in range(len(x))])

    @torch.inference_mode()
    def quantize_on_device(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, T) frames -> (B, tokens) int16 codes, layers concatenated, on the device."""
        with self._on_stream():
            return torch.cat([flat_codes(self.model.quantizer(z[i : i + 1])[1]) for i in range(len(z))])

    def quantize(self, z: torch.Tensor) -> np.ndarray:
        """(B, D, T) frames -> (B, tokens) int16 codes on the host; waits for the device."""
        flat = self.quantize_on_device(z)
        with self._on_stream():
            return flat.cpu().numpy()

    def _on_stream(self) -> Any:
        return torch.cuda.stream(self.stream) if self.stream else contextlib.nullcontext()

    def _encoder(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled:
            try:
                return self._run(self._forward, x)
            except torch.OutOfMemoryError:
                raise
            except Exception as err:  # inductor, a C++ compiler, a dynamo limit: all mean eager
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
                self.fallback = f"{type(err).__name__}: {first_line[:300]}"
                self.compiled = False
                self._forward = self.model.encoder
        return self._run(self._forward, x)

    def _run(self, forward: Any, x: torch.Tensor) -> torch.Tensor:
        if self.autocast is None:
            return forward(x)
        with torch.autocast(self.device.type, dtype=self.autocast):
            return forward(x).float()

    def warm_up(self) -> None:
        """Compile (or load from the cache) before real work: one clip of the pad unit (on CUDA
        in a full batch of that length)."""
        self.encode(self.staging(1, self.multiple), clips=1)


def probe_clips(arch: Any) -> list[torch.Tensor]:
    """Bundled speech the start-up check encodes, at the codec rate: one pad unit plus one sample
    (the padded tail of a 2-unit clip), and about a second (at least 3 units) ending 7 samples
    short of a unit. Not the calibration's own clips."""
    rate, unit = arch["sampling_rate"], pad_multiple(arch)
    speech = calibration_audio(rate, seconds=20.0, clip_seconds=1.0).reshape(-1)
    start = 9 * rate  # past the 8 s the random weights are calibrated on
    longer = max(3 * unit, rate // unit * unit) - 7
    return [
        speech[start : start + unit + 1].clone(),
        speech[start + rate : start + rate + longer].clone(),
    ]


def self_check(encoder: BatchEncoder, reference: Reference, clips: Sequence[torch.Tensor]) -> str | None:
    """None if the encoder's fast path gives the reference's encoder frames bit for bit and the
    same tokens on `clips`, else what differed.

    Frames, not only tokens: a path that rounds differently can still agree on a short probe's
    tokens, and then flip one in a thousand on real data. On CUDA each clip goes in a full batch
    among other clips, as real batches do.
    """
    for clip in clips:
        length = padded_length(len(clip), encoder.multiple)
        batch = encoder.staging(1, length)
        batch[0, : len(clip)] = clip
        if len(batch) > 1:  # company for the clip: itself reversed and scaled
            batch[1:, : len(clip)] = 0.5 * clip.flip(0)
        with torch.inference_mode():
            frames = encoder.latents(batch)[:1]
            got = encoder.quantize(frames)[0]
        want_frames, want = reference.frames_and_tokens(clip)
        seconds = len(clip) / encoder.arch["sampling_rate"]
        if not torch.equal(frames[0], want_frames):
            worst = (frames[0].float() - want_frames.float()).abs().max().item()
            return (
                f"{encoder.path} encoder frames of a {seconds:.2f} s probe differ from SNAC.encode's "
                f"(max |diff| {worst:.3g}); {int((got != want).sum())} of {want.size} tokens differ"
            )
        if not np.array_equal(got, want):
            return f"{int((got != want).sum())} of {want.size} tokens of a {seconds:.2f} s probe differ"
    return None


@dataclass
class Pending:
    """A submitted batch's tokens; `result` waits for the device when it has to."""

    host: torch.Tensor
    done: Any = None  # a CUDA event, or None when the tokens are already on the host

    def result(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.host.numpy()
