"""Readers: take blocks of rows from a shared counter, decode and resample each row, and send the
clips to the device workers (rejects to the main process).

Blocks come from a shared counter, so every reader stays busy even on one unit. A sample budget
bounds what is decoded but not yet encoded. A deterministic sample of rows is marked to be
encoded again by the reference method (`chosen_for_verify`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from snactok.engine.child import POLL_SECONDS, child_setup, peak_rss_mb, reporting
from snactok.engine.hook import reached
from snactok.engine.ipc import Links, Outbox
from snactok.engine.messages import PeakRss, Reject, UnitRead
from snactok.engine.state import BlockCounter, Phase, Tally
from snactok.inputs.audio import Rejected, Resampler, check_audio, decode
from snactok.inputs.units import Unit


@dataclass
class Clip:
    unit: int  # index into the run's unit list
    row: int  # row index within the source
    meta: dict[str, Any]  # id, text, speaker, duration
    wave: torch.Tensor  # mono float32 at the codec rate, in shared memory once queued
    verify: bool = False  # encode it again with the reference method and compare

    @property
    def samples(self) -> int:
        return self.wave.shape[0]


@dataclass(frozen=True, slots=True)
class Block:
    """Rows a reader takes at once: `start` to `stop` of one source, or a whole input shard."""

    unit: int  # index into the run's unit list
    source: int
    start: Any
    stop: Any
    shard: Any = None  # a streamed unit's input shard, read whole; None: a row range


def read_blocks(units: list[Unit], block_rows: int) -> list[Block]:
    """What readers take, in unit order. Row ranges go in blocks of `block_rows`, so several
    readers share a big unit; a streamed shard is read whole, by one reader, as it streams."""
    blocks: list[Block] = []
    for u in units:
        if u.shard:
            blocks.append(Block(u.index, u.source, u.start, u.stop, u.number))
            continue
        for start in range(u.start, u.stop, block_rows):
            blocks.append(Block(u.index, u.source, start, min(start + block_rows, u.stop)))
    return blocks


def chosen_for_verify(source: int, row: int, fraction: float) -> bool:
    """The deterministic sample `runtime.verify_fraction` picks: by source and row index only, so
    a resumed or re-split run checks the same rows. A multiplicative hash spreads the picks
    evenly through the data (every 100th row would beat with periodic datasets)."""
    if fraction <= 0:
        return False
    h = ((row + 1) * 0x9E3779B1 + source * 0x85EBCA77) & 0xFFFFFFFF
    return h < fraction * 2**32


@dataclass
class ReaderPlan:
    rank: int
    slot: int  # its row on the Board
    sources: list  # list[Source]
    blocks: list[Block]
    sample_rate: int
    min_samples: int
    max_duration: float | None
    verify_fraction: float = 0.0
    text_ids: Any = None  # template set: a TextIds, the row's text as token ids (inputs.text)


def reader_main(
    plan: ReaderPlan, links: Links, next_block: BlockCounter, stats: Tally, outbox: Outbox
) -> None:
    """A reader process: decode rows block by block until the run ends."""
    child_setup()
    Reader(plan, links, next_block, stats, outbox).serve()


class Reader:
    """Decodes rows block by block; sends clips to the workers and rejects to the main process.
    Its own process's body, or a thread's with `runtime.inprocess=true`."""

    def __init__(
        self, plan: ReaderPlan, links: Links, next_block: BlockCounter, stats: Tally, outbox: Outbox
    ):
        self.plan = plan
        self.links = links
        self.next_block = next_block
        self.stats = stats
        self.outbox = outbox

    def serve(self) -> None:
        plan, flag, board = self.plan, self.links.flag, self.links.board
        with reporting(self.outbox):
            reached("starting")
            resample = Resampler(plan.sample_rate)
            while flag.running:
                k = self.next_block.take()
                if k >= len(plan.blocks):
                    break
                if not self._read_block(plan.blocks[k], resample):
                    return
            board.enter(plan.slot, Phase.IDLE)
            self.outbox.send(PeakRss(f"reader {plan.rank}", peak_rss_mb()))
            reached("idle")
            # Queued tensors are shared by file descriptor, served by this process: stay alive
            # until every row is done.
            while flag.running:
                time.sleep(POLL_SECONDS / 5)

    def _read_block(self, block: Block, resample: Resampler) -> bool:
        """Read one block's rows into the channel; False if the run stopped meanwhile."""
        plan, budget, flag, board = self.plan, self.links.budget, self.links.flag, self.links.board
        unit = block.unit
        board.enter(plan.slot, Phase.READING, unit)
        rows = 0
        for index, row in plan.sources[block.source].read(block.start, block.stop, block.shard):
            rows += 1
            clip = self._read_row(row, unit, block.source, index, resample)
            board.step(plan.slot)
            if clip is None:
                continue
            if not budget.fits(clip.samples):
                board.enter(plan.slot, Phase.BUDGET, unit)
                reached("budget")
                if not budget.wait_for(clip.samples, flag):
                    return False
                board.enter(plan.slot, Phase.READING, unit)
            budget.take(plan.rank, clip.samples)
            if not self.links.work.put(clip, flag):
                return False
            self.stats.add(plan.rank, 1, clip.meta["duration"])
            reached("reading")
        if block.shard is not None:  # a streamed shard's row count is known only now
            self.outbox.send(UnitRead(unit, rows))
        return True

    def _read_row(
        self, row: dict, unit: int, source: int, index: int, resample: Resampler
    ) -> Clip | None:
        plan = self.plan
        try:
            text = row["text"]
            if not isinstance(text, str):
                raise Rejected("bad_text", f"text is {type(text).__name__}, not a string")
            speaker = row["speaker"]
            speaker = speaker if speaker is None or isinstance(speaker, str) else str(speaker)
            text_ids = plan.text_ids(text, speaker) if plan.text_ids else None
            audio, rate = decode(row["audio"])
            check_audio(audio, rate, plan.min_samples, plan.max_duration)
            wave = resample(audio, rate)
        except Rejected as rej:
            self.outbox.send(Reject(unit, index, _row_id(row), rej.reason, rej.detail))
            return None
        meta = {
            "id": _row_id(row),
            "text": text,
            "speaker": speaker,
            "duration": round(audio.shape[0] / rate, 6),
            "read_at": time.monotonic(),  # system-wide clock: the main process times the commit
        }
        if "keep" in row:
            meta["keep"] = row["keep"]
        if text_ids is not None:
            meta["text_ids"] = text_ids
        verify = chosen_for_verify(source, index, plan.verify_fraction)
        return Clip(unit, index, meta, wave, verify)


def _row_id(row: dict) -> Any:
    rid = row["id"]
    return rid if isinstance(rid, int | str) else str(rid)
