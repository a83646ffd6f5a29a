"""The SNAC model: resolving and loading weights, calibrated random weights, and batch encoding.

Batches hold clips of one padded length only. SNAC right-pads every clip to a multiple of
`hop_length * lcm(vq_strides[0], attn_window_size or 1)`, so such a batch does exactly the math of
encoding each clip alone and its tokens equal single-clip `SNAC.encode` bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from snac import SNAC
from torch.nn.utils import parametrize

from snactok.config import ConfigError

log = logging.getLogger(__name__)

RANDOM = "random"
WEIGHT_FILES = ("config.json", "pytorch_model.bin")
CALIBRATION = resources.files("snactok") / "assets" / "calibration_speech.flac"


@dataclass(frozen=True)
class Weights:
    """Where a run's weights come from: `hub`, `local` or `random`."""

    kind: str
    name: str  # what the user asked for: repo id, dir or `random`
    path: str | None = None  # local dir holding config.json + pytorch_model.bin
    sha: str | None = None  # Hub commit the repo resolved to

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "path": self.path, "commit": self.sha}


def pad_multiple(arch: Any) -> int:
    """Samples SNAC pads every clip to a multiple of."""
    hop = math.prod(arch["encoder_rates"])
    return hop * math.lcm(arch["vq_strides"][0], arch["attn_window_size"] or 1)


def padded_length(num_samples: int, multiple: int) -> int:
    return max(1, math.ceil(num_samples / multiple)) * multiple


