"""What the device workers are given about the model: the weights every worker loads (a dry
run's stand-in, or seeded random weights built once) and how long clips are cut into parts."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from snactok.codec import dryrun
from snactok.codec.layout import pad_multiple
from snactok.codec.long_clips import overlap_for, receptive_field
from snactok.codec.weights import RANDOM, Weights, arch_dict, random_weights_dir, resolve_weights
from snactok.config.schema import ArchConfig, CodecConfig, Config
from snactok.errors import ConfigError
from snactok.output.provenance import DRY_RUN_NOTE

log = logging.getLogger(__name__)


def weights_and_chunking(conf: Config) -> tuple[Weights, dict[str, Any]]:
    """The weights every worker loads (a dry run's stand-in, or materialised random ones), and
    how long clips are cut."""
    rt = conf.runtime
    cache_dir = Path(rt.cache_dir)
    if rt.dry_run:
        log.warning(DRY_RUN_NOTE)
        return dryrun.WEIGHTS, plan_chunking(conf.codec, None, cache_dir)
    weights = resolve_weights(conf.codec)
    if weights.kind == RANDOM:
        weights = materialise_random(conf.codec.arch, rt.seed, cache_dir)
    return weights, plan_chunking(conf.codec, rt.max_chunk_seconds, cache_dir)


def plan_chunking(
    codec: CodecConfig, max_chunk_seconds: float | None, cache_dir: Path
) -> dict[str, Any]:
    """Chunk and overlap sizes for long clips, from the encoder's measured receptive field.

    A chunk (overlaps included) holds at most `max_chunk_seconds` of audio, rounded down to the
    pad unit, and at least one pad unit more than its two overlaps.
    """
    arch = arch_dict(codec.arch)
    if max_chunk_seconds is None:
        return {"chunk_samples": None, "overlap_samples": 0}
    rf = receptive_field(arch, cache_dir.expanduser() / "receptive_field")
    overlap, unit = overlap_for(arch, rf), pad_multiple(arch)
    chunk = int(max_chunk_seconds * arch["sampling_rate"]) // unit * unit
    if chunk < 2 * overlap + unit:
        shortest = (2 * overlap + unit) / arch["sampling_rate"]
        raise ConfigError(
            f"runtime.max_chunk_seconds={max_chunk_seconds} is too short for {codec.name}: a chunk "
            f"needs {overlap} samples of context on each side plus one pad unit of {unit}; use "
            f"runtime.max_chunk_seconds >= {math.ceil(shortest * 100) / 100} (or null: never chunk)"
        )
    return {"chunk_samples": chunk, "overlap_samples": overlap, "receptive_field": list(rf)}


def materialise_random(arch: ArchConfig, seed: int, cache_dir: Path) -> Weights:
    """Build the seeded, calibrated random SNAC once and save it, so every worker loads the same."""
    log.warning(
        "codec.weights=random: a seeded, calibrated RANDOM SNAC. Its tokens are MEANINGLESS; use it "
        "for smoke runs only. The manifest records it."
    )
    path = random_weights_dir(arch, seed, cache_dir.expanduser() / "random_weights")
    return Weights(kind=RANDOM, name=RANDOM, path=str(path))
