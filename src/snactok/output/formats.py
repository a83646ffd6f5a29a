"""Output: each unit's rows as gzip JSON lines and/or Parquet, and reading them back.

Every file is written with `snactok.output.files.write_atomic` (a temporary name, fsynced, renamed,
the directory fsynced), so a file that exists is whole. Gzip headers carry no time and no name, Parquet files no
time either, and rows are sorted by input index, so the same rows give the same bytes whatever the
readers and devices (for Parquet: with the same pyarrow, whose version is in each file's footer).
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from snactok.codec import orpheus
from snactok.output.files import sha256_file, write_atomic
from snactok.output.rundir import FORMAT_SUFFIXES, JSONL_SUFFIX

if TYPE_CHECKING:
    from snactok.config.schema import OutputConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Row groups hold at most this many bytes of uncompressed Arrow data, as datasets' push_to_hub
# writes them (datasets.config.MAX_ROW_GROUP_SIZE, "100MB"). The Hub's dataset viewer refuses to
# scan more than 300 MB at once, and datasets streams and reshards a Parquet file one row group at
# a time, so a row group bounds both. By bytes, not rows: a row is a few KB of tokens for a sentence
# but a megabyte or more for an hour-long clip. With ~3 KB rows a 50,000-row unit is 2 groups.
ROW_GROUP_BYTES = 100_000_000
# Fixed writer options, so the bytes depend only on the rows and the pyarrow version. The page
# index lets the viewer and streaming filters read single pages instead of whole row groups (the
# Hub's "optimized Parquet"). Content-defined chunking, its other half, is left off: it helps Xet
# deduplicate files that are edited and uploaded again, and these are written once.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": True,  # 4096 codes: dictionary pages and 12-bit indices
    "write_statistics": True,
    "write_page_index": True,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One encoded row, held until its unit commits: 2 bytes per token, formatted only then."""

    meta: dict[str, Any]  # id, text, speaker, duration
    codes: np.ndarray  # int16, the layers concatenated
    lengths: tuple[int, ...]  # tokens per layer

    def layers(self) -> list[np.ndarray]:
        bounds = np.cumsum(self.lengths)[:-1]
        return np.split(self.codes, bounds)


@dataclass(frozen=True)
class Columns:
    """What one source's rows carry besides their tokens; the same for all its units."""

    num_layers: int
    constants: dict[str, Any] = field(default_factory=dict)
    with_speaker: bool = False
    id_is_int: bool = False  # Parquet type of `id`: int64 (row indices, int id columns) or string
    flatten: str | None = None  # None or "orpheus": also a `codes` column
    # dataset keep_columns: output name -> Parquet type (None: inferred from each unit's values)
    kept: dict[str, pa.DataType | None] = field(default_factory=dict)
    # template (a TemplateConfig) or None: also input_ids and num_tokens (and labels,
    # attention_mask), from the row's text_ids and layers (snactok.codec.orpheus.sequence)
    template: Any = None


def sequence_columns(meta: dict[str, Any], layers: list[np.ndarray], template: Any) -> dict[str, Any]:
    """A row's training columns, as lists: input_ids, num_tokens, and with_labels' labels and
    attention_mask."""
    ids = orpheus.sequence(meta["text_ids"], layers, template).tolist()
    columns: dict[str, Any] = {"input_ids": ids, "num_tokens": len(ids)}
    if template.with_labels:
        columns |= {"labels": ids, "attention_mask": [1] * len(ids)}
    return columns


def format_row(
    meta: dict[str, Any],
    codes: np.ndarray,
    lengths: list[int],
    constants: dict[str, Any],
    with_speaker: bool,
    flatten: str | None = None,
    template: Any = None,
) -> bytes:
    """One output line in the original pipeline's schema, plus `id` and `duration` (and `codes`
    with output.flatten=orpheus)."""
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
    row.update(meta.get("keep", ()))
    row["id"] = meta["id"]
    row["duration"] = meta["duration"]
    layers = np.split(codes, np.cumsum(lengths)[:-1])
    if flatten == "orpheus":
        row["codes"] = orpheus.flatten(layers).tolist()
    if template is not None:
        row |= sequence_columns(meta, layers, template)
    return (json.dumps(row, ensure_ascii=False) + "\n").encode()


