"""Check and join the jobs of a split run (`runtime.num_jobs=N`): every unit of the dataset must be
committed exactly once across the job dirs of a sweep.

    report = check_sweep(Path("outputs/multirun/2026-11-24/10-00-00"))
    merge_group(report.groups[0], out_dir)

A sweep dir may hold several split runs (e.g. `-m dataset=a,b 'runtime.job_index=range(0,8)'`):
jobs whose fingerprints agree except for `runtime.job_index` form one group, merged on its own.
The merged dir is a run dir like any other (manifest.jsonl, rejects.jsonl, shards/ as hard links
to the jobs' files), so snactok-publish, snactok-inspect and load_dataset read it.

    snactok-merge outputs/multirun/2026-11-24/10-00-00
    snactok-merge <sweep dir> --hub-repo me/emilia-snac      # and publish the merged set
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snactok.inputs.units import owner
from snactok.output.files import fsync_dir, sha256_file, write_bytes_atomic
from snactok.output.formats import save_local
from snactok.output.rundir import (
    MANIFEST,
    REJECTS,
    SHARDS,
    Run,
    RunDirError,
    Shard,
    find_runs,
    read_run,
)
from snactok.tools.publish import PublishError, publish

log = logging.getLogger(__name__)

MERGED = "merged"


@dataclass
class Group:
    """The jobs of one split run, and what is wrong with them (empty lists: mergeable)."""

    name: str  # <dataset>-<codec>
    num_jobs: int
    unit_names: list[str]
    jobs: list[Run]
    missing: dict[int, list[int]] = field(default_factory=dict)  # job_index -> units not committed
    duplicates: dict[int, list[Run]] = field(default_factory=dict)  # unit -> the runs holding it
    misplaced: list[str] = field(default_factory=list)  # units a job does not own, bad files

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.misplaced)

    def records(self) -> list[Shard]:
        """One shard record per unit, by unit index (only meaningful when `ok`)."""
        return sorted((r for job in self.jobs for r in job.shards), key=lambda r: r.unit)


def sweep_runs(sweep_dir: Path) -> list[Run]:
    """Every run under `sweep_dir`, merged output left out."""
    return [read_run(run_dir) for run_dir in find_runs(sweep_dir, skip=MERGED)]


def check_sweep(sweep_dir: Path, verify: bool = False) -> list[Group]:
    """Group the sweep's runs by split run and check each; `verify` hashes every file too."""
    by_key: dict[str, list[Run]] = defaultdict(list)
    for run in sweep_runs(sweep_dir):
        fp = dict(run.header.fingerprint)
        fp.pop("runtime.job_index", None)
        by_key[json.dumps(fp, sort_keys=True, default=str)].append(run)
    groups = [_check_group(runs, verify) for runs in by_key.values()]
    names = Counter(g.name for g in groups)
    for i, g in enumerate(groups):  # same dataset and codec, other settings: keep both apart
        if names[g.name] > 1:
            g.name = f"{g.name}-{i}"
    return groups


def _check_group(runs: list[Run], verify: bool) -> Group:
    first = runs[0].header
    num_jobs = first.config["runtime"]["num_jobs"]
    names = (first.units or {}).get("names")
    if names is None:
        raise ValueError(f"{runs[0].dir}: its header lists no units (made before merge existed)")
    group = Group(f"{first.dataset}-{first.codec}", num_jobs, names, runs)
    holders: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        index = job_index(run)
        for record in run.shards:
            holders[record.unit].append(run)
            if owner(record.unit, num_jobs) != index:
                group.misplaced.append(
                    f"unit {record.unit} is in {run.dir}, job {index}, but belongs to job "
                    f"{owner(record.unit, num_jobs)}"
                )
            group.misplaced += _file_problems(run, record, verify)
    for unit in range(len(names)):
        if not holders[unit]:
            group.missing.setdefault(owner(unit, num_jobs), []).append(unit)
        elif len(holders[unit]) > 1:
            group.duplicates[unit] = holders[unit]
    return group


def job_index(run: Run) -> int:
    return run.conf["runtime"]["job_index"]


def _file_problems(run: Run, record: Shard, verify: bool) -> list[str]:
    problems = []
    for entry in record.files:
        path = run.dir / entry.file
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != entry.bytes:
            problems.append(f"{path} has {path.stat().st_size} bytes, its record {entry.bytes}")
        elif verify and sha256_file(path) != entry.sha256:
            problems.append(f"{path} does not match its recorded sha256")
    return problems


