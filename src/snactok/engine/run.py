"""`run(cfg, run_dir)`: check everything, start readers and device workers, commit shards.

Everything that can be checked is checked here, in the main process, before any child starts: the
config, the devices, the weights (Hub or cache) and the dataset's columns. The main process then
collects tokens and rejects, and commits each unit's shard once all its rows are accounted for.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import resource
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import numpy as np
import torch.multiprocessing as tmp
from omegaconf import DictConfig, OmegaConf

from snactok.codec import dryrun
from snactok.codec.encoder import CPU_THREADS
from snactok.codec.layout import pad_multiple, token_lengths
from snactok.codec.long_clips import overlap_for, receptive_field
from snactok.codec.weights import RANDOM, Weights, random_weights_dir, resolve_weights
from snactok.config.schema import check_config
from snactok.engine.devices import default_readers, resolve_devices, usable_cores
from snactok.engine.estimate import make_plan, remember_rate
from snactok.engine.ipc import BlockCounter, Board, Budget, ClipChannel, Inbox, RunFlag
from snactok.engine.processes import Child, Supervisor
from snactok.engine.workers import (
    POLL_SECONDS,
    DevicePlan,
    ReaderPlan,
    device_main,
    peak_rss_mb,
    reader_main,
)
from snactok.engine.writers import Writers
from snactok.errors import ConfigError, PipelineError
from snactok.inputs import mdc
from snactok.inputs.sources import REPO_ROOT, Source, arrow_type, open_sources
from snactok.inputs.units import Unit, job_units, plan_units
from snactok.monitor.progress import Progress
from snactok.monitor.tracking import Tracker
from snactok.output.formats import (
    FORMAT_SUFFIXES,
    PARQUET_SUFFIX,
    SCHEMA_VERSION,
    Columns,
    JsonlLog,
    Row,
    save_local,
    sha256_file,
    write_unit,
)
from snactok.output.resume import MANIFEST, REJECTS, Prior, fingerprint, open_run_dir, resume_target

log = logging.getLogger(__name__)
__all__ = ["Interrupted", "PipelineError", "run"]
# runtime.batch_samples=null: on CPU one clip per batch (batching was slower, measured in
# docs/performance.md); on CUDA 2**21 padded samples (~87 s of 24 kHz audio).
DEFAULT_BATCH_SAMPLES = {"cpu": 1, "cuda": 2**21}
# Readers' torch threads wait for work asleep, not spinning: spinning OpenMP threads of two
# readers took each other's cores (dry runs on 2 cores: 2 readers gave 0.45x one reader's rate;
# with this, 3.3x more). It changes no value, only how idle threads wait.
READER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
DRY_RUN_NOTE = (
    "DRY RUN (runtime.dry_run=true): no model; the tokens are a fixed stand-in pattern, not the "
    "audio's (snactok.codec.dryrun). It measures the pipeline around the model"
)


class Interrupted(Exception):
    """A signal asked the run to stop (Ctrl-C, Slurm's SIGTERM or SIGUSR2)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def run(cfg: DictConfig, run_dir: Path, group: str | None = None) -> dict[str, Any]:
    """Encode the configured dataset into `run_dir/shards` (or continue the run that
    `runtime.resume` names); return the run summary. `group` names the sweep, for W&B."""
    t0 = time.monotonic()
    check_config(cfg)
    mdc.fetch(cfg)  # dataset.mdc_id: download first; it sets dataset.path
    conf = OmegaConf.to_container(cfg, resolve=True)
    _check_hub_token(conf["save"]["hub_repo"])
    rt, out = conf["runtime"], conf["output"]
    devices = resolve_devices(rt["devices"])
    sources = open_sources(conf["dataset"], rt["max_rows"])
    units = plan_units(sources, out["lines_per_file"])
    mine = job_units(units, rt["num_jobs"], rt["job_index"])
    if rt["plan"]:
        return make_plan(conf, sources, units, mine, devices, run_dir)
    if rt["dry_run"]:
        log.warning(DRY_RUN_NOTE)
        weights, chunking = dryrun.WEIGHTS, plan_chunking(conf["codec"], None, Path(rt["cache_dir"]))
    else:
        weights = resolve_weights(cfg.codec)
        if weights.kind == RANDOM:
            weights = _materialise_random(conf["codec"]["arch"], rt["seed"], Path(rt["cache_dir"]))
        chunking = plan_chunking(conf["codec"], rt["max_chunk_seconds"], Path(rt["cache_dir"]))
    header = _header(conf, weights, sources, devices, chunking, units)
    target = resume_target(rt["resume"], run_dir)
    if target != run_dir:
        log.info("continuing the run in %s (this command's own dir keeps only its log)", target)
    target.mkdir(parents=True, exist_ok=True)
    prior = open_run_dir(target, rt["resume"], header["fingerprint"], units)
    rows = [s.num_rows for s in sources]
    log.info(
        "devices %s | weights %s | %d source(s), %s rows, %d unit(s)%s%s -> %s",
        devices,
        weights.name,
        len(sources),
        "?" if None in rows else sum(rows),
        len(units),
        f"; job {rt['job_index']} of {rt['num_jobs']} takes {len(mine)}" if rt["num_jobs"] > 1 else "",
        f", {len(prior.committed)} already committed" if prior.resumed else "",
        target,
    )
    collector = Collector(units, mine, sources, conf, target, weights, t0, prior)
    tracker = Tracker(conf, target, group, rt["progress_interval"])
    summary = None
    try:
        if prior.resumed:
            collector.manifest.append({"type": "resume", "attempt_dir": str(run_dir)} | _host())
        else:
            collector.manifest.append(header)
        if not collector.complete:
            _execute(conf, devices, weights, sources, units, collector, chunking, tracker)
        summary = collector.summary()
        remember_rate(conf, devices, summary)
        if conf["report"]:
            _report(target, tracker)
    except (PipelineError, Interrupted, KeyboardInterrupt, SystemExit) as err:
        _log_resumable(err, collector, target, rt["resume"])
        raise
    finally:
        collector.close()
        tracker.finish(summary, collector.committed)
    save = conf["save"]
    if rt["num_jobs"] > 1:  # a job holds part of the data: the merge saves the whole
        if save["local"] or save["hub_repo"]:
            log.info(
                "save.local/save.hub_repo wait for all %d jobs: python scripts/merge.py %s",
                rt["num_jobs"],
                target.parent,
            )
        return summary
    if save["local"]:
        save_local(collector.shard_paths(non_empty=True), Path(save["local"]))
    if save["hub_repo"]:
        _publish(target, save["hub_repo"], save["private"])
    return summary


def _check_hub_token(repo: str | None) -> None:
    """Publishing needs a token: find out now, not after hours of encoding."""
    if repo is None:
        return
    from huggingface_hub import get_token

    if get_token() is None:
        raise ConfigError(
            f"save.hub_repo={repo!r} needs a Hub token: set HF_TOKEN or run `hf auth login`"
        )


def _report(run_dir: Path, tracker: Tracker) -> None:
    """report=true: plots and decoded audio in run_dir/report (and W&B); a failure is logged only."""
    from snactok.tools.report import write_report

    try:
        files = write_report(run_dir, wandb_run=tracker.wandb)
        log.info("report: %d files in %s", len(files), run_dir / "report")
    except Exception as err:  # the shards are done; a plot must not fail the run
        log.warning(
            "report failed (%s: %s); run scripts/inspect_run.py %s", type(err).__name__, err, run_dir
        )


def _publish(run_dir: Path, repo: str, private: bool) -> None:
    from snactok.tools.publish import publish

    try:
        url = publish(run_dir, repo, private=private)
    except Exception as err:
        raise PipelineError(
            f"publishing to {repo} failed ({type(err).__name__}: {err}). The run in {run_dir} is "
            f"complete; retry with python scripts/publish.py {run_dir} --repo {repo}"
            + ("" if private else " --public")
        ) from err
    log.info("published %s to %s", run_dir, url)


def plan_chunking(codec: dict, max_chunk_seconds: float | None, cache_dir: Path) -> dict[str, Any]:
    """Chunk and overlap sizes for long clips, from the encoder's measured receptive field.

    A chunk (overlaps included) holds at most `max_chunk_seconds` of audio, rounded down to the
    pad unit, and at least one pad unit more than its two overlaps.
    """
    arch = codec["arch"]
    if max_chunk_seconds is None:
        return {"chunk_samples": None, "overlap_samples": 0}
    rf = receptive_field(arch, cache_dir.expanduser() / "receptive_field")
    overlap, unit = overlap_for(arch, rf), pad_multiple(arch)
    chunk = int(max_chunk_seconds * arch["sampling_rate"]) // unit * unit
    if chunk < 2 * overlap + unit:
        shortest = (2 * overlap + unit) / arch["sampling_rate"]
        raise ConfigError(
            f"runtime.max_chunk_seconds={max_chunk_seconds} is too short for {codec['name']}: a chunk "
            f"needs {overlap} samples of context on each side plus one pad unit of {unit}; use "
            f"runtime.max_chunk_seconds >= {math.ceil(shortest * 100) / 100} (or null: never chunk)"
        )
    return {"chunk_samples": chunk, "overlap_samples": overlap, "receptive_field": list(rf)}


def _log_resumable(err: BaseException, collector: Collector, target: Path, resume: str | None) -> None:
    how = "runtime.resume=auto" if resume == "auto" else f"runtime.resume={target}"
    what = "interrupted by Ctrl-C" if isinstance(err, KeyboardInterrupt) else str(err)
    if isinstance(err, SystemExit):  # submitit's pre-emption handler: it has requeued the job
        what = f"stopped by the launcher (exit {err.code}); a requeued job resumes by itself"
    log.error(
        "%s\n%d of %d units are committed in %s and stay as they are; nothing half-done was "
        "committed. Continue with the same command plus %s",
        what,
        len(collector.committed),
        collector.planned,
        target / "shards",
        how,
    )


def _materialise_random(arch: dict, seed: int, cache_dir: Path) -> Weights:
    """Build the seeded, calibrated random SNAC once and save it, so every worker loads the same."""
    log.warning(
        "codec.weights=random: a seeded, calibrated RANDOM SNAC. Its tokens are MEANINGLESS; use it "
        "for smoke runs only. The manifest records it."
    )
    path = random_weights_dir(arch, seed, cache_dir.expanduser() / "random_weights")
    return Weights(kind=RANDOM, name=RANDOM, path=str(path))


@dataclass
class UnitState:
    rows: dict[int, Row] = field(default_factory=dict)  # input row -> tokens, formatted at commit
    rejects: list[dict] = field(default_factory=list)
    expected: int | None = None  # rows in the unit; a streamed shard's count comes when read
    audio_seconds: float = 0.0
    tokens: Counter[int] = field(default_factory=Counter)  # layer -> tokens
    verify: Counter[str] = field(default_factory=Counter)  # clips, tokens, equal
    mismatched: list[dict] = field(default_factory=list)  # verified rows with a differing token
    last_read: float = 0.0  # when a reader read its latest row (time.monotonic, system-wide)


@dataclass
class MainLoad:
    """What the main process spends and holds, for the ceiling benchmark: its CPU time, the time
    its commits take, the rows read but not committed (what a kill -9 would lose) at most, and
    the seconds from a unit's last row read to its commit."""

    commit_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rows_committed: int = 0  # by this attempt, as the readers count: rows sent to the devices
    audio_committed: float = 0.0
    uncommitted_rows: int = 0
    uncommitted_audio: float = 0.0
    cpu_at_start: float = 0.0  # when collecting began: imports and start-up are not its load

    def start(self) -> None:
        self.cpu_at_start = _cpu_seconds()

    def commit(self, record: dict, started: float, last_read: float) -> None:
        done = time.monotonic()
        self.commit_seconds += done - started
        if last_read:
            self.latencies.append(done - last_read)
        self.rows_committed += record["rows"]
        self.audio_committed += record["audio_seconds"]

    def watch(self, rows_read: float, audio_read: float) -> None:
        """The readers' totals now: what is read and not yet committed."""
        self.uncommitted_rows = max(self.uncommitted_rows, int(rows_read) - self.rows_committed)
        self.uncommitted_audio = max(self.uncommitted_audio, audio_read - self.audio_committed)

    def describe(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "cpu_seconds_collecting": round(_cpu_seconds() - self.cpu_at_start, 3),
            "commit_seconds": round(self.commit_seconds, 3),
            "max_uncommitted_rows": self.uncommitted_rows,
            "max_uncommitted_audio_seconds": round(self.uncommitted_audio, 3),
            "commit_latency_seconds": {
                "mean": round(sum(lat) / len(lat), 3) if lat else None,
                "max": round(max(lat), 3) if lat else None,
            },
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Collector:
    """Gathers rows per unit in the main process and commits each unit's shard when complete."""

    def __init__(
        self,
        units: list[Unit],
        mine: list[Unit],
        sources: list[Source],
        conf: dict,
        run_dir: Path,
        weights: Weights,
        t0: float,
        prior: Prior,
    ):
        self.t0 = t0
        self.units = units
        self.sources = sources
        self.arch = conf["codec"]["arch"]
        self.out = conf["output"]
        self.dry_run = conf["runtime"].get("dry_run", False)
        self.readers: int | None = None  # set when the readers start
        self.load = MainLoad()
        self.columns = [self._columns(src) for src in sources]
        self.weights = weights
        self.shards_dir = run_dir / "shards"
        self.shards_dir.mkdir(exist_ok=True)
        self.manifest = JsonlLog(run_dir / MANIFEST)
        self.rejects = JsonlLog(run_dir / REJECTS)
        self.state = {
            u.index: UnitState(expected=u.rows) for u in mine if u.index not in prior.committed
        }
        self.committed: list[dict] = list(prior.committed.values())
        writers = conf["output"].get("writers", 0)
        self.writers = Writers(writers) if writers and self.state else None
        self.planned = len(mine)  # this job's units
        self.prior_units = len(self.committed)
        self.reasons: Counter[str] = Counter(r["reason"] for r in prior.rejects)
        self.rows_done = 0  # by this attempt
        self.timing: dict[str, float] = {}  # seconds since the run started
        self.peak_rss: dict[str, float] = {}  # process -> MiB
        self.workers: dict[str, dict] = {}  # rank -> encode path, start-up check, verify seconds

    def _columns(self, src: Source) -> Columns:
        # ids are row indices without an id column (`<shard>/<row>` strings for streamed shards of
        # unknown size), else its values (non-int ones as strings)
        feature = src.feature(src.id_column) if src.id_column else None
        id_dtype = str(getattr(feature, "dtype", "")) if src.id_column else "int"
        if not src.id_column and src.num_rows is None:
            id_dtype = "string"
        return Columns(
            num_layers=len(self.arch["vq_strides"]),
            constants=src.constants,
            with_speaker=bool(src.speaker_column),
            id_is_int=id_dtype.startswith(("int", "uint")),
            flatten=self.out["flatten"],
            kept={name: arrow_type(src.feature(path)) for name, path in src.keep.items()},
        )

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def add_batch(
        self, keys: list, codes: np.ndarray, length: int, checks: list[tuple[int, int, int]] = ()
    ) -> None:
        self.timing.setdefault("first_tokens", self.elapsed())
        lengths = tuple(token_lengths(length, self.arch))
        for position, tokens, equal in checks:  # before the rows: the last row may commit the unit
            unit, row, meta = keys[position]
            self._verified(unit, row, meta["id"], tokens, equal)
        for (unit, row, meta), row_codes in zip(keys, codes, strict=True):
            state = self.state[unit]
            # a copy, so the batch's array can go once each row has its own
            state.rows[row] = Row(meta, np.array(row_codes, dtype=np.int16), lengths)
            state.audio_seconds += meta["duration"]
            state.last_read = max(state.last_read, meta.get("read_at", 0.0))
            state.tokens.update(dict(enumerate(lengths)))
            self._row_done(unit)

    def _verified(self, unit: int, row: int, row_id: Any, tokens: int, equal: int) -> None:
        state = self.state[unit]
        state.verify.update(clips=1, tokens=tokens, equal=equal)
        if equal < tokens:
            state.mismatched.append(
                {"row": row, "id": row_id, "tokens": tokens, "differ": tokens - equal}
            )
            log.warning(
                "verify: row %d (id %r) of unit %s: %d of %d tokens differ from single-clip "
                "SNAC.encode on this machine (docs/reliability.md)",
                row,
                row_id,
                self.units[unit].name,
                tokens - equal,
                tokens,
            )

    def verification(self) -> dict[str, Any]:
        """Totals of the verified sample over every committed unit, earlier attempts' included."""
        totals: Counter[str] = Counter()
        mismatched = []
        for record in self.committed:
            check = record.get("verify") or {}
            totals.update({k: check.get(k, 0) for k in ("clips", "tokens", "equal")})
            mismatched += [{"unit": record["unit"], **m} for m in check.get("mismatched", [])]
        tokens = totals["tokens"]
        return {
            "clips": totals["clips"],
            "tokens": tokens,
            "tokens_equal": totals["equal"],
            "fraction_equal": round(totals["equal"] / tokens, 6) if tokens else None,
            "mismatched_rows": mismatched,
        }

    def add_reject(self, unit: int, row: int, row_id: Any, reason: str, detail: str) -> None:
        src = self.sources[self.units[unit].source]
        self.state[unit].rejects.append(
            {
                "source": src.label,
                "unit": unit,
                "row": row,
                "id": row_id,
                "reason": reason,
                "detail": detail,
            }
        )
        self.reasons[reason] += 1
        self._row_done(unit)

    def unit_read(self, unit: int, rows: int) -> None:
        """A reader has read all of a streamed shard: `rows` rows."""
        planned = self.units[unit].rows
        if planned is not None and rows != planned:
            raise PipelineError(
                f"input shard {self.units[unit].name} gave {rows} rows; its Parquet metadata says "
                f"{planned}. The data changed after the run was planned; start a new run"
            )
        if unit in self.state:  # a shard of known size may have committed already
            self.state[unit].expected = rows
            self._maybe_commit(unit)

    def _row_done(self, unit: int) -> None:
        self.rows_done += 1
        self._maybe_commit(unit)

    def _maybe_commit(self, unit: int) -> None:
        state = self.state[unit]
        if len(state.rows) + len(state.rejects) == state.expected:
            self._commit(self.units[unit], self.state.pop(unit))

    def _commit(self, unit: Unit, state: UnitState) -> None:
        """Shards (one per format, each an atomic rename), then its rejects, then its manifest
        record: the unit is done only once the record is there (`snactok.output.resume` reads it back).
        With output.writers the files are written by a writer process, and the rest follows
        when it is done (`drain_writes`)."""
        t0 = time.monotonic()
        rows = [state.rows[r] for r in sorted(state.rows)]
        args = (self.shards_dir, unit.name, rows, self.columns[unit.source], self.out)
        if self.writers is None:
            files = self._written(unit, lambda: write_unit(*args))
            self._record(unit, state, len(rows), files, t0)
            return
        state.rows = {}  # the writer's now
        self.writers.submit((unit, state, len(rows)), *args)
        self.load.commit_seconds += time.monotonic() - t0
        self.drain_writes()

    def drain_writes(self, block: bool = False) -> None:
        """Record the units the writers have written, oldest first; `block`: all of them."""
        if self.writers is None:
            return
        for (unit, state, rows), future in self.writers.ready(block):
            t0 = time.monotonic()
            self._record(unit, state, rows, self._written(unit, lambda f=future: Writers.files(f)), t0)

    def _written(self, unit: Unit, write: Any) -> list[dict]:
        try:
            return write()
        except OSError as err:
            suffixes = FORMAT_SUFFIXES[self.out["format"]]
            names = " and ".join(str(self.shards_dir / f"{unit.name}{s}") for s in suffixes)
            raise PipelineError(f"cannot write {names}: {err}") from err

    def _record(self, unit: Unit, state: UnitState, rows: int, files: list[dict], t0: float) -> None:
        try:
            for reject in sorted(state.rejects, key=lambda r: r["row"]):
                self.rejects.append(reject)
        except OSError as err:
            raise PipelineError(f"cannot append to {self.rejects.path}: {err}") from err
        # `file`, `bytes` and `sha256` name the first format's file (as before `files` existed)
        record = {
            "type": "shard",
            "unit": unit.index,
            "source": self.sources[unit.source].label,
            "start": unit.start,
            "stop": unit.stop,
            "file": files[0]["file"],
            "rows_read": state.expected,
            "rows": rows,
            "rejected": len(state.rejects),
            "bytes": files[0]["bytes"],
            "sha256": files[0]["sha256"],
            "files": files,
            "tokens_per_layer": [state.tokens[i] for i in range(len(self.arch["vq_strides"]))],
            "audio_seconds": round(state.audio_seconds, 3),
            # rows encoded again by single-clip SNAC.encode (runtime.verify_fraction)
            "verify": {
                "clips": state.verify["clips"],
                "tokens": state.verify["tokens"],
                "equal": state.verify["equal"],
                "mismatched": state.mismatched,
            },
        }
        try:
            self.manifest.append(record)
        except OSError as err:
            raise PipelineError(f"cannot append to {self.manifest.path}: {err}") from err
        self.committed.append(record)
        self.load.commit(record, t0, state.last_read)

    @property
    def complete(self) -> bool:
        return not self.state and (self.writers is None or not self.writers.pending)

    def shard_paths(self, non_empty: bool = False) -> list[Path]:
        """Every committed file, all formats (records from before `files` name one)."""
        return [
            self.shards_dir.parent / f["file"]
            for r in self.committed
            if r["rows"] or not non_empty
            for f in r.get("files", [r])
        ]

    def summary(self) -> dict[str, Any]:
        """Totals over every committed unit, this attempt's and earlier ones'; the rate is this
        attempt's alone."""
        wall = time.monotonic() - self.t0
        written = sum(r["rows"] for r in self.committed)
        audio = sum(r["audio_seconds"] for r in self.committed)
        audio_now = sum(r["audio_seconds"] for r in self.committed[self.prior_units :])
        summary = {
            "type": "summary",
            "units": len(self.committed),
            "units_planned": self.planned,
            "units_resumed": self.prior_units,
            "rows_read": sum(r["rows_read"] for r in self.committed),
            "rows_written": written,
            "rows_rejected": sum(r["rejected"] for r in self.committed),
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "audio_seconds": round(audio, 3),
            "tokens": sum(sum(r["tokens_per_layer"]) for r in self.committed),
            "bytes_by_format": self._bytes_by_format(),
            "wall_seconds": round(wall, 3),
            "audio_seconds_per_second": round(audio_now / max(wall, 1e-9), 3),
            # from the first tokens on: without start-up (loading, compiling, the start-up check)
            "steady_audio_seconds_per_second": self._steady(audio_now, wall),
            "readers": self.readers,
            "main_process": self.load.describe(),
            "random_weights": self.weights.kind == RANDOM,
            "verify": self.verification(),
            "workers": dict(sorted(self.workers.items())),
            "seconds_to": self.timing,
            "peak_rss_mb": {"main": peak_rss_mb(), **dict(sorted(self.peak_rss.items()))},
        }
        self.manifest.append(summary)
        steady = summary["steady_audio_seconds_per_second"]
        log.info(
            "done%s: %d rows written, %d rejected %s, %.1f s of audio in %.1f s: %.1f audio s/s "
            "overall, %s",
            " (DRY RUN, stand-in tokens)" if self.dry_run else "",
            written,
            summary["rows_rejected"],
            summary["rejected_by_reason"],
            audio,
            wall,
            summary["audio_seconds_per_second"],
            f"{steady:.1f} steady (after {self.timing['first_tokens']:.1f} s of start-up)"
            if steady is not None
            else "no steady rate (nothing encoded in this attempt)",
        )
        log_verification(summary["verify"])
        return summary

    def _steady(self, audio: float, wall: float) -> float | None:
        first = self.timing.get("first_tokens")
        if first is None or wall <= first:
            return None
        return round(audio / (wall - first), 3)

    def _bytes_by_format(self) -> dict[str, int]:
        sizes: Counter[str] = Counter()
        for record in self.committed:
            for entry in record.get("files", [record]):
                sizes["parquet" if entry["file"].endswith(PARQUET_SUFFIX) else "jsonl"] += entry["bytes"]
        return dict(sizes)

    def close(self) -> None:
        if self.writers is not None:
            self.writers.close()
        self.manifest.close()
        self.rejects.close()


def log_verification(verify: dict[str, Any]) -> None:
    """The run's last word on fidelity: how many verified clips, and what share of their tokens
    equal single-clip SNAC.encode; below 100% it is a warning that names the rows."""
    if not verify["clips"]:
        log.info("verified 0 clips (runtime.verify_fraction picked none of the rows encoded)")
        return
    pct = 100 * verify["tokens_equal"] / verify["tokens"]
    line = (
        f"verified {verify['clips']} clips: {pct:.3f}% of tokens equal single-clip SNAC.encode "
        f"({verify['tokens_equal']} of {verify['tokens']})"
    )
    if verify["tokens_equal"] == verify["tokens"]:
        log.info("%s", line)
        return
    rows = ", ".join(
        f"unit {m['unit']} row {m['row']} (id {m['id']!r}): {m['differ']}"
        for m in verify["mismatched_rows"][:20]
    )
    more = len(verify["mismatched_rows"]) - 20
    log.warning(
        "%s. NOT ALL EQUAL on this machine; rows with differing tokens: %s%s",
        line,
        rows,
        f" and {more} more (manifest.jsonl)" if more > 0 else "",
    )


def _execute(
    conf: dict,
    devices: list[str],
    weights: Weights,
    sources: list[Source],
    units: list[Unit],
    collector: Collector,
    chunking: dict[str, Any],
    tracker: Tracker,
) -> None:
    rt, codec = conf["runtime"], conf["codec"]
    num_readers = rt["num_readers"] or default_readers(devices, usable_cores())
    collector.readers = num_readers
    log.info("%d reader(s) -> %d device worker(s)", num_readers, len(devices))
    ctx = tmp.get_context("spawn")
    with _usr2_blocked():
        resource_tracker.ensure_running()
    work, flag, inbox = ClipChannel(), RunFlag(ctx), Inbox()
    budget = Budget(ctx, rt["queue_samples"], num_readers, len(devices))
    board = Board(ctx, len(devices) + num_readers)  # device workers' rows, then readers'
    reader_stats = ctx.RawArray("d", 2 * num_readers)
    device_stats = ctx.RawArray("d", [0.0, 0.0, -1.0] * len(devices))
    todo = [u for u in units if u.index in collector.state]
    blocks = read_blocks(todo, rt["read_block_rows"])
    if rt["cpu_threads"] is not None and rt["cpu_threads"] != CPU_THREADS:
        log.warning(
            "runtime.cpu_threads=%s does not change encoding: CPU tokens are computed with %d "
            "torch threads per process, whatever the setting, so that they never depend on it "
            "(docs/reliability.md). For more cores, add CPU workers: runtime.devices=[cpu,cpu,...]",
            rt["cpu_threads"],
            CPU_THREADS,
        )
    children = []
    for rank, device in enumerate(devices):
        # a dry run stands in for GPUs, so it batches as they do
        kind = "cuda" if rt["dry_run"] else device.split(":")[0]
        batch_samples = rt["batch_samples"] or DEFAULT_BATCH_SAMPLES[kind]
        plan = DevicePlan(
            rank,
            device,
            weights,
            codec["arch"],
            rt["seed"],
            batch_samples,
            max(batch_samples, rt["queue_samples"] // (2 * len(devices))),
            compile=rt["compile"],
            cache_dir=rt["cache_dir"],
            autocast=rt["autocast"],
            tf32=rt["tf32"],
            chunk_samples=chunking["chunk_samples"],
            overlap_samples=chunking["overlap_samples"],
            dry_run=rt["dry_run"],
        )
        name = f"device worker {rank} ({device})"
        outbox, pipe = inbox.outbox_for(name)
        process = ctx.Process(
            target=device_main,
            args=(plan, work, outbox, budget, flag, device_stats, board),
            name=f"snactok-dev-{rank}",
            daemon=True,
        )
        # a GPU's worker (or a dry run's) uses its CPU threads in bursts: waiting asleep gives
        # the readers the cores; a CPU worker keeps torch's default for its model
        waits = READER_ENV if rt["dry_run"] or device.startswith("cuda") else {}
        children.append(Child(name, rank, process, pipe, waits))
    next_block = BlockCounter()
    for rank in range(num_readers):
        plan = ReaderPlan(
            rank,
            len(devices) + rank,
            sources,
            blocks,
            codec["arch"]["sampling_rate"],
            rt["min_samples"],
            rt["max_duration"],
            0.0 if rt["dry_run"] else rt["verify_fraction"],  # no model to check against
        )
        name = f"reader {rank}"
        outbox, pipe = inbox.outbox_for(name)
        process = ctx.Process(
            target=reader_main,
            args=(plan, next_block, work, outbox, budget, flag, reader_stats, board),
            name=f"snactok-read-{rank}",
            daemon=True,
        )
        children.append(Child(name, len(devices) + rank, process, pipe, READER_ENV))
    rows = [u.rows for u in todo]
    progress = Progress(
        None if None in rows else sum(rows),
        num_readers,
        devices,
        rt["progress_interval"],
        [u.name for u in units],
    )
    supervisor = Supervisor(children, board, inbox, [u.name for u in units], rt["stall_seconds"])
    clean = False
    try:
        with _stop_on_signals():
            with _child_env("GLIBC_TUNABLES", MALLOC_TUNABLES), _usr2_blocked():
                supervisor.start()
            _collect(supervisor, flag, collector, progress, tracker, budget, reader_stats, device_stats)
            clean = True
    finally:
        flag.stop()
        progress.close()
        supervisor.shutdown(clean)
        work.close()


def read_blocks(units: list[Unit], block_rows: int) -> list[tuple[int, int, Any, Any, Any]]:
    """What readers take, in unit order: (unit, source, start, stop, input shard). Row ranges go
    in blocks of `block_rows`, so several readers share a big unit; a streamed shard is read whole,
    by one reader, as it streams."""
    blocks: list[tuple[int, int, Any, Any, Any]] = []
    for u in units:
        if u.shard:
            blocks.append((u.index, u.source, u.start, u.stop, u.number))
            continue
        for start in range(u.start, u.stop, block_rows):
            blocks.append((u.index, u.source, start, min(start + block_rows, u.stop), None))
    return blocks


# glibc returns freed memory above 128 KiB-32 MiB (mmap threshold) and at the heap top (trim
# threshold) to the OS, so every encoder call page-faults its activations back in. Keeping freed
# memory in the process measured 9.2 -> 9.8x and 8.9 -> 10.4x real time on the compiled CPU
# encoder, with half the system time (docs/performance.md). Peak RSS is still set by the largest
# activations: the 10x-clips memory test runs with these settings.
MALLOC_TUNABLES = (
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296:"
    "glibc.malloc.top_pad=268435456"
)


@contextlib.contextmanager
def _usr2_blocked() -> Iterator[None]:
    """Processes started inside begin with SIGUSR2 blocked. Slurm signals every process of a job
    step on pre-emption; this process decides (submitit requeues), and a child must not die of it
    before its own setup ignores it. multiprocessing's resource tracker never would: killed, it is
    relaunched and prints a traceback per shared-memory segment."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _child_env(name: str, value: str) -> Iterator[None]:
    """Children started inside inherit `name=value`, unless the user set `name`."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


def _collect(
    supervisor: Supervisor,
    flag: RunFlag,
    collector: Collector,
    progress: Progress,
    tracker: Tracker,
    budget: Budget,
    reader_stats: Any,
    device_stats: Any,
) -> None:
    """Handle children's messages until every row is written or rejected and every device worker
    has reported back.

    The end is decided by counting rows, not by readers finishing: a reader's last clip can reach
    the workers after its last message reaches us. Children are checked every half second, busy or
    not, so one that dies, or a run that stalls, stops at once.
    """
    num_devices = len(device_stats) // 3
    total_rows = progress.total
    finished: set[int] = set()
    collector.load.start()
    while True:
        if collector.complete:
            flag.finish()
        for sender, msg in supervisor.inbox.poll(POLL_SECONDS):
            _handle(sender, msg, collector, supervisor, finished)
        collector.drain_writes()
        supervisor.check()
        supervisor.watch_progress(len(collector.committed))
        done = len(finished) == num_devices
        progress.update(
            reader_stats,
            device_stats,
            collector.rows_done,
            collector.reasons,
            done,
            starting=None if collector.rows_done else supervisor.starting(),
        )
        readers = range(len(reader_stats) // 2)
        collector.load.watch(
            sum(reader_stats[2 * r] for r in readers), sum(reader_stats[2 * r + 1] for r in readers)
        )
        fill = budget.held / budget.capacity
        tracker.tick(collector, reader_stats, device_stats, fill, total_rows, force=done)
        if done:
            return


def _handle(
    sender: str, msg: tuple, collector: Collector, supervisor: Supervisor, finished: set
) -> None:
    """Apply one child message."""
    kind = msg[0]
    if kind == "batch":
        collector.add_batch(msg[2], msg[3], msg[4], msg[5])
    elif kind == "reject":
        collector.add_reject(*msg[1:])
    elif kind == "unit_read":
        collector.unit_read(msg[1], msg[2])
    elif kind == "worker_ready":
        _, rank, seconds, path, check = msg
        collector.timing.setdefault("first_worker_ready", collector.elapsed())
        collector.workers[str(rank)] = {"path": path, "startup_check": check}
        _log_ready(rank, seconds, path, check)
    elif kind == "peak_rss":
        collector.peak_rss[msg[1]] = msg[2]
    elif kind == "warning":
        log.warning("%s", msg[1])
    elif kind == "note":  # what a starting worker is doing, e.g. compiling: for the progress line
        log.info("%s: %s", sender, msg[1])
        supervisor.notes[sender] = msg[1]
    elif kind == "error":
        supervisor.check(exclude=sender)  # another's death can be the cause (a reader's tensors)
        raise PipelineError(f"{sender} failed:\n{msg[1]}")
    elif kind == "worker_done":
        collector.workers.setdefault(str(msg[1]), {})["verify_seconds"] = msg[2]
        finished.add(msg[1])


def _log_ready(rank: int, seconds: float, path: str, check: dict[str, Any]) -> None:
    if check["passed"] is None:
        log.info("device worker %d ready in %.1f s (%s; %s)", rank, seconds, path, check["why"])
    elif check["passed"] and not check["failed"]:
        log.info(
            "device worker %d ready in %.1f s (%s; start-up check: its encoder frames and tokens "
            "equal single-clip SNAC.encode on the probe clips)",
            rank,
            seconds,
            path,
        )
    else:
        log.warning(
            "device worker %d ready in %.1f s, encoding with the %s path: the faster path gave "
            "other bits than single-clip SNAC.encode on the probe clips (%s)",
            rank,
            seconds,
            path,
            "; ".join(check["failed"]),
        )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGUSR2 (Slurm: pre-emption, time limit) stop the run as Ctrl-C does: the
    children stop, nothing half-done is committed, and the run can be resumed.

    Children ignore these signals, so this process decides. A handler already installed here
    (submitit's, which requeues the job) keeps the decision: it is called instead.
    """
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if callable(previous[signum]):
            previous[signum](signum, frame)
            return
        raise Interrupted(signum)

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


PACKAGES = (
    "snactok",
    "torch",
    "torchaudio",
    "snac",
    "datasets",
    "numpy",
    "hydra-core",
    "soundfile",
    "av",
    "pyarrow",
)
# Versions that can change tokens (kernels, the model code): part of the fingerprint.
TOKEN_PACKAGES = ("torch", "snac")


def _byte_packages(output_format: str) -> tuple[str, ...]:
    """Packages whose version changes the shards' bytes: pyarrow writes the Parquet files."""
    return TOKEN_PACKAGES + (("pyarrow",) if output_format != "jsonl" else ())


def _header(
    conf: dict,
    weights: Weights,
    sources: list[Source],
    devices: list[str],
    chunking: dict,
    units: list[Unit],
) -> dict[str, Any]:
    packages = {p: _version(p) for p in PACKAGES}
    model_file = Path(weights.path) / "pytorch_model.bin" if weights.path else None
    weights_info = weights.describe() | {"sha256": sha256_file(model_file) if model_file else None}
    return {
        "type": "header",
        "schema_version": SCHEMA_VERSION,
        **({"dry_run": DRY_RUN_NOTE} if conf["runtime"].get("dry_run") else {}),
        "codec": conf["codec"]["name"],
        "arch": conf["codec"]["arch"],
        "weights": weights_info,
        "random_weights": weights.kind == RANDOM,
        "dataset": conf["dataset"]["name"],
        "sources": [s.describe() for s in sources],
        "devices": devices,
        "chunking": chunking,
        # every unit of the dataset, for scripts/merge.py to check the jobs against
        "units": {"total": len(units), "names": [u.name for u in units]},
        "packages": packages,
        "git_commit": _git_commit(),
        "config": conf,
        "fingerprint": fingerprint(
            conf,
            {k: weights_info[k] for k in ("kind", "commit", "sha256")},
            [s.identity() for s in sources],
            sorted({d.split(":")[0] for d in devices}),
            chunking,
            {p: packages[p] for p in _byte_packages(conf["output"]["format"])},
        ),
    } | _host()


def _host() -> dict[str, Any]:
    return {"host": platform.node(), "pid": os.getpid(), "python": platform.python_version()}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
