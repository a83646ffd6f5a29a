"""`runtime.dry_run=true`: the whole pipeline with the model taken out.

Readers, the clip channel and shared memory, the device loop's buckets and batches, the collector,
the writers, the manifest and resume all run for real; only `SNAC.encode` is replaced by
`DryEncoder`, which costs nothing and returns tokens of the codec's exact lengths. Users run it on
their own data to learn what the machinery around the model can feed, before they rent GPUs.

The tokens are a fixed pattern, never audio: token j of layer k is
`(2654435761 * j + 40503 * k) mod codebook_size` (a multiplicative hash, so the shards compress
about as real tokens do, unlike zeros). A dry run's manifest says so, and it cannot be saved,
published, or resumed as a real run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from snactok.codec.encoder import Pending
from snactok.codec.layout import pad_multiple, token_lengths
from snactok.codec.weights import Weights

WEIGHTS = Weights(kind="dry_run", name="none (runtime.dry_run: a stand-in for the model)")
PATH = "dry_run"


def pattern(padded: int, arch: Any) -> np.ndarray:
    """The stand-in's int16 tokens for one clip of `padded` samples, layers concatenated."""
    layers = []
    for k, n in enumerate(token_lengths(padded, arch)):
        j = np.arange(n, dtype=np.int64)
        layers.append((2654435761 * j + 40503 * k) % arch["codebook_size"])
    return np.concatenate(layers).astype(np.int16)


class DryEncoder:
    """BatchEncoder's interface with no model: a batch's tokens are `pattern` for its length.

    Batches stay on the host (there is no device work to feed), one row per clip."""

    path = PATH
    compiled = False
    exact = False
    autocast = None
    fallback = None

    def __init__(self, arch: Any, batch_samples: int):
        self.arch = arch
        self.device = torch.device("cpu")
        self.multiple = pad_multiple(arch)
        self.batch_samples = batch_samples

    def rows_for(self, length: int, clips: int = 1) -> int:
        return clips

    def staging(self, clips: int, length: int) -> torch.Tensor:
        return torch.zeros(clips, length)

    def submit(self, batch: torch.Tensor, clips: int | None = None) -> Pending:
        clips = len(batch) if clips is None else clips
        tokens = pattern(batch.shape[-1], self.arch)
        return Pending(torch.from_numpy(np.tile(tokens, (clips, 1))))

    def encode(self, batch: torch.Tensor, clips: int | None = None) -> np.ndarray:
        return self.submit(batch, clips).result()

    def warm_up(self) -> None:
        """Nothing to compile or load."""