def format_lines(rows: list[Row], columns: Columns) -> list[bytes]:
    """`format_row`'s lines for a unit's rows, byte for byte, with every token list formatted
    at once by numpy: json.dumps of Python ints costs ~80 ns a token, which capped the main
    process near 12M tokens/s; this costs a few (tests/unit/output/test_formats.py checks the bytes)."""
    taken = {"text", *(f"snac_layer_{i}" for i in range(1, columns.num_layers + 1))}
    extra = set(columns.constants) | set(columns.kept)
    if not rows or taken & extra:  # a constant that replaces a leading key: the plain way
        return [
            format_row(
                r.meta,
                r.codes,
                r.lengths,
                columns.constants,
                columns.with_speaker,
                columns.flatten,
                columns.template,
            )
            for r in rows
        ]
    lines: list[bytes] = []
    start = 0
    while start < len(rows):  # bounded groups: the digit table is ~7 bytes a token
        stop, tokens = start, 0
        while stop < len(rows) and (stop == start or tokens + rows[stop].codes.size <= 2**20):
            tokens += rows[stop].codes.size
            stop += 1
        lines += _format_group(rows[start:stop], columns)
        start = stop
    return lines


def _format_group(rows: list[Row], columns: Columns) -> list[bytes]:
    text, ends = _token_text(np.concatenate([r.codes for r in rows]))
    lines, token = [], 0
    for r in rows:
        head = json.dumps({"text": r.meta["text"]}, ensure_ascii=False)[:-1].encode()
        parts = [head]
        for i, n in enumerate(r.lengths, 1):
            first = ends[token - 1] if token else 0
            last = ends[token + n - 1] - 2 if n else first  # without the last ", "
            parts.append(b', "snac_layer_%d": [' % i + text[first:last] + b"]")
            token += n
        tail = _tail(r, columns)
        parts.append(b", " + json.dumps(tail, ensure_ascii=False)[1:].encode() + b"\n")
        lines.append(b"".join(parts))
    return lines


def _tail(r: Row, columns: Columns) -> dict[str, Any]:
    """The row's keys after its layers, in format_row's order."""
    tail: dict[str, Any] = {"num_layers": len(r.lengths), "token_lengths": list(r.lengths)}
    if columns.with_speaker:
        tail["speaker"] = r.meta["speaker"]
    tail.update(columns.constants)
    tail.update(r.meta.get("keep", ()))
    tail["id"] = r.meta["id"]
    tail["duration"] = r.meta["duration"]
    if columns.flatten == "orpheus":
        tail["codes"] = orpheus.flatten(r.layers()).tolist()
    if columns.template is not None:
        tail |= sequence_columns(r.meta, r.layers(), columns.template)
    return tail


def _token_text(codes: np.ndarray) -> tuple[bytes, np.ndarray]:
    """`b"12, 3045, 7, "` for `codes`, and the end offset of each token's text."""
    words, lengths = _digits(int(codes.max(initial=0)) + 1)
    index = codes.astype(np.intp)
    picked = words[index].view(np.uint8)  # 8 bytes a token: digits, ", ", zeros
    return picked[picked != 0].tobytes(), np.cumsum(lengths[index])


@functools.lru_cache(maxsize=4)
def _digits_for(size: int) -> tuple[np.ndarray, np.ndarray]:
    table = np.zeros((size, 8), np.uint8)
    for code in range(size):
        text = f"{code}, ".encode()
        table[code, : len(text)] = np.frombuffer(text, np.uint8)
    return table.view(np.uint64).reshape(size), (table != 0).sum(axis=1)


