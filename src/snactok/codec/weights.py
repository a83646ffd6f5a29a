"""Where a run's weights come from (the Hub, a local dir, or seeded random weights calibrated to
spread their codes), and loading them into a SNAC."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from snac import SNAC
from torch.nn.utils import parametrize

from snactok.errors import ConfigError

if TYPE_CHECKING:
    from snactok.config.schema import CodecConfig

RANDOM = "random"
WEIGHT_FILES = ("config.json", "pytorch_model.bin")
CALIBRATION = resources.files("snactok") / "assets" / "calibration_speech.flac"


@dataclasses.dataclass(frozen=True)
class Weights:
    """Where a run's weights come from: `hub`, `local` or `random`."""

    kind: str
    name: str  # what the user asked for: repo id, dir or `random`
    path: str | None = None  # local dir holding config.json + pytorch_model.bin
    sha: str | None = None  # Hub commit the repo resolved to

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "path": self.path, "commit": self.sha}


def resolve_weights(codec: CodecConfig) -> Weights:
    """Find the weights before any process starts; fail with the override to use if we can't."""
    name = str(codec.weights)
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
            f"use a dir with {list(WEIGHT_FILES)}, a repo id such as {codec.repo!r}, or `random`"
        )
    return _resolve_hub(name, codec)


def _resolve_hub(repo: str, codec: CodecConfig) -> Weights:
    from huggingface_hub import hf_hub_download

    try:
        paths = [hf_hub_download(repo, f, revision=codec.revision) for f in WEIGHT_FILES]
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


def _check_arch(loaded: dict, codec: CodecConfig, where: str) -> None:
    """Refuse weights whose config.json differs from the codec's arch, naming the codec they are."""
    diffs = _arch_diffs(loaded, codec.arch)
    if not diffs:
        return
    fits = [name for name, arch in checked_in_codecs().items() if not _arch_diffs(loaded, arch)]
    what = (
        f"they are {fits[0]} weights: use codec={fits[0]}"
        if fits
        else "they fit no codec in conf/codec/"
    )
    raise ConfigError(f"weights {where!r} do not fit codec={codec.name}; {what} ({'; '.join(diffs)})")


def _arch_diffs(loaded: dict, declared: Any) -> list[str]:
    declared = arch_dict(declared)
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
    """The arch (the config's `ArchConfig`, or a mapping such as a `config.json`) as a plain dict,
    fit for `SNAC(**arch)` and `config.json`."""
    items = dataclasses.asdict(arch) if dataclasses.is_dataclass(arch) else arch
    return {k: _plain(v) for k, v in items.items()}


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


def random_weights_dir(arch: Any, seed: int, root: Path) -> Path:
    """The seeded, calibrated random SNAC saved under `root`, built only if not there yet.

    The key covers everything that decides the weights: arch, seed, recipe, calibration audio,
    snac and torch versions (torch's RNG). Building costs ~3 s at 24 kHz and ~10 s at 44.1 kHz.
    """
    from importlib import metadata

    from snactok.output.files import sha256_file

    arch = arch_dict(arch)
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
