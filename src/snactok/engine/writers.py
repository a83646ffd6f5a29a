"""`output.writers=N`: format, compress and write committed units in N processes, off the main one.

The main process receives every row of every device. Writing a unit costs ~70 ns a token in
zlib's level-1 deflate alone on this project's CPUs, and gzip output must stay byte for byte what
it is, so one process cannot commit much more than ~14M tokens/s (~65,000 audio s/s at
snac_44khz's rates) whatever its formatting costs. With writers, the main process only hands a
unit's rows over (a copy of their int16 codes) and records each commit when its files are in
place, in the order units completed, so the manifest still lists a unit only after its files:
what `snactok.output.resume` relies on.

A writer that dies (kill -9, out of memory) breaks the pool: the next result raises, the run
stops with the usual resumable message, and the unit it held is simply not committed.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snactok.engine.hook import reached
from snactok.errors import PipelineError
from snactok.output.formats import Columns, Row, write_unit

if TYPE_CHECKING:
    from snactok.config.schema import OutputConfig

# Units handed over and not yet written, per writer: more only holds more rows in memory.
IN_FLIGHT_PER_WRITER = 2
NAME = "snactok-writer"


def _writer_setup() -> None:
    """Ctrl-C and Slurm's SIGTERM reach the whole process group; the main process alone acts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    multiprocessing.current_process().name = NAME  # what snactok.engine.hook and `ps` show


def _write(
    directory: Path, name: str, rows: list[Row], columns: Columns, out: OutputConfig
) -> list[dict]:
    reached("writing")
    return write_unit(directory, name, rows, columns, out)


class Writers:
    """A pool of writer processes and the units handed to it, oldest first."""

    def __init__(self, count: int):
        self.pool = ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("spawn"), initializer=_writer_setup
        )
        self.limit = count * IN_FLIGHT_PER_WRITER
        self.pending: deque[tuple[Any, Future]] = deque()

    def submit(
        self, key: Any, directory: Path, name: str, rows: list[Row], columns: Columns, out: OutputConfig
    ) -> None:
        self.pending.append((key, self.pool.submit(_write, directory, name, rows, columns, out)))

    def ready(self, block: bool = False) -> list[tuple[Any, Future]]:
        """(key, future) of the units at the front of the queue that are written, in the order
        they were handed over; with `block`, or while too many are in flight, the oldest too."""
        out = []
        while self.pending and (block or len(self.pending) > self.limit or self.pending[0][1].done()):
            out.append(self.pending.popleft())
        return out

    @staticmethod
    def files(future: Future) -> list[dict]:
        """The written unit's files; OSError as the writer raised it."""
        try:
            return future.result()
        except BrokenProcessPool as err:
            raise PipelineError(
                "a writer process (output.writers) died, so the unit it was writing is not committed"
            ) from err

    def close(self) -> None:
        """Stop the pool now; what is unwritten stays uncommitted, to be redone on resume."""
        for _, future in self.pending:
            future.cancel()
        processes = list((self.pool._processes or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:  # a writer mid-write would otherwise finish first
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(5)
