"""Dataset sources: open each configured source (one per language of `dataset.languages`) as a
`Source`, with its columns resolved and checked, ready to be cut into units (`inputs/units.py`).

How each input layout is loaded is in `inputs/layouts.py`; column paths, `auto` columns and their
checks in `inputs/columns.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from snactok.config.schema import DatasetConfig, SourceConfig, plain
from snactok.errors import ConfigError
from snactok.inputs.columns import (
    AUTO,
    ID_COLUMNS,
    SPEAKER_COLUMNS,
    audio_columns,
    auto_column,
    check_columns,
    column_names,
    feature_at,
    kept_columns,
    lookup,
    top_column,
    undecoded,
)
from snactok.inputs.layouts import (
    hub_dataset_commit,
    load_hub,
    load_path,
    load_streaming,
    resolve_path,
)

log = logging.getLogger(__name__)


@dataclass
class Source:
    """One opened source: its rows, its column names and the label its shards are named by."""

    index: int
    label: str  # <dataset>-<config>-<split>, the shard file prefix
    data: datasets.Dataset | datasets.IterableDataset
    num_rows: int | None  # None: streaming input whose row counts no metadata gives
    # The audio column; with several (a WebDataset's .mp3/.flac members), a row's first non-null.
    audio_columns: tuple[str, ...]
    # Columns, or dotted paths into a JSON/struct column (`json.text`); None: not read.
    text_column: str | None
    speaker_column: str | None
    id_column: str | None  # None: the row index
    constants: dict[str, Any] = field(default_factory=dict)
    keep: dict[str, str] = field(default_factory=dict)  # output column -> its path in the source
    revision: str | None = None
    commit: str | None = None  # the Hub commit `revision` resolved to
    origin: dict[str, Any] = field(default_factory=dict)  # the source's config
    # Streaming: one entry per input shard, its file and rows (None: unknown until read).
    shards: list[tuple[str, int | None]] | None = None

    @property
    def streaming(self) -> bool:
        return self.shards is not None

    def read(self, start: int | None, stop: int | None, shard: int | None) -> Iterator[tuple[int, dict]]:
        """(row index, row) for rows [start, stop), or for input shard `shard` when streaming.

        A streamed shard's rows are indexed from its first row's place in the source (`start`);
        when no metadata gave that place, from 0 within the shard, with ids `<shard name>/<row>`.
        """
        if shard is None:
            yield from enumerate(self.rows(start, stop), start)
            return
        limit = None if stop is None else stop - start
        rows = self.data.shard(num_shards=len(self.shards), index=shard, contiguous=True)
        for offset, row in enumerate(itertools.islice(rows, limit)):
            index = offset if start is None else start + offset
            fallback = f"{self.label}-{shard:05d}/{offset}" if start is None else index
            yield index, self._row(row, index if start is not None else fallback)

    def _row(self, row: dict, index: Any) -> dict[str, Any]:
        audio = next((row[c] for c in self.audio_columns if row[c] is not None), None)
        out = {
            "audio": audio,
            "text": lookup(row, self.text_column) if self.text_column else "",
            "speaker": lookup(row, self.speaker_column) if self.speaker_column else None,
            "id": lookup(row, self.id_column) if self.id_column else index,
        }
        if self.keep:
            out["keep"] = {name: lookup(row, path) for name, path in self.keep.items()}
        return out

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows [start, stop) as dicts with keys audio, text, speaker, id (and keep)."""
        batch = self.data[start:stop]
        return [
            self._row({k: v[i] for k, v in batch.items()}, index)
            for i, index in enumerate(range(start, stop))
        ]

    def feature(self, path: str) -> Any:
        """The datasets feature at a column or dotted path; None when the source has no types."""
        return feature_at(self.data.features, path) if self.data.features is not None else None

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rows": self.num_rows,
            "revision": self.revision,
            "commit": self.commit,
            "streaming": self.streaming,
            # as read: `auto` settings resolved, `{lang}` constants filled in
            "columns": {
                "audio": ",".join(self.audio_columns),
                "text": self.text_column,
                "speaker": self.speaker_column,
                "id": self.id_column,
                **({"keep": dict(self.keep)} if self.keep else {}),
            },
            "constants": dict(self.constants),
        }

    def identity(self) -> dict[str, Any]:
        """What decides this source's rows and their bytes, for a run's fingerprint.

        A Hub source is pinned by its commit; a local one by its path and a hash of its row ids
        (file names), so an added, removed or renamed file shows.
        """
        ids = hashlib.sha256()
        if self.id_column and not self.streaming:
            top = top_column(self.id_column, self.data.column_names)
            column = self.data.select_columns([top])[: self.num_rows][top]
            for value in column:
                ids.update(f"{lookup({top: value}, self.id_column)}\n".encode())
        # The commit stands for the revision it came from; without one, the revision's name.
        origin = {k: v for k, v in self.origin.items() if k != "revision" or self.commit is None}
        return {
            **origin,
            "path": str(resolve_path(origin["path"])) if origin.get("path") else None,
            "commit": self.commit,
            "rows": self.num_rows,
            "ids_sha256": ids.hexdigest() if self.id_column and not self.streaming else None,
            # streaming: the input shards (data files or row groups) are the units
            "input_shards": [list(x) for x in self.shards] if self.streaming else None,
        }


