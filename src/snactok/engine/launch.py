"""What a run's children are given and how they start: the shared objects between processes, one
plan per device worker and per reader, and their processes (`spawn`, as CUDA needs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snactok.codec.weights import arch_dict
from snactok.config.schema import Config
from snactok.engine.device import DevicePlan, device_main
from snactok.engine.ipc import ClipChannel, Inbox, Links
from snactok.engine.processes import Child
from snactok.engine.reader import Block, ReaderPlan, reader_main
from snactok.engine.signals import READER_ENV
from snactok.engine.state import BlockCounter, Board, Budget, RunFlag, Tally
from snactok.inputs.sources import Source

# runtime.batch_samples=null: on CPU one clip per batch (batching was slower, measured in
# docs/performance.md); on CUDA 2**21 padded samples (~87 s of 24 kHz audio).
DEFAULT_BATCH_SAMPLES = {"cpu": 1, "cuda": 2**21}


@dataclass
class Shared:
    """Everything the main process and its children share: clips go readers -> device workers on
    `work`, messages children -> main through `inbox`; the rest is shared memory (`ipc`)."""

    work: ClipChannel
    flag: RunFlag
    inbox: Inbox
    budget: Budget
    board: Board  # device workers' rows, then readers'
    reader_stats: Tally  # per reader: rows sent to the device workers
    device_stats: Tally  # per device worker: clips encoded; its unit is the Board's
    next_block: BlockCounter

    @property
    def links(self) -> Links:
        return Links(self.work, self.budget, self.flag, self.board)

    @classmethod
    def create(cls, ctx: Any, queue_samples: int, readers: int, devices: int) -> Shared:
        board = Board(ctx, devices + readers)
        return cls(
            work=ClipChannel(),
            flag=RunFlag(ctx),
            inbox=Inbox(),
            budget=Budget(ctx, queue_samples, readers, devices),
            board=board,
            reader_stats=Tally(ctx, readers),
            device_stats=Tally(ctx, devices, board),  # device ranks are Board slots 0..n-1
            next_block=BlockCounter(),
        )


def device_plans(conf: Config, devices: list[str], weights: Any, chunking: dict) -> list[DevicePlan]:
    rt, codec = conf.runtime, conf.codec
    plans = []
    for rank, device in enumerate(devices):
        # a dry run stands in for GPUs, so it batches as they do
        kind = "cuda" if rt.dry_run else device.split(":")[0]
        batch_samples = rt.batch_samples or DEFAULT_BATCH_SAMPLES[kind]
        plans.append(
            DevicePlan(
                rank,
                device,
                weights,
                arch_dict(codec.arch),
                rt.seed,
                batch_samples,
                max(batch_samples, rt.queue_samples // (2 * len(devices))),
                compile=rt.compile,
                cache_dir=rt.cache_dir,
                autocast=rt.autocast,
                tf32=rt.tf32,
                chunk_samples=chunking["chunk_samples"],
                overlap_samples=chunking["overlap_samples"],
                dry_run=rt.dry_run,
            )
        )
    return plans


def reader_plans(
    conf: Config,
    sources: list[Source],
    blocks: list[Block],
    readers: int,
    devices: int,
    text_ids: Any = None,
) -> list[ReaderPlan]:
    rt = conf.runtime
    return [
        ReaderPlan(
            rank,
            devices + rank,
            sources,
            blocks,
            conf.codec.arch.sampling_rate,
            rt.min_samples,
            rt.max_duration,
            0.0 if rt.dry_run else rt.verify_fraction,  # no model to check against
            text_ids,
        )
        for rank in range(readers)
    ]


def spawn(ctx: Any, shared: Shared, devices: list[DevicePlan], readers: list[ReaderPlan]) -> list[Child]:
    """The children's processes, not started yet: device workers, then readers."""
    s = shared
    children = []
    for plan in devices:
        outbox, pipe = s.inbox.outbox_for(plan.name)
        process = ctx.Process(
            target=device_main,
            args=(plan, s.links, s.device_stats, outbox),
            name=f"snactok-dev-{plan.rank}",
            daemon=True,
        )
        # a GPU's worker (or a dry run's) uses its CPU threads in bursts: waiting asleep gives
        # the readers the cores; a CPU worker keeps torch's default for its model
        waits = READER_ENV if plan.dry_run or plan.device.startswith("cuda") else {}
        children.append(Child(plan.name, plan.rank, process, pipe, waits))
    for plan in readers:
        name = f"reader {plan.rank}"
        outbox, pipe = s.inbox.outbox_for(name)
        process = ctx.Process(
            target=reader_main,
            args=(plan, s.links, s.next_block, s.reader_stats, outbox),
            name=f"snactok-read-{plan.rank}",
            daemon=True,
        )
        children.append(Child(name, plan.slot, process, pipe, READER_ENV))
    return children
