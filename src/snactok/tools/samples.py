"""A few rows of a run decoded back to audio with the run's own weights, next to their source
files when a local folder still holds them (snactok.tools.report)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from snactok.codec import orpheus
from snactok.codec.weights import fold_weight_norm
from snactok.config.schema import TemplateConfig
from snactok.inputs.audio import Rejected, Resampler, decode
from snactok.inputs.layouts import resolve_path
from snactok.output.files import sha256_file
from snactok.output.rundir import Header
from snactok.tools.plots import plot_spectrograms

log = logging.getLogger(__name__)


def load_decoder(header: Header) -> torch.nn.Module:
    """The run's SNAC with its decoder, from the header's weights; eval mode, on the CPU."""
    from snac import SNAC

    weights = header.weights
    path = Path(weights["path"]) if weights.get("path") else None
    if path is None or not (path / "pytorch_model.bin").is_file():
        if weights.get("kind") != "random":
            raise FileNotFoundError(
                f"the run's weights are gone from {weights.get('path')!r} ({weights}); restore them "
                "(a Hub snapshot comes back with huggingface-cli download <repo> --revision "
                "<commit>) or skip decoding with num_audio=0"
            )
        from snactok.codec.weights import arch_dict, random_snac

        seed = header.config["runtime"]["seed"]
        log.info("rebuilding the run's random weights (seed %d): %s is gone", seed, path)
        return random_snac(arch_dict(header.arch), seed).eval()
    if weights.get("sha256") and sha256_file(path / "pytorch_model.bin") != weights["sha256"]:
        log.warning("%s/pytorch_model.bin is not the file the run used (sha256 differs)", path)
    model = SNAC.from_pretrained(str(path)).eval()
    fold_weight_norm(model)  # same output, less work per call
    return model


def find_original(label: str | None, row_id: Any, header: Header) -> Path | str:
    """The source file a row came from, or why it cannot be found."""
    sources = header.sources
    index = next((i for i, s in enumerate(sources) if s["label"] == label), None)
    if index is None:
        return f"shard source {label!r} is not among the header's sources"
    src = header.config["dataset"]["sources"][index]
    if not src.get("path"):
        return f"source {label!r} is a Hub dataset; only local folders give back the original file"
    # The fingerprint holds the path as the run resolved it, from the run's working dir.
    resolved = header.fingerprint.get("dataset.sources", [])
    at_run = resolved[index].get("path") if index < len(resolved) else None
    roots = [Path(p) for p in (at_run, resolve_path(src["path"])) if p]
    for root in roots:
        for candidate in (root / str(src["split"]) / str(row_id), root / str(row_id)):
            if candidate.is_file():
                return candidate
    return f"no file {row_id!r} under {sorted({str(r) for r in roots})}"


def decode_samples(
    samples: list[tuple[str | None, dict[str, Any]]], header: Header, out: Path
) -> list[dict[str, Any]]:
    """Decode each row's tokens and read its source file; write both WAVs and a spectrogram.

    Both WAVs are at the codec rate. The reconstruction keeps the padded length the tokens stand
    for; the original is the source resampled as the run resampled it, unpadded.
    """
    out.mkdir(exist_ok=True)
    for stale in (
        *out.glob("*_original.wav"),
        *out.glob("*_reconstructed.wav"),
        *out.glob("*_spectrogram.png"),
    ):
        stale.unlink()  # an earlier report's clips would pass for this one's
    rate = header.arch["sampling_rate"]
    model = load_decoder(header)
    template = header.config.get("template")
    template = TemplateConfig(**template) if template else None
    resample = Resampler(rate)
    clips = []
    for k, (label, row) in enumerate(samples):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(Path(str(row["id"])).with_suffix("")))
        stem = f"{k:02d}_{name[:60]}"  # the number keeps a.wav and a.flac apart
        recon = reconstruct(model, row, template)
        clip: dict[str, Any] = {"id": row["id"], "source": label, "duration": row["duration"]}
        clip["reconstructed"] = _write_wav(out / f"{stem}_reconstructed.wav", recon, rate)
        original = find_original(label, row["id"], header)
        wave = None
        if isinstance(original, Path):
            try:
                wave = resample(*decode(str(original))).numpy()
                clip["original"] = _write_wav(out / f"{stem}_original.wav", wave, rate)
                clip["original_file"] = str(original)
            except Rejected as err:
                original = f"cannot read {original}: {err}"
        if wave is None:
            clip["note"] = f"row {row['id']!r}: reconstruction only, {original}"
        clip["spectrogram"] = plot_spectrograms(
            wave, recon, rate, f"{row['id']} ({label})", out / f"{stem}_spectrogram.png"
        )
        clips.append(clip)
    return clips


@torch.inference_mode()
def reconstruct(model: torch.nn.Module, row: dict[str, Any], template: Any = None) -> np.ndarray:
    """A row's tokens through `SNAC.decode`, as mono float32 at the codec rate. With a template,
    the tokens are its `input_ids` taken apart (`orpheus.split_sequence`): what a trainer sees,
    so `dedup=first_token`'s dropped frames are missing from the audio."""
    if template is not None and "input_ids" in row:
        layers = orpheus.split_sequence(row["input_ids"], template)[1]
    else:
        layers = [row[f"snac_layer_{i + 1}"] for i in range(row["num_layers"])]
    codes = [torch.tensor(np.asarray(layer), dtype=torch.long)[None] for layer in layers]
    return model.decode(codes)[0, 0].float().numpy()


def _write_wav(path: Path, wave: np.ndarray, rate: int) -> Path:
    sf.write(path, np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16")
    return path
