"""Dataset sources: open each as a `datasets` dataset with undecoded audio, check its columns, cut
it into units, and give each job of a multi-job run its share of them.

A unit becomes exactly one shard. It is a fixed range of `lines_per_file` input rows of one source,
or with `dataset.streaming=true` one input shard of the source's IterableDataset (a data file, or a
Parquet row group with `dataset.reshard=true`): rows are then read as they stream, never downloaded
as a whole.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from snactok.errors import ConfigError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {
    ".wav",
    ".flac",
    ".mp3",
    ".ogg",
    ".oga",
    ".opus",
    ".m4a",
    ".aac",
    ".webm",
    ".aif",
    ".aiff",
    ".au",
}
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
REPO_ROOT = Path(__file__).resolve().parents[3]


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


def open_sources(dataset_cfg: Any, max_rows: int | None) -> list[Source]:
    stream = {"streaming": dataset_cfg["streaming"], "reshard": dataset_cfg["reshard"]}
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


def per_language(dataset_cfg: Any) -> list[dict[str, Any]]:
    """The sources, one per language of `dataset.languages` (a local source's path gets
    `/<lang>`); an `add_constant` value `{lang}` becomes the language: the listed one, or without
    `dataset.languages` the source folder's name (a Common Voice release's `<lang>` dir)."""
    languages = dataset_cfg.get("languages") or [None]
    out = []
    for src in dataset_cfg["sources"]:
        for lang in languages:
            one = dict(src)
            if lang is not None and one.get("path"):
                one["path"] = str(Path(one["path"]) / lang)
            code = lang or (Path(one["path"]).name if one.get("path") else one.get("config"))
            constants = one.get("add_constant") or {}
            one["add_constant"] = {k: code if v == LANG else v for k, v in constants.items()}
            out.append(one)
    return out


def _open_source(
    index: int, src: Any, max_rows: int | None, streaming: bool = False, reshard: bool = False
) -> Source:
    shards = None
    if streaming:
        data, shards = _load_streaming(src, reshard)
    elif src["hub"]:
        data = _load_hub(src)
    else:
        data = _load_path(src)
    revision = src["revision"] if src["hub"] else None
    commit = hub_dataset_commit(src["hub"], revision) if src["hub"] else None
    local = None if src["hub"] else resolve_path(src["path"])
    label_name = (
        src["hub"].split("/")[-1] if src["hub"] else local.stem if local.is_file() else local.name
    )
    names = _column_names(data)
    # Local folders are identified by the file's path relative to the folder.
    ids = ID_COLUMNS + (("file_name",) if src["path"] else ())
    columns = {
        "text_column": src["text_column"],
        "speaker_column": _auto(src["speaker_column"], names, SPEAKER_COLUMNS),
        "id_column": _auto(src["id_column"], names, ids),
    }
    audio = _audio_columns(src["audio_column"], names, data.features, index)
    keep = _kept(src.get("keep_columns") or [], src["add_constant"], index)
    paths = {"audio_column": audio[0] if src["audio_column"] != AUTO else None, **columns}
    paths |= {f"keep_columns[{i}]": path for i, path in enumerate(keep.values())}
    _check_columns(data, names, paths, index)
    used = [top_column(path, names) for path in (*audio, *columns.values(), *keep.values()) if path]
    data = _undecoded(data.select_columns(list(dict.fromkeys(used))), audio)
    if shards is None:
        num_rows = len(data) if max_rows is None else min(len(data), max_rows)
    elif any(rows is None for _, rows in shards):
        if max_rows is not None:
            raise ConfigError(
                f"runtime.max_rows={max_rows} needs each input shard's row count, and "
                f"dataset.sources[{index}] streams files without one (only Parquet has it); "
                "set runtime.max_rows=null, or dataset.streaming=false"
            )
        num_rows = None
    else:
        total = sum(rows for _, rows in shards)
        num_rows = total if max_rows is None else min(total, max_rows)
    label = "-".join(_safe(x) for x in (label_name, src["config"] or "default", src["split"]))
    return Source(
        index=index,
        label=label,
        data=data,
        num_rows=num_rows,
        audio_columns=audio,
        text_column=src["text_column"],
        speaker_column=columns["speaker_column"],
        id_column=columns["id_column"],
        constants=dict(src["add_constant"]),
        keep=keep,
        revision=revision,
        commit=commit,
        origin=dict(src),
        shards=shards,
    )


AUTO = "auto"
SPEAKER_COLUMNS = ("speaker", "speaker_id")
ID_COLUMNS = ("id", "__key__")  # __key__: a WebDataset sample's key
# Output columns a kept source column may not take the name of (snac_layer_N is checked apart).
OUTPUT_COLUMNS = ("text", "num_layers", "token_lengths", "speaker", "id", "duration", "codes")
# A streamed audio column as plain bytes and path: a stream of Python rows (WebDataset) is
# encoded feature by feature, and datasets encodes Audio values through torchcodec (and system
# FFmpeg) even when they are never decoded.
RAW_AUDIO = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}


def lookup(row: dict, path: str) -> Any:
    """A column's value, or with a dotted path a field inside a JSON/struct column (`json.text`);
    None where a row lacks the field."""
    if path in row:
        return row[path]
    top, *keys = path.split(".")
    value = row[top]
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def top_column(path: str, names: list[str]) -> str:
    """The column a path reads: itself when a column has that name (`audio.flac`), else the part
    before the first dot."""
    return path if path in names else path.split(".")[0]


def feature_at(features: Any, path: str) -> Any:
    """The feature at a column or dotted path, or None when there is none."""
    if path in features:
        return features[path]
    top, *keys = path.split(".")
    feature = features.get(top)
    for key in keys:
        if not isinstance(feature, dict) or key not in feature:
            return None
        feature = feature[key]
    return feature


def arrow_type(feature: Any) -> pa.DataType | None:
    """The Parquet type a datasets feature is stored as; None for an unknown one."""
    if feature is None:
        return None
    return datasets.Features({"x": feature}).arrow_schema.field("x").type


def _audio_columns(chosen: str, names: list[str], features: Any, index: int) -> tuple[str, ...]:
    """`auto`: the `audio` column, else every column typed as audio (a WebDataset's `mp3`, `flac`,
    ... members), of which each row gives its first non-null."""
    if chosen != AUTO:
        return (chosen,)
    if "audio" in names:
        return ("audio",)
    typed = tuple(c for c, f in (features or {}).items() if isinstance(f, datasets.Audio))
    if not typed:
        raise ConfigError(
            f"dataset.sources[{index}] has no audio column: none is named `audio` or holds audio "
            f"files; columns are {names}. Set dataset.sources.{index}.audio_column"
        )
    return typed


def _kept(setting: Any, constants: dict[str, Any], index: int) -> dict[str, str]:
    """`keep_columns` by output name: a list names each by its path's last part (`json.dnsmos`
    -> `dnsmos`), a mapping gives the names (`{emilia_duration: json.duration}`)."""
    named = dict(setting) if isinstance(setting, dict) else {p.rsplit(".", 1)[-1]: p for p in setting}
    if not isinstance(setting, dict) and len(named) < len(setting):
        raise ConfigError(
            f"dataset.sources[{index}].keep_columns {list(setting)} end in the same name twice; "
            "name them with a mapping, e.g. keep_columns={a_text: a.text, b_text: b.text}"
        )
    for name, path in named.items():
        if name in OUTPUT_COLUMNS or name in constants or re.fullmatch(r"snac_layer_\d+", name):
            raise ConfigError(
                f"dataset.sources[{index}].keep_columns: {path!r} would be written as column "
                f"{name!r}, which the output already has; name it with a mapping, e.g. "
                f"keep_columns={{source_{name}: {path}}}"
            )
    return named


def _undecoded(data: Any, audio: tuple[str, ...]) -> Any:
    """Audio columns as undecoded {bytes, path}: Audio(decode=False) on a Dataset; plain bytes
    and path on a stream, whose rows datasets would otherwise encode through torchcodec."""
    for column in audio:
        if data.features is None or not isinstance(data.features.get(column), datasets.Audio):
            continue
        if isinstance(data, datasets.IterableDataset):
            data = data.cast_column(column, RAW_AUDIO)
        else:
            data = data.cast_column(column, datasets.Audio(decode=False))
    return data


def _auto(chosen: str | None, names: list[str], candidates: tuple[str, ...]) -> str | None:
    """A column setting: as given, or with `auto` the first candidate the data has (else none)."""
    if chosen != AUTO:
        return chosen
    return next((c for c in candidates if c in names), None)


def describe_columns(src: Source, configured: dict[str, Any]) -> str:
    """The columns a source is read with, and which were found by name, for the log."""

    def one(key: str, value: str | None, none: str) -> str:
        found = " (auto)" if configured.get(key) == AUTO and value else ""
        return f"{value!r}{found}" if value else none

    audio = " or ".join(repr(c) for c in src.audio_columns)
    kept = ", ".join(f"{path!r} as {name!r}" for name, path in src.keep.items())
    return (
        f"audio {audio}{' (auto)' if configured.get('audio_column') == AUTO else ''}, "
        f"text {one('text_column', src.text_column, 'none')}, "
        f"speaker {one('speaker_column', src.speaker_column, 'none')}, "
        f"id {one('id_column', src.id_column, 'the row index')}" + (f"; kept {kept}" if kept else "")
    )


def _load_streaming(src: Any, reshard: bool) -> tuple[datasets.IterableDataset, list]:
    """The source as an IterableDataset, and per input shard its data file and row count (read
    from Parquet footers, a few KB per file; None for formats without one)."""
    where = src["hub"] or str(resolve_path(src["path"]))
    if src["path"] and not Path(where).exists():
        raise ConfigError(f"dataset source path {src['path']!r} does not exist (resolved to {where})")
    if src["path"] and _has_audio(Path(where)):
        raise ConfigError(
            f"dataset.streaming=true reads data files (Parquet, JSON, CSV, WebDataset), locally or "
            f"from the Hub; {where} is a folder of audio files, which is read in place already. "
            "Set dataset.streaming=false"
        )
    data_files, options = src.get("data_files"), {}
    if src["path"] and Path(where).is_file():  # one local data file: its format's builder
        where, data_files = _file_builder(Path(where)), {src["split"]: where}
        options = {"delimiter": "\t"} if src["path"].lower().endswith(".tsv") else {}
    elif src["path"] and _saved_to_disk(Path(where)):
        where, data_files = "arrow", {src["split"]: _saved_files(Path(where), src["split"])}
    try:
        builder = source_builder(where, src, data_files, **options)
        data = builder.as_streaming_dataset(split=src["split"])
        files = [str(f) for f in builder.config.data_files[src["split"]]]
    except Exception as err:
        raise ConfigError(
            f"cannot stream dataset {where!r} (config={src['config']!r}, split={src['split']!r}): "
            f"{type(err).__name__}: {str(err)[:300]}"
        ) from err
    counts = _file_counts(files, reshard)
    if reshard:
        data = data.reshard()
    shards = counts or [(f, None) for f in files]
    if len(shards) != data.num_shards:  # the unit plan must match what the dataset yields
        raise ConfigError(
            f"{where}: {data.num_shards} input shards but {len(shards)} data files/row groups; "
            "set dataset.reshard=false, or stream it without splitting files"
        )
    return data, shards


def _file_counts(files: list[str], by_row_group: bool) -> list[tuple[str, int]] | None:
    """Rows per input shard, so streamed ids and order match a whole load: Parquet footers (a
    few KB per file, local or remote); local Arrow, JSON lines and CSV files are counted by a
    read (Arrow memory-mapped). None when any file has no count (WebDataset tars, remote JSON)."""
    if files and all(f.split("?")[0].endswith(".parquet") for f in files):
        return _parquet_counts(files, by_row_group)
    counts = []
    for f in files:
        path = Path(f)
        count = _LOCAL_COUNTERS.get(path.suffix.lower())
        if count is None or not path.is_file():
            return None
        counts.append((path.name, count(path)))
    return counts or None


def _parquet_counts(files: list[str], by_row_group: bool) -> list[tuple[str, int]]:
    import fsspec
    import pyarrow.parquet as pq

    counts = []
    for f in files:
        with fsspec.open(f, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        name = f.rsplit("/", 1)[-1]
        if by_row_group:
            counts += [(f"{name}#{g}", meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        else:
            counts.append((name, meta.num_rows))
    return counts


def _arrow_rows(path: Path) -> int:
    with pa.memory_map(str(path)) as source:
        return sum(batch.num_rows for batch in pa.ipc.open_stream(source))


def _json_lines_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _csv_rows(path: Path) -> int:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8") as f:
        return max(0, sum(1 for row in csv.reader(f, delimiter=delimiter) if row) - 1)


_LOCAL_COUNTERS = {
    ".arrow": _arrow_rows,
    ".jsonl": _json_lines_rows,
    ".csv": _csv_rows,
    ".tsv": _csv_rows,
}


def _column_names(data: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    """Column names; a stream without declared features shows its first row's keys."""
    if data.column_names is not None:
        return list(data.column_names)
    return list(next(iter(data.take(1)), {}).keys())


