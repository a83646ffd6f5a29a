"""What the children tell the main process: one frozen dataclass per kind, read with `match`.

Each goes down the child's own pipe as a pickle (`snactok.engine.ipc.Outbox`). A row's key is
`(unit, row, meta)`: the unit's index in the run's list, the row's index in its source, and the
row's id, text, speaker and duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RowKey = tuple[int, int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Batch:
    """A device worker's tokens for the clips of one batch, in the batch's order."""

    rank: int
    keys: list[RowKey]
    codes: Any  # np.ndarray, [clip, token] in the codec's flat layout
    length: int  # the padded samples every clip of the batch was encoded at
    # (position in the batch, tokens, tokens equal) per clip verified (runtime.verify_fraction)
    checks: list[tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that gives no tokens, and why (`reason` is a code, `detail` says more)."""

    unit: int
    row: int
    id: Any
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class UnitRead:
    """A reader has read all of a streamed shard: it had `rows` rows."""

    unit: int
    rows: int


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """A device worker has loaded (and compiled) its encoder and checked it."""

    rank: int
    seconds: float
    path: str  # the encode path it uses: compiled, eager or exact
    check: dict[str, Any]  # the start-up check: passed, path, failed (or why none ran)


@dataclass(frozen=True, slots=True)
class WorkerDone:
    """A device worker has encoded everything it was sent."""

    rank: int
    verify_seconds: float  # spent on runtime.verify_fraction's single-clip SNAC.encode


@dataclass(frozen=True, slots=True)
class PeakRss:
    """A child's peak resident memory, sent when its work is done, for the summary."""

    process: str  # "reader 0", "device worker 0 (cpu)"
    mb: float


@dataclass(frozen=True, slots=True)
class Warn:
    """A line for the main process to log as a warning."""

    text: str


@dataclass(frozen=True, slots=True)
class Note:
    """What a starting worker is doing (e.g. compiling), for the log and the progress line."""

    text: str


@dataclass(frozen=True, slots=True)
class Failed:
    """A child's uncaught exception, as its traceback; the run stops."""

    traceback: str


Message = Batch | Reject | UnitRead | WorkerReady | WorkerDone | PeakRss | Warn | Note | Failed
