"""The work plan: a dataset's rows cut into units, and which job of a multi-job run owns a unit.

A unit becomes exactly one shard. It is a fixed range of `lines_per_file` input rows of one source,
or with `dataset.streaming=true` one input shard of the source's IterableDataset (a data file, or a
Parquet row group with `dataset.reshard=true`): rows are then read as they stream, never downloaded
as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snactok.inputs.sources import Source


@dataclass(frozen=True)
class Unit:
    """Rows [start, stop) of source `source`, or its input shard `number` when `shard` is set;
    written as shard `name`. A streamed shard with no row count has start and stop None."""

    index: int  # position in the run's unit list
    source: int
    number: int  # unit number within its source, in the shard name
    start: int | None
    stop: int | None
    name: str
    shard: bool = False  # streaming: `number` is the source's input shard

    @property
    def rows(self) -> int | None:
        return None if self.start is None else self.stop - self.start


def job_units(units: list[Unit], num_jobs: int, job_index: int) -> list[Unit]:
    """Job `job_index` of `num_jobs` takes every num_jobs-th unit from its own index on: disjoint,
    together complete, the same on every node, and mixing big and small sources evenly."""
    return units[job_index::num_jobs]


def owner(unit_index: int, num_jobs: int) -> int:
    """The job_index that `job_units` gives unit `unit_index` to."""
    return unit_index % num_jobs


def plan_units(sources: list[Source], lines_per_file: int) -> list[Unit]:
    units: list[Unit] = []
    for src in sources:
        if src.streaming:
            units += _shard_units(src, len(units))
            continue
        for number, start in enumerate(range(0, src.num_rows, lines_per_file)):
            stop = min(start + lines_per_file, src.num_rows)
            name = f"{src.label}-{number:05d}"
            units.append(Unit(len(units), src.index, number, start, stop, name))
    return units


def _shard_units(src: Source, first: int) -> list[Unit]:
    """One unit per input shard; row ranges follow from the counts when metadata gives them, and
    `runtime.max_rows` cuts the last one (shards past it are left out)."""
    units, start = [], 0
    for number, (_, rows) in enumerate(src.shards):
        if rows is None:
            span = (None, None)
        elif src.num_rows is not None and start >= src.num_rows:
            break
        else:
            span = (start, min(start + rows, src.num_rows))
            start += rows
        name = f"{src.label}-{number:05d}"
        units.append(Unit(first + len(units), src.index, number, *span, name, shard=True))
    return units
