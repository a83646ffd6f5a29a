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
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from snactok.config import ConfigError

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
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Source:
    """One opened source: its rows, its column names and the label its shards are named by."""

    index: int
    label: str  # <dataset>-<config>-<split>, the shard file prefix
    data: datasets.Dataset | datasets.IterableDataset
    num_rows: int | None  # None: streaming input whose row counts no metadata gives
    audio_column: str
    text_column: str | None
    speaker_column: str | None
    id_column: str | None  # None: local folders use the file path, Hub sets the row index
    constants: dict[str, Any] = field(default_factory=dict)
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
            yield index, self._row(row, row[self.id_column] if self.id_column else fallback)

    def _row(self, row: dict, row_id: Any) -> dict[str, Any]:
        return {
            "audio": row[self.audio_column],
            "text": row[self.text_column] if self.text_column else "",
            "speaker": row[self.speaker_column] if self.speaker_column else None,
            "id": row_id,
        }

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows [start, stop) as dicts with keys audio, text, speaker, id."""
        batch = self.data[start:stop]
        n = stop - start
        ids = batch[self.id_column] if self.id_column else range(start, stop)
        return [self._row({k: v[i] for k, v in batch.items()}, ids[i]) for i in range(n)]

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rows": self.num_rows,
            "revision": self.revision,
            "commit": self.commit,
            "streaming": self.streaming,
            # as read: `auto` settings resolved, `{lang}` constants filled in
            "columns": {
                "audio": self.audio_column,
                "text": self.text_column,
                "speaker": self.speaker_column,
                "id": self.id_column,
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
            column = self.data.select_columns([self.id_column])[: self.num_rows][self.id_column]
            for rid in column:
                ids.update(f"{rid}\n".encode())
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


@dataclass(frozen=True)
class Unit:
    """Rows [start, stop) of source `source`, or its input shard `number` when `shard` is set;
    written as shard `name`. A streamed shard with no row count has start and stop None."""

    index: int  # position in the run's unit list
    source: int
    number: int  # unit number within its source, in the shard name
    start: int | None
    stop: int | None
    name: str
    shard: bool = False  # streaming: `number` is the source's input shard

    @property
    def rows(self) -> int | None:
        return None if self.start is None else self.stop - self.start


def job_units(units: list[Unit], num_jobs: int, job_index: int) -> list[Unit]:
    """Job `job_index` of `num_jobs` takes every num_jobs-th unit from its own index on: disjoint,
    together complete, the same on every node, and mixing big and small sources evenly."""
    return units[job_index::num_jobs]


def owner(unit_index: int, num_jobs: int) -> int:
    """The job_index that `job_units` gives unit `unit_index` to."""
    return unit_index % num_jobs


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


def plan_units(sources: list[Source], lines_per_file: int) -> list[Unit]:
    units: list[Unit] = []
    for src in sources:
        if src.streaming:
            units += _shard_units(src, len(units))
            continue
        for number, start in enumerate(range(0, src.num_rows, lines_per_file)):
            stop = min(start + lines_per_file, src.num_rows)
            name = f"{src.label}-{number:05d}"
            units.append(Unit(len(units), src.index, number, start, stop, name))
    return units


def _shard_units(src: Source, first: int) -> list[Unit]:
    """One unit per input shard; row ranges follow from the counts when metadata gives them, and
    `runtime.max_rows` cuts the last one (shards past it are left out)."""
    units, start = [], 0
    for number, (_, rows) in enumerate(src.shards):
        if rows is None:
            span = (None, None)
        elif src.num_rows is not None and start >= src.num_rows:
            break
        else:
            span = (start, min(start + rows, src.num_rows))
            start += rows
        name = f"{src.label}-{number:05d}"
        units.append(Unit(first + len(units), src.index, number, *span, name, shard=True))
    return units


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
        "audio_column": src["audio_column"],
        "text_column": src["text_column"],
        "speaker_column": _auto(src["speaker_column"], names, SPEAKER_COLUMNS),
        "id_column": _auto(src["id_column"], names, ids),
    }
    _check_columns(names, columns, index)
    audio = columns["audio_column"]
    data = data.select_columns(list(dict.fromkeys(c for c in columns.values() if c)))
    if data.features is not None and isinstance(data.features[audio], datasets.Audio):
        data = data.cast_column(audio, datasets.Audio(decode=False))
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
        audio_column=audio,
        text_column=src["text_column"],
        speaker_column=columns["speaker_column"],
        id_column=columns["id_column"],
        constants=dict(src["add_constant"]),
        revision=revision,
        commit=commit,
        origin=dict(src),
        shards=shards,
    )


AUTO = "auto"
SPEAKER_COLUMNS = ("speaker", "speaker_id")
ID_COLUMNS = ("id",)


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

    return (
        f"audio {src.audio_column!r}, text {one('text_column', src.text_column, 'none')}, "
        f"speaker {one('speaker_column', src.speaker_column, 'none')}, "
        f"id {one('id_column', src.id_column, 'the row index')}"
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
    try:
        builder = datasets.load_dataset_builder(where, src["config"], revision=src["revision"])
        data = builder.as_streaming_dataset(split=src["split"])
        files = [str(f) for f in builder.config.data_files[src["split"]]]
    except Exception as err:
        raise ConfigError(
            f"cannot stream dataset {where!r} (config={src['config']!r}, split={src['split']!r}): "
            f"{type(err).__name__}: {str(err)[:300]}"
        ) from err
    counts = _parquet_counts(files, reshard)
    if reshard:
        data = data.reshard()
    shards = counts or [(f, None) for f in files]
    if len(shards) != data.num_shards:  # the unit plan must match what the dataset yields
        raise ConfigError(
            f"{where}: {data.num_shards} input shards but {len(shards)} data files/row groups; "
            "set dataset.reshard=false, or stream it without splitting files"
        )
    return data, shards


def _parquet_counts(files: list[str], by_row_group: bool) -> list[tuple[str, int]] | None:
    if not files or not all(f.split("?")[0].endswith(".parquet") for f in files):
        return None
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
        return datasets.load_dataset(
            src["hub"], src["config"], split=src["split"], revision=src["revision"]
        )
    except Exception as err:
        text = str(err)
        if "script" in text.lower():
            raise ConfigError(_script_hint(src["hub"])) from err
        raise ConfigError(
            f"cannot load dataset {src['hub']!r} (config={src['config']!r}, split={src['split']!r}): "
            f"{type(err).__name__}: {text[:300]}. Offline? Datasets already in the local HF cache load "
            "with HF_DATASETS_OFFLINE=1; otherwise use dataset=local_folder dataset.path=/your/audio."
        ) from err


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
}


def _load_path(src: Any) -> datasets.Dataset:
    """A local source: a folder of audio files, one data file, a `save_to_disk` dir, or anything
    `datasets.load_dataset(path)` reads (a folder of data files, a Hub snapshot on disk)."""
    root = resolve_path(src["path"])
    if not root.exists():
        raise ConfigError(f"dataset source path {src['path']!r} does not exist (resolved to {root})")
    if root.is_file():
        return _load_data_file(root, src)
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
    try:
        return datasets.load_dataset(str(root), src["config"], split=src["split"])
    except Exception as err:
        raise ConfigError(_unreadable(root, src, err)) from err


def _load_data_file(path: Path, src: Any) -> datasets.Dataset:
    builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ConfigError(
            f"dataset source path {str(path)!r} is a {path.suffix or 'suffix-less'} file; a single "
            f"file must be one of {sorted(DATA_FILE_BUILDERS)}, or give a folder of audio files"
        )
    options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        return datasets.load_dataset(
            builder, data_files={src["split"]: str(path)}, split=src["split"], **options
        )
    except Exception as err:
        raise ConfigError(_unreadable(path, src, err)) from err


def _saved_to_disk(root: Path) -> bool:
    """A dir `Dataset.save_to_disk` or `DatasetDict.save_to_disk` wrote."""
    return (root / "state.json").is_file() or (root / "dataset_dict.json").is_file()


def _load_saved(root: Path, src: Any) -> datasets.Dataset:
    data = datasets.load_from_disk(str(root))
    if isinstance(data, datasets.DatasetDict):
        if src["split"] not in data:
            raise ConfigError(
                f"{root} (a save_to_disk DatasetDict) has splits {sorted(data)}, not "
                f"{src['split']!r}; set the source's split, e.g. dataset.sources[0].split={sorted(data)[0]}"
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


def _check_columns(columns: list[str], columns_by_key: dict[str, str | None], index: int) -> None:
    for key, name in columns_by_key.items():
        if name and name not in columns:
            raise ConfigError(
                f"unknown dataset column {name!r} (dataset.sources[{index}].{key}); "
                f"columns are {columns}"
            )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text))