def describe_problems(group: Group, sweep_dir: Path) -> str:
    """What is missing or doubled, by unit index, with the command that redoes each job's part."""
    lines = [f"{group.name}: {len(group.unit_names)} units over {group.num_jobs} jobs"]
    if group.missing:
        count = sum(len(v) for v in group.missing.values())
        lines.append(f"  missing {count} unit(s):")
        for index, units in sorted(group.missing.items()):
            lines.append(f"    job {index}: units {_ranges(units)} ({_names(group, units)})")
            lines.append(f"      redo: {redo_command(group, index, sweep_dir)}")
    if group.duplicates:
        lines.append(f"  committed more than once: {len(group.duplicates)} unit(s):")
        for unit, runs in sorted(group.duplicates.items()):
            same = len({r.files for run in runs for r in run.shards if r.unit == unit}) == 1
            dirs = ", ".join(str(run.dir) for run in runs)
            lines.append(
                f"    unit {unit} ({group.unit_names[unit]}) in {dirs} "
                f"({'identical bytes' if same else 'DIFFERENT bytes'})"
            )
        lines.append(
            "    keep one dir per job_index: move the extra dir(s) out of the sweep dir "
            f"(e.g. mv <dir> {sweep_dir}.extra/), then merge again"
        )
    for problem in group.misplaced[:20]:
        lines.append(f"  {problem}")
    return "\n".join(lines)


def redo_command(group: Group, index: int, sweep_dir: Path) -> str:
    """The encode.py command that finishes job `index`: its own overrides plus a resume of its dir,
    or, for a job that left no dir, a sibling's overrides with this job_index and a new dir."""
    run = next((r for r in group.jobs if job_index(r) == index), None)
    template = run or group.jobs[0]
    overrides = [
        o
        for o in _overrides(template.dir)
        if not o.startswith(("runtime.resume=", "runtime.job_index=", "hydra.run.dir="))
    ]
    overrides.append(f"runtime.job_index={index}")
    if run is not None:
        overrides.append(f"runtime.resume={run.dir}")
    else:
        overrides.append(f"hydra.run.dir={sweep_dir / f'redo-{index}'}")
    return "python encode.py " + " ".join(shlex.quote(o) for o in overrides)