def hub_dataset_commit(repo: str, revision: str | None) -> str | None:
    """The commit SHA a Hub dataset revision points at: asked of the Hub, else read from the local
    cache (where `load_dataset` recorded it), else None (the fingerprint then keeps the name)."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().dataset_info(repo, revision=revision).sha
        except Exception as err:  # offline, auth: fall back to the cache
            log.debug("cannot ask the Hub for %s@%s: %s", repo, revision, err)
    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}" / "refs"
    ref = ref / (revision or "main")
    return ref.read_text().strip() if ref.is_file() else None


def _load_hub(src: Any) -> datasets.Dataset:
    try:
        if _is_tars(src.get("data_files")):
            return load_files(src["hub"], src, src["data_files"])
        return datasets.load_dataset(
            src["hub"],
            src["config"],
            split=src["split"],
            revision=src["revision"],
            data_files=src.get("data_files"),
        )
    except ConfigError:
        raise
    except Exception as err:
        text = str(err)
        if "script" in text.lower():
            raise ConfigError(_script_hint(src["hub"])) from err
        raise ConfigError(
            f"cannot load dataset {src['hub']!r} (config={src['config']!r}, split={src['split']!r}): "
            f"{type(err).__name__}: {text[:300]}. Offline? Datasets already in the local HF cache load "
            "with HF_DATASETS_OFFLINE=1; otherwise use dataset=local_folder dataset.path=/your/audio."
        ) from err


def _is_tars(data_files: Any) -> bool:
    """Whether `data_files` (a glob, a list, or a split -> globs mapping) names tar shards only."""
    if not data_files:
        return False
    if isinstance(data_files, dict):
        return all(_is_tars(v) for v in data_files.values())
    files = [data_files] if isinstance(data_files, str) else list(data_files)
    return all(str(f).endswith(".tar") for f in files)


def source_builder(where: str, src: Any, data_files: Any = None, **options: Any) -> Any:
    """datasets' builder for a source. For a local folder it is made twice, the second time
    with the data files the first resolved (paths and modification times), so that its cache,
    and the features datasets keeps there, belong to these files."""
    kwargs = {"revision": src["revision"], **options}
    builder = datasets.load_dataset_builder(where, src["config"], data_files=data_files, **kwargs)
    if not Path(where).is_dir() or not builder.config.data_files:
        return builder
    return datasets.load_dataset_builder(
        where, src["config"], data_files=builder.config.data_files, **kwargs
    )


def load_files(where: str, src: Any, data_files: Any = None, **options: Any) -> datasets.Dataset:
    """`datasets.load_dataset(where, ...)` for the source's config and split, with two fixes.

    The data files are passed resolved (see `source_builder`): where a local folder's README
    `configs:` or a relative glob picks them, datasets keys its cache by the folder's name and
    the config only, so two snapshots of one name would read each other's rows.

    WebDataset tars (`<key>.mp3` + `<key>.json`, ...) have one column per member extension plus
    `__key__` and `__url__`. datasets types audio members as Audio, whose encoding needs
    torchcodec, so their types are read from the first samples (as datasets infers them), audio
    members stored as plain bytes, then typed as undecoded Audio.
    """
    kwargs = {"revision": src["revision"], **options}
    builder = source_builder(where, src, data_files, **options)
    files = builder.config.data_files or {}
    if src["split"] not in files:
        raise ConfigError(
            f"{where}: no split {src['split']!r}; its splits are {sorted(files)}. Set the "
            "source's split (and config, for a README with several `configs:`)"
        )
    features, audio = None, []
    if builder.name == "webdataset":
        inferred = builder.as_streaming_dataset(split=src["split"]).features
        audio = [k for k, v in inferred.items() if isinstance(v, datasets.Audio)]
        features = datasets.Features(
            {k: datasets.Value("binary") if k in audio else v for k, v in inferred.items()}
        )
    data = datasets.load_dataset(
        where, src["config"], split=src["split"], data_files=files, features=features, **kwargs
    )
    for column in audio:  # an Arrow cast of the bytes, no encoding
        data = data.cast_column(column, datasets.Audio(decode=False))
    return data


def _script_hint(name: str) -> str:
    return (
        f"dataset {name!r} needs a loading script, which datasets >= 4 no longer runs. Read the Hub's "
        "Parquet conversion instead: set the source's `revision: refs/convert/parquet` "
        "(see conf/dataset/common_voice.yaml), or point `path` at Parquet/audio files."
    )


def resolve_path(path: str) -> Path:
    """Relative paths: the working dir first, then the repo root (so bundled data works anywhere)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    in_repo = REPO_ROOT / p
    return in_repo if in_repo.exists() else p.resolve()


