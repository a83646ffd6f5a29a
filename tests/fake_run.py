"""A run dir as encode.py leaves it, made without encoding, for the tests of tools/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import FAKE_SHA

from snactok.codec.layout import pad_multiple, padded_length, token_lengths
from snactok.config.schema import OutputConfig
from snactok.output.files import JsonlLog
from snactok.output.formats import Columns, Row, write_unit

LABEL = "demo-default-train"
WEIGHTS_SHA256 = "ab" * 32
ARCH = {
    "sampling_rate": 24000,
    "encoder_dim": 48,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 1024,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": 4096,
    "codebook_dim": 8,
    "vq_strides": [4, 2, 1],
    "noise": True,
    "depthwise": True,
}


# ------------------------------------------------------------------------------- a run dir


def orpheus_codes(layers: list[list[int]]) -> list[int]:
    """Orpheus TTS's flattening, written out from its definition (not from snactok)."""
    l1, l2, l3 = layers
    out = []
    for t in range(len(l1)):
        frame = [l1[t], l2[2 * t], l3[4 * t], l3[4 * t + 1], l2[2 * t + 1], l3[4 * t + 2], l3[4 * t + 3]]
        out += [c + 128266 + k * 4096 for k, c in enumerate(frame)]
    return out


def make_run(
    run_dir: Path,
    units: tuple[tuple[int, int], ...] = ((3, 0), (0, 3), (2, 1)),
    *,
    weights: str = "hub",
    finished: bool = True,
    fmt: str = "jsonl",
    flatten: str | None = None,
    license: str | None = None,
    hub_source: bool = False,
) -> Path:
    """A run dir as encode.py leaves it, without encoding: shards written by the pipeline's own
    `write_unit` (gzip JSONL via `format_row`, and/or Parquet), a manifest with header, shard and
    summary records, and rejects. `units` holds (encoded, rejected) rows per unit."""
    rng = np.random.default_rng(0)
    (run_dir / "shards").mkdir(parents=True)
    per_file = max(ok + bad for ok, bad in units)
    source = {
        "hub": None,
        "path": "data/demo",
        "config": None,
        "split": "train",
        "revision": None,
        "text_column": "text",
        "audio_column": "audio",
        "speaker_column": "speaker",
        "id_column": None,
        "add_constant": {"corpus": "espeak_demo"},
    }
    total = sum(ok + bad for ok, bad in units)
    described = {"label": LABEL, "rows": total, "revision": None, "commit": None}
    if hub_source:  # the dataset=librispeech way, pinned to a commit
        source |= {"hub": "openslr/librispeech_asr", "path": None, "config": "clean", "revision": "main"}
        described |= {"revision": "main", "commit": "c" * 40}
    if license:
        described["license"] = license
    weights_info = {
        "hub": {"kind": "hub", "name": "hubertsiuzdak/snac_24khz", "commit": FAKE_SHA},
        "random": {"kind": "random", "name": "random", "commit": None},
        "local": {"kind": "local", "name": "/models/snac_24khz", "commit": None},
    }[weights] | {"path": "/cache/snac", "sha256": WEIGHTS_SHA256}
    out = {
        "format": fmt,
        "lines_per_file": per_file,
        "gzip_level": 1,
        "buffer_size": 1 << 16,
        "flatten": flatten,
    }
    conf = {
        "codec": {"name": "snac_24khz", "repo": "hubertsiuzdak/snac_24khz", "arch": ARCH},
        "dataset": {"name": "demo", "sources": [source], "streaming": False, "path": None},
        "runtime": {"seed": 0, "autocast": None, "max_rows": None},
        "output": out,
        "save": {"local": None, "hub_repo": None, "private": True},
    }
    columns = Columns(
        num_layers=3, constants={"corpus": "espeak_demo"}, with_speaker=True, flatten=flatten
    )
    manifest = JsonlLog(run_dir / "manifest.jsonl")
    rejects = JsonlLog(run_dir / "rejects.jsonl")
    manifest.append(
        {
            "type": "header",
            "schema_version": 1,
            "codec": "snac_24khz",
            "arch": ARCH,
            "weights": weights_info,
            "random_weights": weights == "random",
            "dataset": "demo",
            "sources": [described],
            "devices": ["cpu"],
            "chunking": {"chunk_samples": 718848, "overlap_samples": 6144},
            "packages": {"snactok": "0.1.0", "torch": "2.11.0", "snac": "1.2.1"},
            "git_commit": "f" * 40,
            "config": conf,
            "fingerprint": {},
            "host": "node1",
        }
    )
    row = 0
    for index, (ok, bad) in enumerate(units):
        start, rows = row, []
        for _ in range(ok):
            duration = round(0.5 + 0.25 * row, 3)
            lengths = token_lengths(padded_length(int(duration * 24000), pad_multiple(ARCH)), ARCH)
            meta = {
                "text": f"clip {row}",
                "speaker": "en",
                "id": f"clip_{row:03d}.wav",
                "duration": duration,
            }
            rows.append(Row(meta, rng.integers(0, 4096, sum(lengths)).astype(np.int16), tuple(lengths)))
            row += 1
        files = write_unit(
            run_dir / "shards", f"{LABEL}-{index:05d}", rows, columns, OutputConfig(**out)
        )
        for r in range(row, row + bad):
            rejects.append(
                {"source": LABEL, "unit": index, "row": r, "id": f"clip_{r:03d}.wav"}
                | {"reason": "too_long", "detail": "9.0 s > runtime.max_duration=2.6"}
            )
        row += bad
        manifest.append(
            {
                "type": "shard",
                "unit": index,
                "source": LABEL,
                "start": start,
                "stop": row,
                "file": files[0]["file"],
                "rows_read": ok + bad,
                "rows": ok,
                "rejected": bad,
                "bytes": files[0]["bytes"],
                "sha256": files[0]["sha256"],
                "files": files,
                "tokens_per_layer": [sum(r.lengths[i] for r in rows) for i in range(3)],
                "audio_seconds": round(sum(r.meta["duration"] for r in rows), 3),
            }
        )
    if finished:
        manifest.append(
            {
                "type": "summary",
                "units": len(units),
                "rows_read": total,
                "rows_written": sum(ok for ok, _ in units),
                "rows_rejected": sum(bad for _, bad in units),
                "rejected_by_reason": {"too_long": sum(bad for _, bad in units)},
                "audio_seconds": 0.0,
                "random_weights": weights == "random",
            }
        )
    manifest.close()
    rejects.close()
    return run_dir
