"""The SNAC model: resolving and loading weights, calibrated random weights, and encoding.

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

from snactok.errors import ConfigError

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
        _check_arch(json.loads((local / "config.json").read_text()), codec, name)
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
    _check_arch(json.loads(Path(paths[0]).read_text()), codec, repo)
    return Weights(kind="hub", name=repo, path=str(snapshot), sha=snapshot.name)


def _check_arch(loaded: dict, codec: Any, where: str) -> None:
    """Refuse weights whose config.json differs from the codec's arch, naming the codec they are."""
    diffs = _arch_diffs(loaded, codec["arch"])
    if not diffs:
        return
    fits = [name for name, arch in checked_in_codecs().items() if not _arch_diffs(loaded, arch)]
    what = (
        f"they are {fits[0]} weights: use codec={fits[0]}"
        if fits
        else "they fit no codec in conf/codec/"
    )
    raise ConfigError(f"weights {where!r} do not fit codec={codec['name']}; {what} ({'; '.join(diffs)})")


def _arch_diffs(loaded: dict, declared: Any) -> list[str]:
    return [
        f"{k}: weights have {loaded[k]!r}, config declares {declared[k]!r}"
        for k in declared
        if k in loaded and _plain(loaded[k]) != _plain(declared[k])
    ]


def checked_in_codecs() -> dict[str, dict[str, Any]]:
    """name -> arch of each conf/codec/*.yaml (none when the package runs without the repo)."""
    from omegaconf import OmegaConf

    found = {}
    for path in sorted((Path(__file__).resolve().parents[3] / "conf" / "codec").glob("*.yaml")):
        node = OmegaConf.load(path)
        if "arch" in node and "name" in node:
            found[str(node.name)] = OmegaConf.to_container(node.arch)
    return found


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def arch_dict(arch: Any) -> dict[str, Any]:
    """The arch as a plain dict, fit for `SNAC(**arch)` and `config.json`."""
    return {k: _plain(v) for k, v in arch.items()}


def load_model(weights: Weights, arch: Any, seed: int = 0, fold: bool = True) -> SNAC:
    """Load SNAC for encoding: eval mode, decoder dropped, and weight norm folded unless `fold` is
    False (the reference keeps the model exactly as `SNAC.from_pretrained` returns it)."""
    if weights.path is None:  # random weights not yet saved by the main process
        model = random_snac(arch_dict(arch), seed)
    else:
        model = SNAC.from_pretrained(weights.path)
    if fold:
        fold_weight_norm(model)
    model.decoder = None  # encoding never touches it; it is most of the parameters
    return model.eval()


def fold_weight_norm(model: torch.nn.Module) -> None:
    """Bake g * v / |v| into plain weights once; the tokens are the same and the work is less."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def random_snac(arch: dict[str, Any], seed: int, jitter: float = 1e-3) -> SNAC:
    """A seeded SNAC of the declared architecture with codebooks calibrated on bundled speech.

    Plain random codebooks are degenerate (one code takes ~98% of layer-1 tokens), which makes
    any token comparison meaningless; calibration spreads the codes.
    """
    torch.manual_seed(seed)
    model = SNAC(**arch).eval()
    calibrate_codebooks(model, calibration_audio(arch["sampling_rate"]), seed, jitter)
    return model


RANDOM_RECIPE = 1  # bump when random_snac or its calibration changes what it builds


def random_weights_dir(arch: dict[str, Any], seed: int, root: Path) -> Path:
    """The seeded, calibrated random SNAC saved under `root`, built only if not there yet.

    The key covers everything that decides the weights: arch, seed, recipe, calibration audio,
    snac and torch versions (torch's RNG). Building costs ~3 s at 24 kHz and ~10 s at 44.1 kHz.
    """
    from importlib import metadata

    from snactok.output.formats import sha256_file

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
def calibrate_codebooks(model: SNAC, audio: torch.Tensor, seed: int, jitter: float = 1e-3) -> None:
    """Level by level, set each codebook to samples of its own projected, normalised input, plus
    `jitter` times Gaussian noise. Small jitter leaves near-duplicate codes, whose tokens flip on
    1-ulp differences: the hardest case for parity. Larger jitter is closer to trained codebooks."""
    gen = torch.Generator().manual_seed(seed)
    residual = model.encoder(model.preprocess(audio))
    for vq in model.quantizer.quantizers:
        pooled = F.avg_pool1d(residual, vq.stride, vq.stride) if vq.stride > 1 else residual
        z_e = vq.in_proj(pooled)  # (B, D, T)
        frames = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]), dim=1)
        pick = torch.randint(len(frames), (vq.codebook_size,), generator=gen)
        noise = jitter * torch.randn(vq.codebook_size, frames.shape[1], generator=gen)
        vq.codebook.weight.copy_(frames[pick] + noise)
        z_q, _ = vq(residual)
        residual = residual - z_q


def save_pretrained(model: SNAC, arch: dict[str, Any], out_dir: Path) -> Path:
    """Write `config.json` + `pytorch_model.bin`, the layout `SNAC.from_pretrained` reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(arch, indent=2))
    torch.save(model.state_dict(), out_dir / "pytorch_model.bin")
    return out_dir


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