def _digits(needed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each code's decimal digits and ", " as one zero-padded 8-byte word, for codes below
    `needed` (at most 10**6, more than any codebook)."""
    return _digits_for(max(4096, 1 << (needed - 1).bit_length()))


def write_unit(
    directory: Path, name: str, rows: list[Row], columns: Columns, out: OutputConfig
) -> list[dict[str, Any]]:
    """Write a unit's rows in each format output.format asks for, one file each; return
    [{file, bytes, sha256}], `file` relative to the run dir, in FORMAT_SUFFIXES order."""
    files = []
    for suffix in FORMAT_SUFFIXES[out.format]:
        path = directory / f"{name}{suffix}"
        if suffix == JSONL_SUFFIX:
            lines = format_lines(rows, columns)
            size, digest = write_shard(path, lines, out.gzip_level, out.buffer_size)
        else:
            size, digest = write_parquet(path, rows, columns, out.buffer_size)
        files.append({"file": f"{directory.name}/{path.name}", "bytes": size, "sha256": digest})
    return files


def parquet_schema(columns: Columns, rows: list[Row] = ()) -> pa.Schema:
    """The JSONL row's columns in its order; token layers as list<int16> (codes < 4096)."""
    fields = [pa.field("text", pa.string())]
    fields += [
        pa.field(f"snac_layer_{i}", pa.list_(pa.int16())) for i in range(1, columns.num_layers + 1)
    ]
    fields += [pa.field("num_layers", pa.int64()), pa.field("token_lengths", pa.list_(pa.int64()))]
    if columns.with_speaker:
        fields.append(pa.field("speaker", pa.string()))
    fields += [pa.field(k, pa.scalar(v).type) for k, v in columns.constants.items()]
    fields += [pa.field(k, t) for k, t in kept_types(rows, columns).items()]
    fields.append(pa.field("id", pa.int64() if columns.id_is_int else pa.string()))
    fields.append(pa.field("duration", pa.float64()))
    if columns.flatten == "orpheus":
        fields.append(pa.field("codes", pa.list_(pa.int32())))
    if columns.template is not None:
        fields += [pa.field("input_ids", pa.list_(pa.int32())), pa.field("num_tokens", pa.int64())]
        if columns.template.with_labels:
            fields += [
                pa.field("labels", pa.list_(pa.int32())),
                pa.field("attention_mask", pa.list_(pa.int8())),
            ]
    return pa.schema(fields)


def parquet_table(rows: list[Row], columns: Columns) -> pa.Table:
    schema = parquet_schema(columns, rows)
    n = len(rows)
    layers = [r.layers() for r in rows]
    data: dict[str, pa.Array] = {"text": pa.array([r.meta["text"] for r in rows], pa.string())}
    for i in range(columns.num_layers):
        data[f"snac_layer_{i + 1}"] = _list_array([ls[i] for ls in layers], pa.int16())
    data["num_layers"] = pa.array([len(r.lengths) for r in rows], pa.int64())
    data["token_lengths"] = pa.array([list(r.lengths) for r in rows], pa.list_(pa.int64()))
    if columns.with_speaker:
        data["speaker"] = pa.array([r.meta["speaker"] for r in rows], pa.string())
    for key, value in columns.constants.items():
        data[key] = pa.array([value] * n, schema.field(key).type)
    for key in columns.kept:
        data[key] = pa.array([r.meta["keep"][key] for r in rows], schema.field(key).type)
    data["id"] = pa.array([r.meta["id"] for r in rows], schema.field("id").type)
    data["duration"] = pa.array([r.meta["duration"] for r in rows], pa.float64())
    if columns.flatten == "orpheus":
        data["codes"] = _list_array([orpheus.flatten(ls) for ls in layers], pa.int32())
    if columns.template is not None:
        data |= _sequence_arrays(rows, layers, columns.template)
    return pa.Table.from_arrays(list(data.values()), schema=schema)


def _sequence_arrays(
    rows: list[Row], layers: list[list[np.ndarray]], template: Any
) -> dict[str, pa.Array]:
    ids = [
        orpheus.sequence(r.meta["text_ids"], ls, template) for r, ls in zip(rows, layers, strict=True)
    ]
    data = {
        "input_ids": _list_array(ids, pa.int32()),
        "num_tokens": pa.array([len(s) for s in ids], pa.int64()),
    }
    if template.with_labels:
        data["labels"] = data["input_ids"]
        data["attention_mask"] = _list_array([np.ones(len(s), np.int8) for s in ids], pa.int8())
    return data


def kept_types(rows: list[Row], columns: Columns) -> dict[str, pa.DataType]:
    """Kept columns' types: the source's, else what pyarrow makes of this unit's values."""
    return {
        name: kind or pa.array([r.meta["keep"][name] for r in rows]).type
        for name, kind in columns.kept.items()
    }


def _list_array(values: list[np.ndarray], item: pa.DataType) -> pa.ListArray:
    """One list per row, built from one concatenated buffer (no Python ints)."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    flat = np.concatenate(values) if values else np.zeros(0, item.to_pandas_dtype())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, item))


def row_groups(rows: list[Row], columns: Columns, limit: int = ROW_GROUP_BYTES) -> list[tuple[int, int]]:
    """[start, stop) row ranges of at most `limit` uncompressed bytes each (a bigger row alone)."""
    per_token = 2 + (4 if columns.flatten == "orpheus" else 0)  # int16 layers (+ int32 codes)
    if columns.template is not None:  # int32 input_ids (+ int32 labels, int8 attention_mask)
        per_token += 4 + (5 if columns.template.with_labels else 0)
    groups, start, size = [], 0, 0
    for i, r in enumerate(rows):
        row_bytes = per_token * r.codes.size + len(r.meta["text"].encode()) + 64
        if size and size + row_bytes > limit:
            groups.append((start, i))
            start, size = i, 0
        size += row_bytes
    if start < len(rows):
        groups.append((start, len(rows)))
    return groups


def write_parquet(
    path: Path,
    rows: list[Row],
    columns: Columns,
    buffer_size: int,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> tuple[int, str]:
    """Write `rows` to `path` as Parquet, atomically; return (bytes, sha256) of the file."""
    table = parquet_table(rows, columns)

    def write(raw: BinaryIO) -> None:
        with pq.ParquetWriter(raw, table.schema, **PARQUET_OPTIONS) as writer:
            for start, stop in row_groups(rows, columns, row_group_bytes):
                writer.write_table(table.slice(start, stop - start), row_group_size=stop - start)

    return _write(path, buffer_size, write)


def write_shard(path: Path, lines: list[bytes], gzip_level: int, buffer_size: int) -> tuple[int, str]:
    """Write `lines` to `path` as gzip, atomically; return (bytes, sha256) of the file."""

    def write(raw: BinaryIO) -> None:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=gzip_level, mtime=0) as gz:
            for line in lines:
                gz.write(line)

    return _write(path, buffer_size, write)


def _write(path: Path, buffer_size: int, write: Callable[[BinaryIO], None]) -> tuple[int, str]:
    """`write_atomic`, then (bytes, sha256) of the file now under `path`."""
    write_atomic(path, write, buffer_size)
    return path.stat().st_size, sha256_file(path)


def read_shard(path: Path) -> list[dict[str, Any]]:
    """The rows of one gzip JSONL shard."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one shard of either format, as dicts of the JSONL row's keys."""
    if path.name.endswith(JSONL_SUFFIX):
        return read_shard(path)
    return pq.read_table(path).to_pylist()


def save_local(shards: list[Path], target: Path) -> None:
    """The original pipeline's `save_settings.local`: the whole result via datasets' save_to_disk,
    read from the JSONL shards, or from the Parquet ones when there are none (output.format)."""
    import datasets

    jsonl = [p for p in shards if p.name.endswith(JSONL_SUFFIX)]
    kind, files = ("json", jsonl) if jsonl else ("parquet", shards)
    data = datasets.load_dataset(kind, data_files=[str(p) for p in files], split="train")
    data.save_to_disk(str(target))
    log.info("saved %d rows with save_to_disk to %s", len(data), target)