def _overrides(run_dir: Path) -> list[str]:
    """The job's command-line overrides, as Hydra saved them (.hydra/overrides.yaml)."""
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def _ranges(units: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    parts, start = [], None
    for i, u in enumerate(units):
        start = u if start is None else start
        if i + 1 == len(units) or units[i + 1] != u + 1:
            parts.append(str(u) if start == u else f"{start}-{u}")
            start = None
    return ", ".join(parts)


def _names(group: Group, units: list[int]) -> str:
    shown = [group.unit_names[u] for u in units[:3]]
    return ", ".join(shown) + (f", ... {len(units) - 3} more" if len(units) > 3 else "")


def merge_group(group: Group, out_dir: Path) -> Path:
    """Write the merged run dir: shards/ as hard links (copies across file systems), one
    manifest with a header, every shard record by unit and a summary, and the jobs' rejects."""
    if not group.ok:
        raise ValueError(f"{group.name} cannot be merged: units are missing, doubled or misplaced")
    _clear_previous(out_dir)
    (out_dir / SHARDS).mkdir(parents=True)
    records = group.records()
    for run in group.jobs:
        for record in run.shards:
            for entry in record.files:
                _link(run.dir / entry.file, out_dir / entry.file)
    fsync_dir(out_dir / SHARDS)
    rejects = sorted(
        (r for run in group.jobs for r in run.reject_records()), key=lambda r: (r["unit"], r["row"])
    )
    header = dict(group.jobs[0].header.record)
    header["merged"] = {
        "num_jobs": group.num_jobs,
        "jobs": sorted(({"job_index": job_index(r), "dir": str(r.dir)} for r in group.jobs), key=str),
    }
    lines = [header, *(r.record for r in records), _summary(group, records, rejects)]
    _write_jsonl(out_dir / REJECTS, rejects)
    _write_jsonl(out_dir / MANIFEST, lines)  # last: a merged dir with a manifest is complete
    return out_dir


def _clear_previous(out_dir: Path) -> None:
    """Merging again replaces an earlier merge; any other non-empty dir is refused."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    try:
        merged = read_run(out_dir).header.merged is not None
    except RunDirError:
        merged = False
    if not merged:
        raise ValueError(f"{out_dir} exists and is not an earlier merge; give another --out")
    shutil.rmtree(out_dir)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _summary(group: Group, records: list[Shard], rejects: list[dict]) -> dict[str, Any]:
    summaries = [r.summary for r in group.jobs if r.summary]
    walls = [s.wall_seconds for s in summaries if s.wall_seconds is not None]
    return {
        "type": "summary",
        "merged": True,
        "units": len(records),
        "rows_read": sum(r.rows_read for r in records),
        "rows_written": sum(r.rows for r in records),
        "rows_rejected": sum(r.rejected for r in records),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "audio_seconds": round(sum(r.audio_seconds for r in records), 3),
        "tokens": sum(sum(r.tokens_per_layer) for r in records),
        "wall_seconds": max(walls, default=None),  # the longest job
        "random_weights": group.jobs[0].header.random_weights,
    }


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_bytes_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())


def main(argv: list[str] | None = None) -> int:
    """`snactok-merge`: check and join the jobs of a split run, then save or publish the whole.

    Missing units are reported by index with the encode.py command that finishes their job (its
    own overrides plus runtime.resume=<its dir>); units committed twice with the dirs that hold
    them. Nothing is merged for a split run with either; the exit code is then 1. The merged run
    goes to <sweep dir>/merged (merged/<dataset>-<codec> when the sweep holds several split runs).
    The jobs' `save.local` and `save.hub_repo` (which a job with runtime.num_jobs > 1 leaves to
    the merge) run on it, unless --no-save; --save-local and --hub-repo set them here.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sweep = args.sweep_dir.resolve()
    try:
        groups = check_sweep(sweep, verify=args.verify)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not groups:
        print(f"error: no run dirs (with {MANIFEST}) under {sweep}", file=sys.stderr)
        return 2
    if len(groups) > 1 and (args.out or args.save_local or args.hub_repo):
        print(
            f"error: {sweep} holds {len(groups)} split runs ({', '.join(g.name for g in groups)}); "
            "--out, --save-local and --hub-repo need one: merge without them, or per run",
            file=sys.stderr,
        )
        return 2
    failed = 0
    for group in groups:
        if not group.ok:
            print(describe_problems(group, sweep), file=sys.stderr)
            failed += 1
            continue
        out = args.out or (sweep / MERGED if len(groups) == 1 else sweep / MERGED / group.name)
        failed += not _merge_and_save(group, out.resolve(), args)
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snactok-merge", description=main.__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep dir holding the jobs' run dirs")
    parser.add_argument("--out", type=Path, default=None, help="merged run dir (one split run only)")
    parser.add_argument("--verify", action="store_true", help="also check every file's sha256")
    parser.add_argument("--save-local", type=Path, default=None, help="save_to_disk the merged set")
    parser.add_argument("--hub-repo", default=None, help="publish the merged set to this Hub repo")
    parser.add_argument("--public", action="store_true", help="with --hub-repo: a public repo")
    parser.add_argument("--no-save", action="store_true", help="ignore the jobs' save.* settings")
    return parser


def _merge_and_save(group: Group, out: Path, args: argparse.Namespace) -> bool:
    """Merge `group` into `out`, then save and publish it as asked; False if publishing failed."""
    merged = merge_group(group, out)
    records = group.records()
    print(
        f"{group.name}: {len(records)} of {len(group.unit_names)} units from {len(group.jobs)} "
        f"job dir(s), each exactly once; {sum(r.rows for r in records)} rows -> {merged}"
    )
    save = {} if args.no_save else group.jobs[0].conf.get("save", {})
    if target := args.save_local or save.get("local"):
        save_local(read_run(merged).shard_files(non_empty=True), Path(target))
    if repo := args.hub_repo or save.get("hub_repo"):
        private = not args.public if args.hub_repo else save.get("private", True)
        try:
            print(publish(merged, repo, private=private))
        except PublishError as err:
            print(f"error: {err}", file=sys.stderr)
            return False
    return True