def token_lengths(padded: int, arch: Any) -> list[int]:
    frames = padded // math.prod(arch["encoder_rates"])
    return [frames // s for s in arch["vq_strides"]]


def resolve_weights(codec: Any) -> Weights:
    """Find the weights before any process starts; fail with the override to use if we can't."""
    name = str(codec["weights"])
    if name == RANDOM:
        return Weights(kind=RANDOM, name=name)
    local = Path(name).expanduser()
    if local.is_dir():
        missing = [f for f in WEIGHT_FILES if not (local / f).is_file()]
        if missing:
            raise ConfigError(
                f"codec.weights={name!r} is a directory without {missing}; it needs config.json and "
                "pytorch_model.bin (the Hub layout, as written by snac)"
            )
        _check_arch(json.loads((local / "config.json").read_text()), codec["arch"], name)
        return Weights(kind="local", name=name, path=str(local.resolve()))
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ConfigError(
            f"codec.weights={name!r} is neither a local directory nor a Hub repo id (user/name); "
            f"use a dir with {list(WEIGHT_FILES)}, a repo id such as {codec['repo']!r}, or `random`"
        )
    return _resolve_hub(name, codec)


def _resolve_hub(repo: str, codec: Any) -> Weights:
    from huggingface_hub import hf_hub_download

    try:
        paths = [hf_hub_download(repo, f, revision=codec.get("revision")) for f in WEIGHT_FILES]
    except Exception as err:  # offline, DNS, auth, missing repo: all end the same way
        raise ConfigError(
            f"cannot get the weights of {repo!r}: the Hub is unreachable or refused "
            f"({type(err).__name__}) and they are not in the local HF cache. Use a local copy: "
            f"codec.weights=/path/to/dir (with {' + '.join(WEIGHT_FILES)}), or "
            f"codec.weights=random for an offline smoke run (tokens are then meaningless)."
        ) from err
    snapshot = Path(paths[0]).parent
    _check_arch(json.loads(Path(paths[0]).read_text()), codec["arch"], repo)
    return Weights(kind="hub", name=repo, path=str(snapshot), sha=snapshot.name)


def _check_arch(loaded: dict, declared: Any, where: str) -> None:
    diffs = [
        f"{k}: weights have {loaded[k]!r}, config declares {declared[k]!r}"
        for k in declared
        if k in loaded and _plain(loaded[k]) != _plain(declared[k])
    ]
    if diffs:
        raise ConfigError(f"weights {where!r} do not match codec.arch: " + "; ".join(diffs))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def arch_dict(arch: Any) -> dict[str, Any]:
    """The arch as a plain dict, fit for `SNAC(**arch)` and `config.json`."""
    return {k: _plain(v) for k, v in arch.items()}


def load_model(weights: Weights, arch: Any, seed: int = 0) -> SNAC:
    """Load SNAC for encoding: eval mode, weight norm folded, decoder dropped."""
    if weights.path is None:  # random weights not yet saved by the main process
        model = random_snac(arch_dict(arch), seed)
    else:
        model = SNAC.from_pretrained(weights.path)
    fold_weight_norm(model)
    model.decoder = None  # encoding never touches it; it is most of the parameters
    return model.eval()


def fold_weight_norm(model: torch.nn.Module) -> None:
    """Bake g * v / |v| into plain weights once; the tokens are the same and the work is less."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def random_snac(arch: dict[str, Any], seed: int) -> SNAC:
    """A seeded SNAC of the declared architecture with codebooks calibrated on bundled speech.

    Plain random codebooks are degenerate (one code takes ~98% of layer-1 tokens), which makes
    any token comparison meaningless; calibration spreads the codes.
    """
    torch.manual_seed(seed)
    model = SNAC(**arch).eval()
    calibrate_codebooks(model, calibration_audio(arch["sampling_rate"]), seed)
    return model


RANDOM_RECIPE = 1  # bump when random_snac or its calibration changes what it builds


def random_weights_dir(arch: dict[str, Any], seed: int, root: Path) -> Path:
    """The seeded, calibrated random SNAC saved under `root`, built only if not there yet.

    The key covers everything that decides the weights: arch, seed, recipe, calibration audio,
    snac and torch versions (torch's RNG). Building costs ~3 s at 24 kHz and ~10 s at 44.1 kHz.
    """
    from importlib import metadata

    from snactok.shards import sha256_file

    with resources.as_file(CALIBRATION) as audio:
        audio_sha = sha256_file(audio)
    recipe = {
        "arch": arch,
        "seed": seed,
        "recipe": RANDOM_RECIPE,
        "calibration": audio_sha,
        "snac": metadata.version("snac"),
        "torch": torch.__version__,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    target = root / f"{arch['sampling_rate']}hz-seed{seed}-{key}"
    if all((target / f).is_file() for f in WEIGHT_FILES):
        return target
    staging = root / f".{target.name}.{os.getpid()}.tmp"
    save_pretrained(random_snac(arch, seed), arch, staging)
    (staging / "recipe.json").write_text(json.dumps(recipe, indent=2))
    if target.exists():  # a build that died half-way
        shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:  # another run built it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


def calibration_audio(
    sampling_rate: int, seconds: float = 8.0, clip_seconds: float = 2.0
) -> torch.Tensor:
    """The first `seconds` of bundled espeak-ng speech, resampled, as (clips, 1, samples)."""
    import soundfile as sf
    import torchaudio.functional as AF

    with resources.as_file(CALIBRATION) as p:
        audio, sr = sf.read(p, dtype="float32", always_2d=True)
    wav = AF.resample(torch.from_numpy(audio.mean(axis=1)), sr, sampling_rate)
    n = int(clip_seconds * sampling_rate)
    wav = wav[: int(seconds * sampling_rate)]
    return wav[: len(wav) // n * n].reshape(-1, 1, n)


@torch.inference_mode()
def calibrate_codebooks(model: SNAC, audio: torch.Tensor, seed: int) -> None:
    """Level by level, set each codebook to samples of its own projected, normalised input."""
    gen = torch.Generator().manual_seed(seed)
    residual = model.encoder(model.preprocess(audio))
    for vq in model.quantizer.quantizers:
        pooled = F.avg_pool1d(residual, vq.stride, vq.stride) if vq.stride > 1 else residual
        z_e = vq.in_proj(pooled)  # (B, D, T)
        frames = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]), dim=1)
        pick = torch.randint(len(frames), (vq.codebook_size,), generator=gen)
        jitter = 1e-3 * torch.randn(vq.codebook_size, frames.shape[1], generator=gen)
        vq.codebook.weight.copy_(frames[pick] + jitter)
        z_q, _ = vq(residual)
        residual = residual - z_q


def save_pretrained(model: SNAC, arch: dict[str, Any], out_dir: Path) -> Path:
    """Write `config.json` + `pytorch_model.bin`, the layout `SNAC.from_pretrained` reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(arch, indent=2))
    torch.save(model.state_dict(), out_dir / "pytorch_model.bin")
    return out_dir


def prepare_device(device: str, cpu_threads: int | None, tf32: bool = False) -> torch.device:
    """Per-process torch settings for one device worker."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # TF32 changes tokens, so it is off unless asked for; cuDNN's conv TF32 is on by default.
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        # Autotuning picks algorithms per shape, so a batch could round differently from one clip.
        torch.backends.cudnn.benchmark = False
    elif cpu_threads:
        torch.set_num_threads(cpu_threads)
    return dev


def use_thread_invariant_cpu_kernels() -> None:
    """Make CPU tokens independent of the thread count, so worker count never changes a shard.

    oneDNN (mkldnn) convolutions round differently at different thread counts: measured here, 1
    vs 2 threads flipped 4 of ~170 tokens of a 3 s clip. The native kernels give the same bits at
    any thread count, at about the same speed. Resampling (a convolution) is affected too, so
    every process that touches audio calls this.
    """
    torch.backends.mkldnn.enabled = False


AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


class BatchEncoder:
    """Encodes batches of same-padded-length clips on one device.

    `submit` queues a batch and returns at once on CUDA (its own stream, pinned buffers,
    non-blocking copies, one device-to-host copy); `Pending.result` waits. A worker submits the
    next batch before it waits for the last, so filling a batch overlaps the device's work. On
    CPU the same calls simply run in order.

    `compile=True` runs the encoder through `snactok.kernels.compile_encoder` (same tokens); if
    compiling fails, the encoder falls back to eager and `fallback` says why.
    `autocast="bf16"` runs the convolutions in bfloat16 and CHANGES TOKENS; the quantizer stays
    in float32.
    """

    def __init__(
        self,
        model: SNAC,
        device: torch.device,
        arch: Any,
        compile: bool = False,
        autocast: str | None = None,
    ):
        self.model = model.to(device)
        self.device = device
        self.arch = arch
        self.multiple = pad_multiple(arch)
        self.autocast = AUTOCAST_DTYPES[autocast] if autocast else None
        self.fallback: str | None = None
        self.compiled = compile
        self._forward = self.model.encoder
        if compile:
            from snactok.kernels import compile_encoder

            # A copy: the eager fallback keeps the original layers.
            self._forward = compile_encoder(copy.deepcopy(self.model.encoder), device)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pinned = [torch.empty(0), torch.empty(0)]  # CUDA staging; grown pinned on first use
        self._turn = 0

    def staging(self, clips: int, length: int) -> torch.Tensor:
        """A zeroed (clips, length) host buffer, pinned on CUDA; two alternate across batches.

        Reuse is safe as long as a batch's `result` is taken before the batch after next is
        filled: by then its host-to-device copy has finished. On CPU the batch is the encoder's
        input itself, so it is a fresh tensor: compiled code guards on a view's base, and a view
        of a growing buffer recompiled the encoder (seconds) at every new longest clip.
        """
        if self.device.type != "cuda":
            return torch.zeros(clips, length)
        self._turn ^= 1
        n = clips * length
        if self._pinned[self._turn].numel() < n:
            self._pinned[self._turn] = torch.empty(n, pin_memory=True)
        batch = self._pinned[self._turn][:n].view(clips, length)
        batch.zero_()
        return batch

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        return self.submit(batch).result()

    def submit(self, batch: torch.Tensor) -> Pending:
        """(B, L) float32 host tensor, L a multiple of the pad -> pending (B, tokens) int16.

        The encoder runs on the whole batch. The quantizer runs clip by clip: its 1x1 `in_proj`
        convolutions round differently at other batch sizes (measured at 44 kHz on CPU), which
        flips near-tied codes; per clip it is the exact math of single-clip `SNAC.encode`, and it
        costs little next to the encoder.
        """
        flat = self.quantize_on_device(self.latents(batch))
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
        """(B, L) host tensor -> the encoder's (B, D, L / hop) frames, on the device."""
        if batch.shape[-1] % self.multiple:
            raise ValueError(f"batch length {batch.shape[-1]} is not a multiple of {self.multiple}")
        with self._on_stream():
            return self._encoder(batch.to(self.device, non_blocking=True).unsqueeze(1))

    @torch.inference_mode()
    def quantize_on_device(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, T) frames -> (B, tokens) int16 codes, layers concatenated, on the device."""
        with self._on_stream():
            rows = [torch.cat(self.model.quantizer(z[i : i + 1])[1], dim=1) for i in range(len(z))]
            return torch.cat(rows).to(torch.int16)  # codebook_size 4096 < 2**15

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

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Compile (or load from the cache) before real work, for every batch size it will see.

        Dynamic shapes cover every length, but a batch of 1 compiles apart from larger ones.
        """
        for clips in sorted(set(batch_sizes)):
            self.encode(self.staging(clips, self.multiple))


@dataclass
class Pending:
    """A submitted batch's tokens; `result` waits for the device when it has to."""

    host: torch.Tensor
    done: Any = None  # a CUDA event, or None when the tokens are already on the host

    def result(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.host.numpy()
