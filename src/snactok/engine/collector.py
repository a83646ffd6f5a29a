"""The main process's collection: rows per unit, and each unit's commit (its shard files, its
rejects, its manifest record) once every row is written or rejected."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snactok.codec import orpheus
from snactok.codec.layout import token_lengths
from snactok.codec.weights import Weights, arch_dict
from snactok.config.schema import Config, Dedup, OutputConfig
from snactok.engine.messages import Batch, Reject
from snactok.engine.summary import MainLoad, log_summary, summarize, verification
from snactok.engine.writers import Writers
from snactok.errors import PipelineError
from snactok.inputs.columns import arrow_type
from snactok.inputs.sources import Source
from snactok.inputs.units import Unit
from snactok.output.files import JsonlLog
from snactok.output.formats import Columns, Row, write_unit
from snactok.output.resume import Prior
from snactok.output.rundir import FORMAT_SUFFIXES, MANIFEST, REJECTS, recorded_files

log = logging.getLogger(__name__)


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
    dropped_frames: int = 0  # template.dedup=first_token: frames left out of input_ids


def shard_columns(src: Source, arch: dict, out: OutputConfig, template: Any = None) -> Columns:
    """The columns of `src`'s shards and their types. Ids are row indices without an id column
    (`<shard>/<row>` strings for streamed shards of unknown size), else its values (non-int ones
    as strings)."""
    feature = src.feature(src.id_column) if src.id_column else None
    id_dtype = str(getattr(feature, "dtype", "")) if src.id_column else "int"
    if not src.id_column and src.num_rows is None:
        id_dtype = "string"
    return Columns(
        num_layers=len(arch["vq_strides"]),
        constants=src.constants,
        with_speaker=bool(src.speaker_column),
        id_is_int=id_dtype.startswith(("int", "uint")),
        flatten=out.flatten,
        kept={name: arrow_type(src.feature(path)) for name, path in src.keep.items()},
        template=template,
    )


class Collector:
    """Gathers rows per unit in the main process and commits each unit's shard when complete."""

    def __init__(
        self,
        units: list[Unit],
        mine: list[Unit],
        sources: list[Source],
        conf: Config,
        run_dir: Path,
        weights: Weights,
        t0: float,
        prior: Prior,
    ):
        self.t0 = t0
        self.units = units
        self.sources = sources
        self.arch = arch_dict(conf.codec.arch)
        self.out = conf.output
        self.dry_run = conf.runtime.dry_run
        self.readers: int | None = None  # set when the readers start
        self.load = MainLoad()
        self.template = conf.template
        self.columns = [shard_columns(src, self.arch, self.out, self.template) for src in sources]
        self.weights = weights
        self.shards_dir = run_dir / "shards"
        self.shards_dir.mkdir(exist_ok=True)
        self.manifest = JsonlLog(run_dir / MANIFEST)
        self.rejects = JsonlLog(run_dir / REJECTS)
        self.state = {
            u.index: UnitState(expected=u.rows) for u in mine if u.index not in prior.committed
        }
        self.committed: list[dict] = list(prior.committed.values())
        writers = conf.output.writers
        self.writers = Writers(writers) if writers and self.state else None
        self.planned = len(mine)  # this job's units
        self.prior_units = len(self.committed)
        self.reasons: Counter[str] = Counter(r["reason"] for r in prior.rejects)
        self.rows_done = 0  # by this attempt
        self.timing: dict[str, float] = {}  # seconds since the run started
        self.peak_rss: dict[str, float] = {}  # process -> MiB
        self.workers: dict[str, dict] = {}  # rank -> encode path, start-up check, verify seconds

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def add_batch(self, batch: Batch) -> None:
        self.timing.setdefault("first_tokens", self.elapsed())
        lengths = tuple(token_lengths(batch.length, self.arch))
        for position, tokens, equal in batch.checks:  # before the rows: the last may commit the unit
            unit, row, meta = batch.keys[position]
            self._verified(unit, row, meta["id"], tokens, equal)
        for (unit, row, meta), row_codes in zip(batch.keys, batch.codes, strict=True):
            state = self.state[unit]
            # a copy, so the batch's array can go once each row has its own
            state.rows[row] = Row(meta, np.array(row_codes, dtype=np.int16), lengths)
            state.audio_seconds += meta["duration"]
            state.last_read = max(state.last_read, meta.get("read_at", 0.0))
            state.tokens.update(dict(enumerate(lengths)))
            if self.template is not None and self.template.dedup == Dedup.first_token:
                state.dropped_frames += int((~orpheus.kept_frames(row_codes[: lengths[0]])).sum())
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
        return verification(self.committed)

    def add_reject(self, reject: Reject) -> None:
        src = self.sources[self.units[reject.unit].source]
        self.state[reject.unit].rejects.append(
            {
                "source": src.label,
                "unit": reject.unit,
                "row": reject.row,
                "id": reject.id,
                "reason": reject.reason,
                "detail": reject.detail,
            }
        )
        self.reasons[reject.reason] += 1
        self._row_done(reject.unit)

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
        record: the unit is done only once the record is there (`snactok.output.resume` reads it
        back). With output.writers the files are written by a writer process, and the rest
        follows when it is done (`drain_writes`)."""
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
            suffixes = FORMAT_SUFFIXES[self.out.format]
            names = " and ".join(str(self.shards_dir / f"{unit.name}{s}") for s in suffixes)
            raise PipelineError(f"cannot write {names}: {err}") from err

    def _record(self, unit: Unit, state: UnitState, rows: int, files: list[dict], t0: float) -> None:
        try:
            for reject in sorted(state.rejects, key=lambda r: r["row"]):
                self.rejects.append(reject)
        except OSError as err:
            raise PipelineError(f"cannot append to {self.rejects.path}: {err}") from err
        record = self._shard_record(unit, state, rows, files)
        try:
            self.manifest.append(record)
        except OSError as err:
            raise PipelineError(f"cannot append to {self.manifest.path}: {err}") from err
        self.committed.append(record)
        self.load.commit(record, t0, state.last_read)

    def _shard_record(self, unit: Unit, state: UnitState, rows: int, files: list[dict]) -> dict:
        # `file`, `bytes` and `sha256` name the first format's file (as before `files` existed)
        return {
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
        } | ({"dropped_frames": state.dropped_frames} if self.template is not None else {})

    @property
    def complete(self) -> bool:
        return not self.state and (self.writers is None or not self.writers.pending)

    def shard_paths(self, non_empty: bool = False) -> list[Path]:
        """Every committed file, all formats (records from before `files` name one)."""
        return [
            self.shards_dir.parent / f["file"]
            for r in self.committed
            if r["rows"] or not non_empty
            for f in recorded_files(r)
        ]

    def summary(self) -> dict[str, Any]:
        """The run's totals (`snactok.engine.summary`), appended to the manifest and logged."""
        wall = time.monotonic() - self.t0
        summary = summarize(self, wall)
        self.manifest.append(summary)
        log_summary(summary, self.dry_run, sum(r["audio_seconds"] for r in self.committed), wall)
        return summary

    def close(self) -> None:
        if self.writers is not None:
            self.writers.close()
        self.manifest.close()
        self.rejects.close()
