"""Every input layout opened as a `datasets` dataset with undecoded audio: a folder of audio files
(HF's audiofolder), a Common Voice release dir, one data file, a `save_to_disk` dir, a folder of
data files or a Hub snapshot on disk, WebDataset tars, the Hub, and any of these as a stream
(`dataset.streaming=true`). Errors say what was found and what the source could be instead."""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from snactok.config.schema import SourceConfig
from snactok.errors import ConfigError
from snactok.inputs.counts import file_counts

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


def load_path(src: SourceConfig) -> datasets.Dataset:
    """A local source: a folder of audio files, one data file, a `save_to_disk` dir, or anything
    `datasets.load_dataset(path)` reads (a folder of data files, a Hub snapshot on disk)."""
    root = resolve_path(src.path)
    if not root.exists():
        raise ConfigError(f"dataset source path {src.path!r} does not exist (resolved to {root})")
    if root.is_file():
        options = {"delimiter": "\t"} if root.suffix.lower() == ".tsv" else {}
        return _load_local(_file_builder(root), src, {src.split: str(root)}, root, **options)
    if src.data_files:  # files picked in a folder, e.g. a Hub snapshot's Emilia/EN/*.tar
        return _load_local(str(root), src, src.data_files, root)
    if (root / f"{root.name}.py").exists():
        raise ConfigError(_script_hint(str(root)))
    if _saved_to_disk(root):
        return _load_saved(root, src)
    if (root / "clips").is_dir() and any(root.glob("*.tsv")):
        return load_common_voice(root, src.split)
    split_dir = root / src.split
    if split_dir.is_dir() and _has_audio(split_dir):
        return load_audiofolder(split_dir)
    if _has_audio(root):
        return load_audiofolder(root)
    tars = sorted(root.rglob("*.tar"))
    if tars:
        return _load_local("webdataset", src, {src.split: [str(t) for t in tars]}, root)
    return _load_local(str(root), src, None, root)


def _load_local(
    where: str, src: SourceConfig, data_files: Any, root: Path, **options: Any
) -> datasets.Dataset:
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


def _load_saved(root: Path, src: SourceConfig) -> datasets.Dataset:
    data = datasets.load_from_disk(str(root))
    if isinstance(data, datasets.DatasetDict):
        if src.split not in data:
            raise ConfigError(
                f"{root} (a save_to_disk DatasetDict) has splits {sorted(data)}, not "
                f"{src.split!r}; set the source's split, e.g. dataset.sources.0.split={sorted(data)[0]}"
            )
        data = data[src.split]
    return data


