"""Files that are whole or absent, and append-only JSON lines that survive a crash.

`write_atomic` writes under a temporary name in the same dir (`.<name>.<pid>.tmp`, which a resumed
run removes from shards/), flushes and fsyncs it, renames it into place and fsyncs the dir: after
a crash or a full disk the file is either the old one, the new one, or not there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TEMPORARY = ".*.tmp"  # glob of write_atomic's temporary names


def write_atomic(path: Path, write: Callable[[BinaryIO], None], buffer_size: int = 1 << 20) -> None:
    """`write` into a temporary file next to `path`, fsync it, rename it to `path`, fsync the dir.

    On any error the temporary file goes and the error is raised: nothing ever exists half-written
    under its final name.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb", buffering=buffer_size) as raw:
            write(raw)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


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
    """An append-only JSON-lines file, flushed and fsynced per record (manifest, rejects, metrics)."""

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


def complete_lines(path: Path) -> bytes:
    """The file up to its last newline: a record torn by a crash mid-append is left out."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]