# A single data file `dataset.sources[].path` may name: its suffix -> datasets' builder.
DATA_FILE_BUILDERS = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".arrow": "arrow",
    ".tar": "webdataset",
}


def _load_path(src: Any) -> datasets.Dataset:
    """A local source: a folder of audio files, one data file, a `save_to_disk` dir, or anything
    `datasets.load_dataset(path)` reads (a folder of data files, a Hub snapshot on disk)."""
    root = resolve_path(src["path"])
    if not root.exists():
        raise ConfigError(f"dataset source path {src['path']!r} does not exist (resolved to {root})")
    if root.is_file():
        options = {"delimiter": "\t"} if root.suffix.lower() == ".tsv" else {}
        return _load_local(_file_builder(root), src, {src["split"]: str(root)}, root, **options)
    if src.get("data_files"):  # files picked in a folder, e.g. a Hub snapshot's Emilia/EN/*.tar
        return _load_local(str(root), src, src["data_files"], root)
    if (root / f"{root.name}.py").exists():
        raise ConfigError(_script_hint(str(root)))
    if _saved_to_disk(root):
        return _load_saved(root, src)
    if (root / "clips").is_dir() and any(root.glob("*.tsv")):
        return load_common_voice(root, src["split"])
    split_dir = root / src["split"]
    if split_dir.is_dir() and _has_audio(split_dir):
        return load_audiofolder(split_dir)
    if _has_audio(root):
        return load_audiofolder(root)
    tars = sorted(root.rglob("*.tar"))
    if tars:
        return _load_local("webdataset", src, {src["split"]: [str(t) for t in tars]}, root)
    return _load_local(str(root), src, None, root)


