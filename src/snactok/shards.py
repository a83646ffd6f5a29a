"""Output: rows as JSON lines, shards committed atomically, and the run's manifest and rejects.

A shard is written under a temporary name, flushed, fsynced and renamed, and its directory is
fsynced, so a shard that exists is whole. Gzip headers carry no time and no name, and rows are
sorted by input index, so the same rows give the same bytes whatever the readers and devices.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
SHARD_SUFFIX = ".jsonl.gz"


def format_row(
    meta: dict[str, Any],
    codes: np.ndarray,
    lengths: list[int],
    constants: dict[str, Any],
    with_speaker: bool,
) -> bytes:
    """One output line in the original pipeline's schema, plus `id` and `duration`."""
    row: dict[str, Any] = {"text": meta["text"]}
    start = 0
    for i, n in enumerate(lengths, 1):
        row[f"snac_layer_{i}"] = codes[start : start + n].tolist()
        start += n
    row["num_layers"] = len(lengths)
    row["token_lengths"] = list(lengths)
    if with_speaker:
        row["speaker"] = meta["speaker"]
    row.update(constants)
    row["id"] = meta["id"]
    row["duration"] = meta["duration"]
    return (json.dumps(row, ensure_ascii=False) + "\n").encode()


def write_shard(path: Path, lines: list[bytes], gzip_level: int, buffer_size: int) -> tuple[int, str]:
    """Write `lines` to `path` atomically; return (bytes, sha256) of the file.

    On any error (a full disk, a read-only dir) the temporary file goes and the error is raised:
    no shard ever exists half-written under its final name.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb", buffering=buffer_size) as raw:
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=gzip_level, mtime=0
            ) as gz:
                for line in lines:
                    gz.write(line)
            raw.flush()
            os.fsync(raw.fileno())
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return size, digest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlLog:
    """An append-only JSON-lines file, flushed and fsynced per record (manifest, rejects)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_shard(path: Path) -> list[dict[str, Any]]:
    """The rows of one gzip JSONL shard."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]
