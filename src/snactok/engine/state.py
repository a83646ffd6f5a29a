"""What the run's processes share in memory (and in one locked file), built so that no death can
wedge another: each process writes only its own slots, and whoever waits on them polls.

- `RunFlag`: what the main process wants of the children: run, finish or stop.
- `Budget`: samples decoded but not yet encoded, bounded by runtime.queue_samples.
- `BlockCounter`: the next block of rows to read, under a POSIX record lock, which the kernel
  releases when its holder dies.
- `Board`: per child, its phase, its unit and a count of its steps, to name it when it dies or
  stalls.
- `Tally`: per reader or device worker, the items it has passed on and their audio seconds.
"""

from __future__ import annotations

import enum
import fcntl
import os
import struct
import tempfile
import time
from multiprocessing.reduction import DupFd
from typing import Any

_RUN, _FINISH, _STOP = 0, 1, 2


class RunFlag:
    """What the main process wants of the children: run, finish (every row is done), or stop."""

    def __init__(self, ctx: Any):
        self._value = ctx.RawValue("i", _RUN)

    def finish(self) -> None:
        if self._value.value == _RUN:
            self._value.value = _FINISH

    def stop(self) -> None:
        self._value.value = _STOP

    @property
    def running(self) -> bool:
        return self._value.value == _RUN

    @property
    def finishing(self) -> bool:
        return self._value.value == _FINISH


class Budget:
    """Samples decoded but not yet encoded: what readers took less what device workers gave back.

    Each process counts in its own slot, so there is no lock to die holding; two readers may pass
    at the same moment, so the budget can be exceeded by one clip per reader. A clip bigger than
    the whole budget passes when nothing else is held, so it cannot deadlock.
    """

    def __init__(self, ctx: Any, capacity: int, readers: int, devices: int):
        self.capacity = capacity
        self._taken = ctx.RawArray("q", readers)
        self._returned = ctx.RawArray("q", devices)

    @property
    def held(self) -> int:
        return sum(self._taken) - sum(self._returned)

    def fits(self, n: int) -> bool:
        held = self.held
        return held <= 0 or held + n <= self.capacity

    def wait_for(self, n: int, flag: RunFlag) -> bool:
        """Wait until `n` samples fit; False if the run stops first."""
        delay = 0.001
        while not self.fits(n):
            if not flag.running:
                return False
            time.sleep(delay)
            delay = min(2 * delay, 0.02)
        return True

    def take(self, reader: int, n: int) -> None:
        self._taken[reader] += n

    def give_back(self, device: int, n: int) -> None:
        self._returned[device] += n


class BlockCounter:
    """A counter readers take the next block index from: a file's 8 bytes under `lockf`.

    A POSIX record lock belongs to its process, and the kernel drops it when the process dies, so
    a reader killed while holding it cannot stop the others. (A multiprocessing lock would stay
    held.)
    """

    def __init__(self, fd: int | None = None):
        if fd is None:
            with tempfile.TemporaryFile() as f:  # unlinked: nothing to clean up after a crash
                fd = os.dup(f.fileno())
            os.pwrite(fd, struct.pack("q", 0), 0)
        self._fd = fd

    def take(self) -> int:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            (k,) = struct.unpack("q", os.pread(self._fd, 8, 0))
            os.pwrite(self._fd, struct.pack("q", k + 1), 0)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        return k

    def __reduce__(self) -> tuple:
        return _rebuild_counter, (DupFd(self._fd),)


def _rebuild_counter(dup: Any) -> BlockCounter:
    return BlockCounter(dup.detach())


class Phase(enum.IntEnum):
    """What a child is doing, for the main process to name when it dies or stalls."""

    STARTING = 0
    LOADING = 1
    COMPILING = 2
    CHECKING = 3
    WAITING = 4
    ENCODING = 5
    READING = 6
    BUDGET = 7
    IDLE = 8
    FINISHING = 9

    def doing(self, unit: str | None) -> str:
        return {
            Phase.STARTING: "while starting (importing its libraries)",
            Phase.LOADING: "while loading its model",
            Phase.COMPILING: "while compiling its encoder (runtime.compile)",
            Phase.CHECKING: "during its start-up check against SNAC.encode",
            Phase.WAITING: "while waiting for clips",
            Phase.ENCODING: f"while encoding unit {unit}",
            Phase.READING: f"while reading unit {unit}",
            Phase.BUDGET: f"while waiting for room in runtime.queue_samples (reading unit {unit})",
            Phase.IDLE: "while idle after its last row",
            Phase.FINISHING: "while finishing",
        }[self]


# A device worker's phases before its first batch.
START_UP = frozenset({Phase.STARTING, Phase.LOADING, Phase.COMPILING, Phase.CHECKING})
# Phases in which a child works rather than waits for another process: a stall names these.
BUSY = frozenset(
    {Phase.STARTING, Phase.LOADING, Phase.COMPILING, Phase.CHECKING, Phase.ENCODING, Phase.READING}
)


class Board:
    """Per child: its phase, the unit it works on (-1: none) and a count of steps it has made
    (rows read, batches encoded), which the main process watches to tell slow from stuck."""

    _FIELDS = 3

    def __init__(self, ctx: Any, children: int):
        self._cells = ctx.RawArray("q", self._FIELDS * children)
        for slot in range(children):
            self._cells[self._FIELDS * slot + 1] = -1

    def enter(self, slot: int, phase: Phase, unit: int = -1) -> None:
        """Set the child's phase; a change counts as a step."""
        base = self._FIELDS * slot
        if self._cells[base] == phase and self._cells[base + 1] == unit:
            return
        self._cells[base + 1] = unit
        self._cells[base] = phase
        self._cells[base + 2] += 1

    def step(self, slot: int) -> None:
        self._cells[self._FIELDS * slot + 2] += 1

    def phase(self, slot: int) -> Phase:
        return Phase(self._cells[self._FIELDS * slot])

    def unit(self, slot: int) -> int:
        return self._cells[self._FIELDS * slot + 1]

    def steps(self, slot: int) -> int:
        return self._cells[self._FIELDS * slot + 2]


class Tally:
    """Per reader or device worker: the items it has passed on (rows a reader sent to the device
    workers, clips a device worker encoded) and their seconds of audio. Each adds to its own slot.
    With a `board`, `unit(slot)` is the unit the child in that Board slot works on."""

    _FIELDS = 2

    def __init__(self, ctx: Any, processes: int, board: Board | None = None):
        self._cells = ctx.RawArray("d", self._FIELDS * processes)
        self._board = board

    def __len__(self) -> int:
        return len(self._cells) // self._FIELDS

    def add(self, slot: int, items: int, seconds: float) -> None:
        self._cells[self._FIELDS * slot] += items
        self._cells[self._FIELDS * slot + 1] += seconds

    def items(self, slot: int) -> int:
        return int(self._cells[self._FIELDS * slot])

    def seconds(self, slot: int) -> float:
        return self._cells[self._FIELDS * slot + 1]

    def total_items(self) -> int:
        return sum(self.items(slot) for slot in range(len(self)))

    def total_seconds(self) -> float:
        return sum(self.seconds(slot) for slot in range(len(self)))

    def unit(self, slot: int) -> int:
        """The unit the child in Board slot `slot` works on; -1: none (or no Board)."""
        return -1 if self._board is None else self._board.unit(slot)