def _load_local(where: str, src: Any, data_files: Any, root: Path, **options: Any) -> datasets.Dataset:
    try:
        return load_files(where, src, data_files, **options)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(_unreadable(root, src, err)) from err


def _file_builder(path: Path) -> str:
    builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ConfigError(
            f"dataset source path {str(path)!r} is a {path.suffix or 'suffix-less'} file; a single "
            f"file must be one of {sorted(DATA_FILE_BUILDERS)}, or give a folder of audio files"
        )
    return builder


def _saved_to_disk(root: Path) -> bool:
    """A dir `Dataset.save_to_disk` or `DatasetDict.save_to_disk` wrote."""
    return (root / "state.json").is_file() or (root / "dataset_dict.json").is_file()


def _saved_files(root: Path, split: str) -> list[str]:
    """A save_to_disk dir's Arrow files in the order load_from_disk reads them."""
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
        if split not in splits:
            raise ConfigError(
                f"{root} (a save_to_disk DatasetDict) has splits {splits}, not {split!r}; set the "
                f"source's split, e.g. dataset.sources.0.split={splits[0]}"
            )
        root = root / split
    state = json.loads((root / "state.json").read_text())
    return [str(root / f["filename"]) for f in state["_data_files"]]


def _load_saved(root: Path, src: Any) -> datasets.Dataset:
    data = datasets.load_from_disk(str(root))
    if isinstance(data, datasets.DatasetDict):
        if src["split"] not in data:
            raise ConfigError(
                f"{root} (a save_to_disk DatasetDict) has splits {sorted(data)}, not "
                f"{src['split']!r}; set the source's split, e.g. dataset.sources.0.split={sorted(data)[0]}"
            )
        data = data[src["split"]]
    return data


