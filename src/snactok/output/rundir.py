"""The run dir: its names, its records, and the one reader of a finished or partial run.

    <run dir>/
        manifest.jsonl   a header, one shard record per committed unit (a `resume` record where
                         an attempt continued the run), and a summary once the run finished
        rejects.jsonl    one record per row that was not encoded, with its reason
        metrics.jsonl    progress snapshots and per-shard records (snactok.monitor.tracking)
        shards/          <source>-<unit>.jsonl.gz and/or .parquet, by output.format
        report/          plots and decoded audio (snactok.tools.report)

A manifest holds one header, on its first line. A fresh run writes it before any shard; a resumed
attempt checks its fingerprint and appends a `resume` record (its host and dir), never a second
header; a merge writes the first job's header with `merged` added, once; the jobs of a split run
each have their own dir and header. Should a manifest ever hold more than one (a file pieced
together by hand), the first is the one the shards were checked against and written under, so
`read_run` takes the first and logs the others.

Every tool reads runs through `read_run`: what is committed is what the manifest records, up to
its last complete line; files in shards/ that no record names are not part of the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from snactok.output.files import complete_lines

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
REJECTS = "rejects.jsonl"
METRICS = "metrics.jsonl"
SHARDS = "shards"
REPORT = "report"
# template set: the tokenizer the input_ids were made with, its pad token the template's pad
TOKENIZER_DIR = "tokenizer"
JSONL_SUFFIX = ".jsonl.gz"
PARQUET_SUFFIX = ".parquet"
# output.format -> the file suffixes of a unit, the first one named by the shard record's `file`.
FORMAT_SUFFIXES = {
    "jsonl": (JSONL_SUFFIX,),
    "parquet": (PARQUET_SUFFIX,),
    "both": (JSONL_SUFFIX, PARQUET_SUFFIX),
}


class RunDirError(ValueError):
    """A dir that holds no run (no manifest, or a manifest without a header)."""


def file_format(name: str) -> str:
    """`jsonl` or `parquet`: the output.format a shard file's name says it was written in."""
    return "parquet" if name.endswith(PARQUET_SUFFIX) else "jsonl"


def recorded_files(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A shard record's files as [{file, bytes, sha256}], one per format (output.format=both
    writes two); records from before `files` existed name their one file themselves."""
    return record.get("files") or [record]


@dataclass(frozen=True)
class ShardFile:
    """One file of a committed unit; `file` is relative to the run dir."""

    file: str
    bytes: int
    sha256: str


R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Record:
    """A manifest line: `record` is the line as written; subclasses name the fields tools read,
    each taken from the key of the same name (the field's default when the key is absent)."""

    record: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls: type[R], record: dict[str, Any]) -> R:
        named = {f.name for f in fields(cls)} - {"record"}
        return cls(record=record, **{k: v for k, v in record.items() if k in named})


@dataclass(frozen=True)
class Header(Record):
    """The manifest's first record: what made the run and what decides its bytes."""

    codec: str = "?"
    dataset: str = "?"
    arch: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    packages: dict[str, str | None] = field(default_factory=dict)
    git_commit: str | None = None
    units: dict[str, Any] | None = None  # {total, names}: every unit of the dataset (None: older runs)
    random_weights: bool = False
    dry_run: str | None = None  # the dry-run note, or None for a real encode
    merged: dict[str, Any] | None = None  # {num_jobs, jobs} in a merged dir


@dataclass(frozen=True)
class Shard(Record):
    """A committed unit's record: its rows, their counts, and its files (one per format)."""

    unit: int = -1
    source: str = ""
    file: str = ""
    rows_read: int = 0
    rows: int = 0
    rejected: int = 0
    audio_seconds: float = 0.0
    tokens_per_layer: tuple[int, ...] = ()
    files: tuple[ShardFile, ...] = ()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Shard:
        return dataclasses.replace(
            super().from_record(record),
            files=tuple(ShardFile(f["file"], f["bytes"], f["sha256"]) for f in recorded_files(record)),
            tokens_per_layer=tuple(record["tokens_per_layer"]),
        )


@dataclass(frozen=True)
class Resume(Record):
    """An attempt that continued the run after a crash or a stop."""

    attempt_dir: str = ""
    host: str | None = None


@dataclass(frozen=True)
class Summary(Record):
    """The totals a finished run ends with (a merge writes its own)."""

    units: int = 0
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    audio_seconds: float = 0.0
    wall_seconds: float | None = None
    audio_seconds_per_second: float | None = None  # None in a merged dir


@dataclass(frozen=True)
class Manifest:
    """A manifest's records, sorted by kind."""

    header: Header
    shards: tuple[Shard, ...]  # one per unit, by unit index (a unit recorded twice: the last)
    resumes: tuple[Resume, ...]
    summary: Summary | None  # None while the run is unfinished


