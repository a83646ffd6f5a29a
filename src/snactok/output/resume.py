"""A run's fingerprint, and what a run dir already holds when a run continues after a crash.

The manifest is the source of truth: a unit is done when its shard record is there, and the
record is appended (and fsynced) only after the shard's atomic rename. Rejects are appended just
before that record, so a crash between the two leaves rejects of a unit that is not done; they
are dropped here, and the unit is encoded again, giving the same bytes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snactok.config.schema import Config, plain
from snactok.errors import ConfigError
from snactok.output.files import TEMPORARY, sha256_file, write_bytes_atomic
from snactok.output.formats import SCHEMA_VERSION
from snactok.output.rundir import (
    MANIFEST,
    METRICS,
    REJECTS,
    SHARDS,
    RunDirError,
    parse_manifest,
    recorded_files,
)

log = logging.getLogger(__name__)


def fingerprint(
    conf: Config,
    weights: dict,
    sources: list[dict],
    device_types: list[str],
    chunking: dict,
    packages: dict,
    template: dict | None = None,
) -> dict[str, Any]:
    """Everything that changes the output's bytes or its set of rows, by config key.

    Left out on purpose: what only changes speed (readers, batch size, device count, compile),
    which may change between a crash and its resume.
    """
    rt, out = conf.runtime, conf.output
    return {
        "schema_version": SCHEMA_VERSION,
        "codec.name": conf.codec.name,
        "codec.arch": plain(conf.codec.arch),
        "codec.weights": weights,
        "dataset.sources": sources,
        # the unit definition: row ranges of lines_per_file, or input shards (files, row groups)
        "dataset.streaming": conf.dataset.streaming,
        "dataset.reshard": conf.dataset.reshard,
        "output.format": out.format,
        "output.lines_per_file": out.lines_per_file,
        "output.gzip_level": out.gzip_level,
        "output.flatten": out.flatten,
        "runtime.max_rows": rt.max_rows,
        "runtime.max_duration": rt.max_duration,
        "runtime.min_samples": rt.min_samples,
        "runtime.chunking": chunking,
        "runtime.num_jobs": rt.num_jobs,
        "runtime.job_index": rt.job_index,
        "runtime.devices (type)": device_types,
        "runtime.autocast": rt.autocast,
        "runtime.tf32": rt.tf32,
        "runtime.dry_run": rt.dry_run,
        "packages": packages,
    } | ({"template": template} if template else {})  # absent without one, as before templates


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per key whose value differs, for the refusal message."""
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: the run has {_short(old.get(k))}, this command has {_short(new.get(k))}"
        for k in keys
        if _canonical(old.get(k)) != _canonical(new.get(k))
    ]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = _canonical(value)
    return text if len(text) <= 200 else text[:200] + "..."


@dataclass
class Prior:
    """What an earlier attempt left in the run dir: units done (index -> shard record) and rejects."""

    committed: dict[int, dict] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)
    resumed: bool = False


def resume_target(resume: str | None, run_dir: Path) -> Path:
    """The dir a run writes into: its own Hydra dir, or the one `runtime.resume` names."""
    if resume in (None, "auto"):
        return run_dir
    target = Path(resume).expanduser().resolve()
    if not (target / MANIFEST).is_file():
        raise ConfigError(
            f"runtime.resume={resume!r}: {target / MANIFEST} does not exist; give the dir of the "
            "run to continue (it holds manifest.jsonl and shards/), or runtime.resume=auto"
        )
    return target


def open_run_dir(run_dir: Path, resume: str | None, expected: dict[str, Any], units: list) -> Prior:
    """Check that `run_dir` may be written, and read back what an earlier attempt committed.

    Fresh runs need a dir without a manifest. A resumed run needs the same fingerprint; every
    shard its manifest records must be there, byte for byte. Temporary files from a crash go.
    """
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        return Prior()
    if resume is None:
        raise ConfigError(
            f"{run_dir} already holds a run ({MANIFEST}); continue it with runtime.resume=auto "
            "(or runtime.resume=<that dir>), or choose another hydra.run.dir"
        )
    try:
        parsed = parse_manifest(repair_jsonl(manifest), manifest)
    except RunDirError:
        parsed = None
    if parsed is None or "fingerprint" not in parsed.header.record:
        raise ConfigError(f"{manifest} has no header with a fingerprint; it cannot be resumed")
    diffs = differences(parsed.header.fingerprint, expected)
    if diffs:
        raise ConfigError(
            f"runtime.resume: {run_dir} was made with other settings, so its shards would not "
            "match this command's:\n  " + "\n  ".join(diffs) + "\nResume with the run's settings "
            "(its .hydra/overrides.yaml), or start a new run."
        )
    committed = {s.unit: s.record for s in parsed.shards}
    for index, record in committed.items():
        _check_shard(run_dir, record, units[index].name)
    rejects = repair_jsonl(run_dir / REJECTS, keep=lambda r: r.get("unit") in committed)
    repair_jsonl(run_dir / METRICS)  # appended to by this attempt too
    _remove_temporary(run_dir / SHARDS)
    return Prior(committed=committed, rejects=rejects, resumed=True)


def _check_shard(run_dir: Path, record: dict, unit_name: str) -> None:
    for entry in recorded_files(record):  # one per output format
        _check_file(run_dir, entry, record["unit"], unit_name)


def _check_file(run_dir: Path, entry: dict, unit: int, unit_name: str) -> None:
    path = run_dir / entry["file"]
    problem = None
    if not Path(entry["file"]).name.startswith(unit_name):
        problem = f"is recorded for unit {unit} ({unit_name})"
    elif not path.is_file():
        problem = "is missing"
    elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
        problem = "has changed since it was committed"
    if problem:
        raise ConfigError(
            f"cannot resume {run_dir}: shard {entry['file']} {problem}. The run dir was modified "
            "after the crash; restore it or start a new run."
        )


def repair_jsonl(path: Path, keep: Any = None) -> list[dict]:
    """Records of an append-only JSON-lines file; a torn last line (a crash mid-append) is cut.

    With `keep`, records it rejects are dropped too. The file is rewritten atomically when
    anything goes, so later appends start on a clean line.
    """
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records, dropped = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ConfigError(f"{path} line {i + 1} is not JSON; the run dir is damaged") from None
            dropped += 1  # the torn end of the last append
            continue
        if keep is None or keep(record):
            records.append(record)
        else:
            dropped += 1
    if dropped:
        log.warning("%s: dropped %d record(s) left by the interrupted attempt", path.name, dropped)
        write_bytes_atomic(
            path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        )
    return records


def _remove_temporary(shards_dir: Path) -> None:
    for tmp in shards_dir.glob(TEMPORARY):
        log.info("removing %s, left half-written by the interrupted attempt", tmp.name)
        tmp.unlink()