def _unreadable(root: Path, src: Any, err: Exception) -> str:
    """What was found at `root` and what it could be, instead of a library's traceback."""
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    found = Counter(f.suffix.lower() or "(no suffix)" for f in files[:10000])
    seen = ", ".join(
        f"{n} {suffix}" for suffix, n in sorted(found.items(), key=lambda x: (-x[1], x[0]))[:6]
    )
    return (
        f"cannot read dataset source {str(root)!r} (split={src['split']!r}): "
        f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}. Found "
        f"{seen or 'no files'}. A local source is a folder of audio files (with an optional "
        "metadata.csv), one Parquet/JSONL/CSV/Arrow file, a save_to_disk dir, or a folder of "
        "data files datasets can load; for a split other than train, set the source's `split`"
    )


def load_common_voice(root: Path, split: str) -> datasets.Dataset:
    """A Common Voice release's language dir as the Mozilla Data Collective ships it: `clips/*.mp3`
    and one TSV per split (`train.tsv`, `dev.tsv`, `test.tsv`, `validated.tsv`, ...) with columns
    `client_id, path, sentence_id, sentence, ..., locale`. Every TSV column is kept; `audio` is
    added, pointing into `clips/`. The TSVs are not quoted: a `"` in a sentence is text."""
    tsv = root / f"{split}.tsv"
    if not tsv.is_file():
        splits = sorted(p.stem for p in root.glob("*.tsv"))
        raise ConfigError(
            f"{root} is a Common Voice release dir without {tsv.name}; its splits are {splits}: set "
            f"the source's split, e.g. dataset.sources.0.split={'validated' if 'validated' in splits else splits[0]}"
        )
    with open(tsv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    if "path" not in columns:
        raise ConfigError(f"{tsv} has no `path` column; columns are {columns}")
    data = datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns})
    audio = [{"bytes": None, "path": str(root / "clips" / r["path"])} for r in rows]
    return data.add_column("audio", audio).cast_column("audio", datasets.Audio(decode=False))