def open_sources(dataset_cfg: DatasetConfig, max_rows: int | None) -> list[Source]:
    stream = {"streaming": dataset_cfg.streaming, "reshard": dataset_cfg.reshard}
    configured = per_language(dataset_cfg)
    sources = [_open_source(i, src, max_rows, **stream) for i, src in enumerate(configured)]
    for src, conf in zip(sources, configured, strict=True):
        log.info("source %d %s: columns %s", src.index, src.label, describe_columns(src, conf))
    labels = [s.label for s in sources]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(
            f"dataset.sources give the same shard names {dupes}; set distinct config/split"
        )
    return sources


LANG = "{lang}"


def per_language(dataset_cfg: DatasetConfig) -> list[SourceConfig]:
    """The sources, one per language of `dataset.languages` (a local source's path gets
    `/<lang>`); an `add_constant` value `{lang}` becomes the language: the listed one, or without
    `dataset.languages` the source folder's name (a Common Voice release's `<lang>` dir)."""
    languages = dataset_cfg.languages or [None]
    out = []
    for src in dataset_cfg.sources:
        for lang in languages:
            one = dataclasses.replace(src)
            if lang is not None and one.path:
                one.path = str(Path(one.path) / lang)
            code = lang or (Path(one.path).name if one.path else one.config)
            constants = one.add_constant or {}
            one.add_constant = {k: code if v == LANG else v for k, v in constants.items()}
            out.append(one)
    return out


def _open_source(
    index: int, src: SourceConfig, max_rows: int | None, streaming: bool = False, reshard: bool = False
) -> Source:
    data, shards = _load(src, streaming, reshard)
    revision = src.revision if src.hub else None
    commit = hub_dataset_commit(src.hub, revision) if src.hub else None
    data, audio, columns, keep = _read_columns(data, src, index)
    return Source(
        index=index,
        label=_label(src),
        data=data,
        num_rows=_num_rows(data, shards, max_rows, index),
        audio_columns=audio,
        text_column=src.text_column,
        speaker_column=columns["speaker_column"],
        id_column=columns["id_column"],
        constants=dict(src.add_constant),
        keep=keep,
        revision=revision,
        commit=commit,
        origin=plain(src),
        shards=shards,
    )


def _load(src: SourceConfig, streaming: bool, reshard: bool) -> tuple[Any, list | None]:
    """The source's rows, and with streaming its input shards."""
    if streaming:
        return load_streaming(src, reshard)
    return (load_hub(src) if src.hub else load_path(src)), None


def _read_columns(
    data: Any, src: SourceConfig, index: int
) -> tuple[Any, tuple[str, ...], dict[str, str | None], dict[str, str]]:
    """The data cut to the columns it is read with, audio undecoded; its audio columns, its text,
    speaker and id columns (`auto` resolved), and its kept columns by output name."""
    names = column_names(data)
    # Local folders are identified by the file's path relative to the folder.
    ids = ID_COLUMNS + (("file_name",) if src.path else ())
    columns = {
        "text_column": src.text_column,
        "speaker_column": auto_column(src.speaker_column, names, SPEAKER_COLUMNS),
        "id_column": auto_column(src.id_column, names, ids),
    }
    audio = audio_columns(src.audio_column, names, data.features, index)
    keep = kept_columns(src.keep_columns or [], src.add_constant, index)
    paths = {"audio_column": audio[0] if src.audio_column != AUTO else None, **columns}
    paths |= {f"keep_columns[{i}]": path for i, path in enumerate(keep.values())}
    check_columns(data, names, paths, index)
    used = [top_column(path, names) for path in (*audio, *columns.values(), *keep.values()) if path]
    data = undecoded(data.select_columns(list(dict.fromkeys(used))), audio)
    return data, audio, columns, keep


def _num_rows(data: Any, shards: list | None, max_rows: int | None, index: int) -> int | None:
    """The rows a source gives (at most `max_rows`); None for a stream without row counts."""
    if shards is None:
        return len(data) if max_rows is None else min(len(data), max_rows)
    if any(rows is None for _, rows in shards):
        if max_rows is not None:
            raise ConfigError(
                f"runtime.max_rows={max_rows} needs each input shard's row count, and "
                f"dataset.sources[{index}] streams files without one (only Parquet has it); "
                "set runtime.max_rows=null, or dataset.streaming=false"
            )
        return None
    total = sum(rows for _, rows in shards)
    return total if max_rows is None else min(total, max_rows)


def _label(src: SourceConfig) -> str:
    """`<dataset>-<config>-<split>`: the shard file prefix."""
    if src.hub:
        name = src.hub.split("/")[-1]
    else:
        local = resolve_path(src.path)
        name = local.stem if local.is_file() else local.name
    return "-".join(_safe(x) for x in (name, src.config or "default", src.split))


def describe_columns(src: Source, configured: SourceConfig) -> str:
    """The columns a source is read with, and which were found by name, for the log."""

    def one(key: str, value: str | None, none: str) -> str:
        found = " (auto)" if getattr(configured, key) == AUTO and value else ""
        return f"{value!r}{found}" if value else none

    audio = " or ".join(repr(c) for c in src.audio_columns)
    kept = ", ".join(f"{path!r} as {name!r}" for name, path in src.keep.items())
    return (
        f"audio {audio}{' (auto)' if configured.audio_column == AUTO else ''}, "
        f"text {one('text_column', src.text_column, 'none')}, "
        f"speaker {one('speaker_column', src.speaker_column, 'none')}, "
        f"id {one('id_column', src.id_column, 'the row index')}" + (f"; kept {kept}" if kept else "")
    )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text))
