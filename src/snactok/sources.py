"""Dataset sources: open each as a `datasets.Dataset` with undecoded audio, check its columns, cut it
into units.

A unit is a fixed range of `lines_per_file` input rows of one source and becomes exactly one shard.
"""

from __future__ import annotations

import hashlib
import logging
import re
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
    data: datasets.Dataset
    num_rows: int
    audio_column: str
    text_column: str | None
    speaker_column: str | None
    id_column: str | None  # None: local folders use the file path, Hub sets the row index
    constants: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    commit: str | None = None  # the Hub commit `revision` resolved to
    origin: dict[str, Any] = field(default_factory=dict)  # the source's config

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows [start, stop) as dicts with keys audio, text, speaker, id."""
        batch = self.data[start:stop]
        n = stop - start
        ids = batch[self.id_column] if self.id_column else range(start, stop)
        return [
            {
                "audio": batch[self.audio_column][i],
                "text": batch[self.text_column][i] if self.text_column else "",
                "speaker": batch[self.speaker_column][i] if self.speaker_column else None,
                "id": ids[i],
            }
            for i in range(n)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rows": self.num_rows,
            "revision": self.revision,
            "commit": self.commit,
        }

    def identity(self) -> dict[str, Any]:
        """What decides this source's rows and their bytes, for a run's fingerprint.

        A Hub source is pinned by its commit; a local one by its path and a hash of its row ids
        (file names), so an added, removed or renamed file shows.
        """
        ids = hashlib.sha256()
        if self.id_column:
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
            "ids_sha256": ids.hexdigest() if self.id_column else None,
        }


@dataclass(frozen=True)
class Unit:
    """Rows [start, stop) of source `source`; written as shard `name`."""

    index: int  # position in the run's unit list
    source: int
    number: int  # unit number within its source, in the shard name
    start: int
    stop: int
    name: str

    @property
    def rows(self) -> int:
        return self.stop - self.start


def open_sources(dataset_cfg: Any, max_rows: int | None) -> list[Source]:
    sources = [_open_source(i, src, max_rows) for i, src in enumerate(dataset_cfg["sources"])]
    labels = [s.label for s in sources]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(
            f"dataset.sources give the same shard names {dupes}; set distinct config/split"
        )
    return sources


def plan_units(sources: list[Source], lines_per_file: int) -> list[Unit]:
    units = []
    for src in sources:
        for number, start in enumerate(range(0, src.num_rows, lines_per_file)):
            stop = min(start + lines_per_file, src.num_rows)
            name = f"{src.label}-{number:05d}"
            units.append(Unit(len(units), src.index, number, start, stop, name))
    return units


def _open_source(index: int, src: Any, max_rows: int | None) -> Source:
    commit = None
    if src["hub"]:
        data, revision = _load_hub(src), src["revision"]
        commit = hub_dataset_commit(src["hub"], revision)
        label_name = src["hub"].split("/")[-1]
    else:
        data, revision = _load_path(src), None
        label_name = resolve_path(src["path"]).name
    # Local folders are identified by the file's path relative to the folder.
    local_id = "file_name" if src["path"] and "file_name" in data.column_names else None
    columns = {
        "audio_column": src["audio_column"],
        "text_column": src["text_column"],
        "speaker_column": src["speaker_column"],
        "id_column": src["id_column"] or local_id,
    }
    _check_columns(data, columns, index)
    audio = columns["audio_column"]
    data = data.select_columns(list(dict.fromkeys(c for c in columns.values() if c)))
    if isinstance(data.features[audio], datasets.Audio):
        data = data.cast_column(audio, datasets.Audio(decode=False))
    num_rows = len(data) if max_rows is None else min(len(data), max_rows)
    label = "-".join(_safe(x) for x in (label_name, src["config"] or "default", src["split"]))
    return Source(
        index=index,
        label=label,
        data=data,
        num_rows=num_rows,
        audio_column=audio,
        text_column=src["text_column"],
        speaker_column=src["speaker_column"],
        id_column=columns["id_column"],
        constants=dict(src["add_constant"]),
        revision=revision,
        commit=commit,
        origin=dict(src),
    )


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


def _load_path(src: Any) -> datasets.Dataset:
    root = resolve_path(src["path"])
    if not root.exists():
        raise ConfigError(f"dataset source path {src['path']!r} does not exist (resolved to {root})")
    if root.is_dir() and (root / f"{root.name}.py").exists():
        raise ConfigError(_script_hint(str(root)))
    split_dir = root / src["split"]
    if split_dir.is_dir() and _has_audio(split_dir):
        return load_audiofolder(split_dir)
    if root.is_dir() and _has_audio(root):
        return load_audiofolder(root)
    return datasets.load_dataset(str(root), src["config"], split=src["split"])


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


def _check_columns(data: datasets.Dataset, columns_by_key: dict[str, str | None], index: int) -> None:
    columns = list(data.column_names)
    for key, name in columns_by_key.items():
        if name and name not in columns:
            raise ConfigError(
                f"unknown dataset column {name!r} (dataset.sources[{index}].{key}); "
                f"columns are {columns}"
            )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text))