def _has_audio(root: Path) -> bool:
    return any(p.suffix.lower() in AUDIO_EXTENSIONS for p in root.rglob("*") if p.is_file())


def load_audiofolder(root: Path) -> datasets.Dataset:
    """HF's audiofolder layout: audio files plus optional metadata.csv/.jsonl with `file_name`.

    datasets' own `audiofolder` builder encodes every example through torchcodec, which needs system
    FFmpeg; we read the same layout ourselves and keep the audio undecoded. `file_name`, the path
    relative to the folder, becomes the row id.
    """
    meta = next((root / m for m in METADATA_FILES if (root / m).is_file()), None)
    if meta is None:
        files = sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS
        )
        data = datasets.Dataset.from_dict({"file_name": files})
    else:
        kind = "csv" if meta.suffix == ".csv" else "json"
        data = datasets.load_dataset(kind, data_files=str(meta), split="train")
        if "file_name" not in data.column_names:
            raise ConfigError(f"{meta} has no `file_name` column; columns are {data.column_names}")
    paths = [{"bytes": None, "path": str(root / f)} for f in data["file_name"]]
    data = data.add_column("audio", paths)
    return data.cast_column("audio", datasets.Audio(decode=False))


def _check_columns(data: Any, names: list[str], paths: dict[str, str | None], index: int) -> None:
    for key, path in paths.items():
        if not path:
            continue
        top = top_column(path, names)
        if top not in names:
            nested = [c for c in names if isinstance((data.features or {}).get(c), dict)]
            hint = (
                f"; a field inside {nested[0]!r} is a dotted path, e.g. {nested[0]}.text"
                if nested
                else ""
            )
            raise ConfigError(
                f"unknown dataset column {path!r} (dataset.sources[{index}].{key}); "
                f"columns are {names}{hint}"
            )
        if path != top and data.features is not None and feature_at(data.features, path) is None:
            fields = list(data.features[top]) if isinstance(data.features[top], dict) else []
            raise ConfigError(
                f"dataset column {top!r} has no field {path[len(top) + 1 :]!r} "
                f"(dataset.sources[{index}].{key}); its fields are "
                + (
                    f"{fields}: e.g. dataset.sources.{index}.{key}={top}.{fields[0]}"
                    if fields
                    else f"none (it is not a JSON/struct column): e.g. dataset.sources.{index}.{key}={top}"
                )
            )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text))