def _unreadable(root: Path, src: SourceConfig, err: Exception) -> str:
    """What was found at `root` and what it could be, instead of a library's traceback."""
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    found = Counter(f.suffix.lower() or "(no suffix)" for f in files[:10000])
    seen = ", ".join(
        f"{n} {suffix}" for suffix, n in sorted(found.items(), key=lambda x: (-x[1], x[0]))[:6]
    )
    return (
        f"cannot read dataset source {str(root)!r} (split={src.split!r}): "
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


def source_builder(where: str, src: SourceConfig, data_files: Any = None, **options: Any) -> Any:
    """datasets' builder for a source. For a local folder it is made twice, the second time
    with the data files the first resolved (paths and modification times), so that its cache,
    and the features datasets keeps there, belong to these files."""
    kwargs = {"revision": src.revision, **options}
    builder = datasets.load_dataset_builder(where, src.config, data_files=data_files, **kwargs)
    if not Path(where).is_dir() or not builder.config.data_files:
        return builder
    return datasets.load_dataset_builder(
        where, src.config, data_files=builder.config.data_files, **kwargs
    )


def load_files(
    where: str, src: SourceConfig, data_files: Any = None, **options: Any
) -> datasets.Dataset:
    """`datasets.load_dataset(where, ...)` for the source's config and split, with two fixes.

    The data files are passed resolved (see `source_builder`): where a local folder's README
    `configs:` or a relative glob picks them, datasets keys its cache by the folder's name and
    the config only, so two snapshots of one name would read each other's rows.

    WebDataset tars (`<key>.mp3` + `<key>.json`, ...) have one column per member extension plus
    `__key__` and `__url__`. datasets types audio members as Audio, whose encoding needs
    torchcodec, so their types are read from the first samples (as datasets infers them), audio
    members stored as plain bytes, then typed as undecoded Audio.
    """
    kwargs = {"revision": src.revision, **options}
    builder = source_builder(where, src, data_files, **options)
    files = builder.config.data_files or {}
    if src.split not in files:
        raise ConfigError(
            f"{where}: no split {src.split!r}; its splits are {sorted(files)}. Set the "
            "source's split (and config, for a README with several `configs:`)"
        )
    features, audio = None, []
    if builder.name == "webdataset":
        inferred = builder.as_streaming_dataset(split=src.split).features
        audio = [k for k, v in inferred.items() if isinstance(v, datasets.Audio)]
        features = datasets.Features(
            {k: datasets.Value("binary") if k in audio else v for k, v in inferred.items()}
        )
    data = datasets.load_dataset(
        where, src.config, split=src.split, data_files=files, features=features, **kwargs
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


def load_hub(src: SourceConfig) -> datasets.Dataset:
    try:
        if _is_tars(src.data_files):
            return load_files(src.hub, src, src.data_files)
        return datasets.load_dataset(
            src.hub,
            src.config,
            split=src.split,
            revision=src.revision,
            data_files=src.data_files,
        )
    except ConfigError:
        raise
    except Exception as err:
        text = str(err)
        if "script" in text.lower():
            raise ConfigError(_script_hint(src.hub)) from err
        raise ConfigError(
            f"cannot load dataset {src.hub!r} (config={src.config!r}, split={src.split!r}): "
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


def load_streaming(src: SourceConfig, reshard: bool) -> tuple[datasets.IterableDataset, list]:
    """The source as an IterableDataset, and per input shard its data file and row count (read
    from Parquet footers, a few KB per file; None for formats without one)."""
    where = src.hub or str(resolve_path(src.path))
    if src.path and not Path(where).exists():
        raise ConfigError(f"dataset source path {src.path!r} does not exist (resolved to {where})")
    if src.path and _has_audio(Path(where)):
        raise ConfigError(
            f"dataset.streaming=true reads data files (Parquet, JSON, CSV, WebDataset), locally or "
            f"from the Hub; {where} is a folder of audio files, which is read in place already. "
            "Set dataset.streaming=false"
        )
    data_files, options = src.data_files, {}
    if src.path and Path(where).is_file():  # one local data file: its format's builder
        where, data_files = _file_builder(Path(where)), {src.split: where}
        options = {"delimiter": "\t"} if src.path.lower().endswith(".tsv") else {}
    elif src.path and _saved_to_disk(Path(where)):
        where, data_files = "arrow", {src.split: _saved_files(Path(where), src.split)}
    try:
        builder = source_builder(where, src, data_files, **options)
        data = builder.as_streaming_dataset(split=src.split)
        files = [str(f) for f in builder.config.data_files[src.split]]
    except Exception as err:
        raise ConfigError(
            f"cannot stream dataset {where!r} (config={src.config!r}, split={src.split!r}): "
            f"{type(err).__name__}: {str(err)[:300]}"
        ) from err
    counts = file_counts(files, reshard)
    if reshard:
        data = data.reshard()
    shards = counts or [(f, None) for f in files]
    if len(shards) != data.num_shards:  # the unit plan must match what the dataset yields
        raise ConfigError(
            f"{where}: {data.num_shards} input shards but {len(shards)} data files/row groups; "
            "set dataset.reshard=false, or stream it without splitting files"
        )
    return data, shards