def parse_manifest(records: list[dict[str, Any]], where: Path) -> Manifest:
    """The header (the first; see the module's docstring), shards, resumes and the summary: the
    last summary after the last shard record, since one before it is not the run's end."""
    headers = [r for r in records if r.get("type") == "header"]
    if not headers:
        raise RunDirError(f"{where} has no header record; the run never started writing")
    if len(headers) > 1:
        log.warning(
            "%s holds %d headers; the first is the run's, the others are ignored", where, len(headers)
        )
    shards = {r["unit"]: r for r in records if r.get("type") == "shard"}
    last_shard = max((i for i, r in enumerate(records) if r.get("type") == "shard"), default=-1)
    summaries = [r for r in records[last_shard + 1 :] if r.get("type") == "summary"]
    return Manifest(
        header=Header.from_record(headers[0]),
        shards=tuple(Shard.from_record(shards[u]) for u in sorted(shards)),
        resumes=tuple(Resume.from_record(r) for r in records if r.get("type") == "resume"),
        summary=Summary.from_record(summaries[-1]) if summaries else None,
    )


@dataclass(frozen=True)
class Run:
    """What a run dir holds, read once: the manifest's records, and the bytes of its complete
    lines and of the rejects of committed units (what a publish uploads, as it was read)."""

    dir: Path
    header: Header
    shards: tuple[Shard, ...]
    resumes: tuple[Resume, ...]
    summary: Summary | None
    manifest: bytes
    rejects: bytes

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def conf(self) -> dict[str, Any]:
        return self.header.config

    @property
    def arch(self) -> dict[str, Any]:
        return self.header.arch

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.shards)

    @property
    def audio_seconds(self) -> float:
        return sum(s.audio_seconds for s in self.shards)

    @property
    def planned_units(self) -> int | None:
        """Units this run was to commit: all the dataset's, or a job's share of them."""
        units = self.header.units
        if units:
            rt = self.conf.get("runtime", {})
            jobs = 1 if self.header.merged else rt.get("num_jobs", 1)
            return len(range(rt.get("job_index", 0) if jobs > 1 else 0, units["total"], jobs))
        per_file = self.conf.get("output", {}).get("lines_per_file")
        if not per_file:
            return None
        return sum(math.ceil(s["rows"] / per_file) for s in self.header.sources)

    def file_names(self) -> list[str]:
        """Run-dir-relative paths of every file the committed units' records name, sorted."""
        return sorted({f.file for s in self.shards for f in s.files})

    def shard_files(self, non_empty: bool = False, format: str | None = None) -> list[Path]:
        """The committed files in unit order, all formats, or those of `format` (jsonl | parquet);
        `non_empty` leaves out units whose every row was rejected."""
        return [
            self.dir / f.file
            for s in self.shards
            if s.rows or not non_empty
            for f in s.files
            if format is None or file_format(f.file) == format
        ]

    def data_files(self, non_empty: bool = False) -> list[Path]:
        """The files of one format, each row once: JSONL when the run wrote it, else Parquet."""
        return self.shard_files(non_empty, "jsonl") or self.shard_files(non_empty, "parquet")

    def reject_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.rejects.splitlines() if line.strip()]


def read_run(run_dir: Path) -> Run:
    """Read `run_dir`'s manifest and the rejects of its committed units, each up to its last
    complete line (a record torn by a crash is left out); raise RunDirError when it holds no run."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        raise RunDirError(
            f"{path} does not exist; give the dir encode.py wrote (it holds {MANIFEST} and "
            f"{SHARDS}/, e.g. outputs/<date>/<time>)"
        )
    manifest = complete_lines(path)
    parsed = parse_manifest([json.loads(line) for line in manifest.splitlines() if line.strip()], path)
    units = {s.unit for s in parsed.shards}
    rejects_path = run_dir / REJECTS
    lines = complete_lines(rejects_path).splitlines(keepends=True) if rejects_path.is_file() else []
    rejects = b"".join(line for line in lines if line.strip() and json.loads(line)["unit"] in units)
    return Run(
        dir=run_dir,
        header=parsed.header,
        shards=parsed.shards,
        resumes=parsed.resumes,
        summary=parsed.summary,
        manifest=manifest,
        rejects=rejects,
    )


def find_runs(root: Path, skip: str | None = None) -> list[Path]:
    """Every run dir (a dir with a manifest) under `root`, sorted; those under a dir named `skip`
    (relative to `root`) left out."""
    found = []
    for manifest in sorted(Path(root).rglob(MANIFEST)):
        if skip is None or skip not in manifest.parent.relative_to(root).parts:
            found.append(manifest.parent)
    return found


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The run dirs directly under a sweep dir (Hydra's `<sweep dir>/<job number>`)."""
    return sorted(manifest.parent for manifest in Path(sweep_dir).glob(f"*/{MANIFEST}"))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The periodic snapshots of metrics.jsonl (records with a time, of type `metrics` or untyped);
    [] when there is no such file. Per-shard records and a torn last line are skipped.
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("time"), int | float)
            and record.get("type", "metrics") == "metrics"
        ):
            records.append(record)
    return records
