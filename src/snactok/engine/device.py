"""Device workers: bucket clips by padded length, encode full buckets, send tokens back.

A worker checks its fast path against single-clip `SNAC.encode` before the first batch
(`startup_check`), and encodes the rows readers marked for verification again by that reference
method. Everything between processes goes through `snactok.engine.ipc`, where no death can wedge
another process, and the worker keeps its phase on the `Board`, for the main process to name.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snactok.codec.dryrun import DryEncoder
from snactok.codec.encoder import (
    BatchEncoder,
    Pending,
    Reference,
    prepare_device,
    probe_clips,
    self_check,
)
from snactok.codec.layout import pad_multiple, padded_length
from snactok.codec.long_clips import encode_in_parts, plan_parts
from snactok.codec.weights import Weights, load_model
from snactok.engine.child import POLL_SECONDS, child_setup, peak_rss_mb, reporting
from snactok.engine.hook import reached
from snactok.engine.ipc import ClipChannel, Links, Outbox
from snactok.engine.messages import Batch, Note, PeakRss, Reject, Warn, WorkerDone, WorkerReady
from snactok.engine.reader import Clip
from snactok.engine.state import Board, Budget, Phase, RunFlag, Tally

IDLE_FLUSH_SECONDS = 0.05


@dataclass
class DevicePlan:
    rank: int  # also its row on the Board
    device: str
    weights: Weights
    arch: dict
    seed: int
    batch_samples: int
    pool_samples: int  # flush the fullest bucket when this worker holds more
    compile: bool = False
    cache_dir: str | None = None  # inductor/ under it keeps compiled kernels across runs
    autocast: str | None = None
    tf32: bool | None = None  # None: torch's defaults (the reference's)
    chunk_samples: int | None = None  # longer clips go in overlapping parts; None: never
    overlap_samples: int = 0  # context each side of a part's kept span (snactok.codec.long_clips)
    dry_run: bool = False  # no model: snactok.codec.dryrun's stand-in returns the tokens

    @property
    def name(self) -> str:
        return f"device worker {self.rank} ({self.device})"


def device_main(plan: DevicePlan, links: Links, stats: Tally, outbox: Outbox) -> None:
    """A device worker process: encode until the main process says every row is done."""
    child_setup()
    with reporting(outbox):
        loop = open_device(plan, links, stats, outbox)
        loop.run(links.work, links.flag)
        close_device(loop)


def open_device(plan: DevicePlan, links: Links, stats: Tally, outbox: Outbox) -> DeviceLoop:
    """Load (and compile, and check) the encoder, and tell the main process it is ready."""
    budget, board = links.budget, links.board
    board.enter(plan.rank, Phase.LOADING)
    reached("starting")
    t0 = time.monotonic()
    if plan.dry_run:
        encoder, reference = DryEncoder(plan.arch, plan.batch_samples), None
        check = {"passed": None, "path": encoder.path, "why": "a dry run: no model to check"}
    else:
        encoder, reference, check = _encoder(plan, board, outbox)
    loop = DeviceLoop(plan, encoder, outbox, budget, stats, reference, board)
    loop.report_fallback()
    seconds = round(time.monotonic() - t0, 2)
    outbox.send(WorkerReady(plan.rank, seconds, encoder.path, check))
    return loop


def close_device(loop: DeviceLoop) -> None:
    """Tell the main process this worker is done, with its peak memory and verify time."""
    loop.board.enter(loop.plan.rank, Phase.FINISHING)
    loop.outbox.send(PeakRss(loop.plan.name, peak_rss_mb()))
    loop.outbox.send(WorkerDone(loop.plan.rank, round(loop.verify_seconds, 3)))


def _encoder(
    plan: DevicePlan, board: Board, outbox: Outbox
) -> tuple[BatchEncoder, Reference, dict[str, Any]]:
    """Load the model on the device, compile it if asked, and check it against the reference."""
    cache = None
    if plan.compile and plan.cache_dir:
        from snactok.codec.compiled import remember_isa_probes  # imports dynamo: only when compiling

        cache = Path(plan.cache_dir).expanduser() / "inductor"
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
        remember_isa_probes(cache)
    device = prepare_device(plan.device, plan.tf32)
    model = load_model(plan.weights, plan.arch, plan.seed)
    reference = Reference(load_model(plan.weights, plan.arch, plan.seed, fold=False), device)
    encoder = BatchEncoder(model, device, plan.arch, plan.compile, plan.autocast, plan.batch_samples)
    if plan.compile:
        board.enter(plan.rank, Phase.COMPILING)
        outbox.send(Note(compiling_note(cache)))
        reached("compiling")
    encoder.warm_up()
    board.enter(plan.rank, Phase.CHECKING)
    return encoder, reference, startup_check(encoder, reference)


def compiling_note(cache: Path | None) -> str:
    """What a compiling worker is doing and for how long, said as it starts: a first `make demo`
    otherwise shows `rows 0/40 ... ETA ?` for most of a minute."""
    if cache is not None and cache.is_dir() and any(cache.iterdir()):
        return f"loading the compiled encoder from {cache} (seconds; a new shape compiles again)"
    where = f"cached in {cache}" if cache is not None else "not cached: runtime.cache_dir=null"
    return f"compiling the encoder (first run on this machine, ~1 min; {where})"


def startup_check(encoder: BatchEncoder, reference: Reference) -> dict[str, Any]:
    """Check the fast path against the reference on probe clips; step down until one passes.

    Compiled, then eager, then exact (the reference model itself, one clip at a time, which is
    the reference by construction). Returns what was checked and, when a path failed, why.
    """
    if encoder.autocast is not None:
        return {"passed": None, "why": "autocast changes tokens by design; the verifier measures it"}
    probes = probe_clips(encoder.arch)
    failures = []
    while True:
        why = self_check(encoder, reference, probes)
        if why is None:
            return {"passed": True, "path": encoder.path, "failed": failures}
        failures.append(f"{encoder.path}: {why}")
        if encoder.compiled:
            encoder.use_eager()
        else:
            encoder.use_exact(reference)
            return {"passed": False, "path": encoder.path, "failed": failures}


class DeviceLoop:
    """Buckets clips by padded length and encodes them, one batch in flight while the next fills.

    A full bucket (batch_samples) is encoded at once. When input stalls or the worker holds
    pool_samples, the fullest bucket goes, so no clip waits for company that never comes. An
    out-of-memory error halves the batch and retries; a single clip that does not fit is rejected
    as out_of_memory. No clip is lost either way.

    A clip longer than chunk_samples is encoded on arrival in overlapping parts
    (`snactok.codec.long_clips`), interior parts batched together; its tokens equal a whole-clip
    encode and go back as one row.
    """

    def __init__(
        self,
        plan: DevicePlan,
        encoder: BatchEncoder | DryEncoder,
        outbox: Any,
        budget: Budget,
        stats: Tally,
        reference: Reference | None = None,
        board: Board | None = None,
    ):
        self.plan = plan
        self.encoder = encoder
        self.reference = reference
        self.board = board
        self.verify_seconds = 0.0
        self.outbox = outbox
        self.budget = budget
        self.stats = stats
        self.multiple = pad_multiple(plan.arch)
        self.batch_samples = plan.batch_samples
        self.buckets: dict[int, list[Clip]] = defaultdict(list)
        self.held = 0
        self.in_flight: tuple[list[Clip], int, Pending] | None = None

    def run(self, work: ClipChannel, flag: RunFlag) -> None:
        """Until the main process says every row is done (or stop)."""
        while flag.running:
            self.step(work)
        self.finish()

    def step(self, work: ClipChannel) -> None:
        """Take the next clip (waiting up to half a second), or encode what is held if none came."""
        self._enter(Phase.WAITING)
        clip = work.get(timeout=IDLE_FLUSH_SECONDS if self.held else POLL_SECONDS)
        if clip is None:
            if self.held:  # input is slow: encode what we have rather than idle
                self.flush(_fullest(self.buckets))
            self.drain()
            if self.stats.items(self.plan.rank) and not self.held:  # between batches
                self._enter(Phase.WAITING)
                reached("waiting")
            return
        chunk = self.plan.chunk_samples
        if chunk is not None and padded_length(clip.samples, self.multiple) > chunk:
            self.encode_long(clip)
        else:
            self.add(clip)

    def finish(self) -> None:
        """Encode every clip still held."""
        for length in sorted(self.buckets):
            self.flush(length)
        self.drain()

    def _enter(self, phase: Phase, unit: int = -1) -> None:
        if self.board is not None:
            self.board.enter(self.plan.rank, phase, unit)

    def _step(self) -> None:
        if self.board is not None:
            self.board.step(self.plan.rank)

    def add(self, clip: Clip) -> None:
        length = padded_length(clip.samples, self.multiple)
        self.buckets[length].append(clip)
        self.held += clip.samples
        if length * len(self.buckets[length]) >= self.batch_samples:
            self.flush(length)
        elif self.held >= self.plan.pool_samples:
            self.flush(_fullest(self.buckets))

    def encode_long(self, clip: Clip) -> None:
        """Encode a clip longer than one chunk in overlapping parts, now; out of memory retries
        one part at a time, then rejects the clip."""
        self.drain()
        parts = plan_parts(
            clip.samples, self.multiple, self.plan.chunk_samples, self.plan.overlap_samples
        )
        per_batch = max(1, self.batch_samples // parts[0].length)
        self._enter(Phase.ENCODING, clip.unit)
        while True:
            try:
                codes = encode_in_parts(
                    self.encoder, clip.wave, parts, max_batch=per_batch, step=self._step
                )
                break
            except torch.OutOfMemoryError as err:
                if self.device_is_cuda:
                    torch.cuda.empty_cache()
                if per_batch == 1:
                    detail = f"{len(parts)} parts of {parts[0].length} samples do not fit: {err}"
                    self.reject(clip, "out_of_memory", detail[:500])
                    return
                per_batch = 1
        key = (clip.unit, clip.row, clip.meta)
        checks = self.verify([clip], codes[None])
        self.outbox.send(Batch(self.plan.rank, [key], codes[None], parts[-1].stop, checks))
        self._done([clip])
        self.report_fallback()

    def flush(self, length: int) -> None:
        clips = self.buckets.pop(length)
        self.held -= sum(c.samples for c in clips)
        while clips:
            per_batch = max(1, self.batch_samples // length)
            part = clips[:per_batch]
            try:
                self.submit(part, length)
            except torch.OutOfMemoryError as err:
                if self.device_is_cuda:
                    torch.cuda.empty_cache()
                if len(part) > 1:
                    self.batch_samples = (len(part) + 1) // 2 * length
                    self.encoder.batch_samples = self.batch_samples
                    self.outbox.send(
                        Warn(
                            f"device worker {self.plan.rank}: out of memory at {len(part)} "
                            f"clips of {length} samples; batches are now {self.batch_samples} samples"
                        )
                    )
                    continue
                self.reject(part[0], "out_of_memory", f"{length} samples do not fit: {err}"[:500])
            clips = clips[len(part) :]

    @property
    def device_is_cuda(self) -> bool:
        return self.encoder.device.type == "cuda"

    def submit(self, clips: list[Clip], length: int) -> None:
        self._enter(Phase.ENCODING, clips[0].unit)
        reached("encoding")
        batch = self.encoder.staging(len(clips), length)
        for i, clip in enumerate(clips):
            batch[i, : clip.samples] = clip.wave
        pending = self.encoder.submit(batch, len(clips))
        self.drain()  # the previous batch, while this one runs
        self.in_flight = (clips, length, pending)

    def drain(self) -> None:
        if self.in_flight is None:
            return
        clips, length, pending = self.in_flight
        self.in_flight = None
        self._enter(Phase.ENCODING, clips[0].unit)  # waiting on the device is encoding
        codes = pending.result()
        keys = [(c.unit, c.row, c.meta) for c in clips]
        checks = self.verify(clips, codes)
        self.outbox.send(Batch(self.plan.rank, keys, codes, length, checks))
        self._done(clips)
        self.report_fallback()

    def verify(self, clips: list[Clip], codes: Any) -> list[tuple[int, int, int]]:
        """(position in the batch, tokens, tokens equal) for each clip chosen for verification:
        its wave encoded again by the reference method, whole, one clip alone.

        A clip over twice the chunk is not verified: its whole-clip reference would need the
        memory that chunking is there to avoid."""
        limit = 2 * self.plan.chunk_samples if self.plan.chunk_samples else None
        chosen = [i for i, c in enumerate(clips) if c.verify and (limit is None or c.samples <= limit)]
        if not chosen or self.reference is None:
            return []
        t0 = time.monotonic()
        checks = []
        for i in chosen:
            try:
                want = self.reference.tokens(clips[i].wave)
            except torch.OutOfMemoryError:  # the whole clip alone does not fit: not verified
                if self.device_is_cuda:
                    torch.cuda.empty_cache()
                continue
            same = int((codes[i] == want).sum()) if codes[i].shape == want.shape else 0
            checks.append((i, int(want.size), same))
        self.verify_seconds += time.monotonic() - t0
        return checks

    def report_fallback(self) -> None:
        """Tell the main process, once, that compiling failed and the encoder runs eagerly."""
        if self.encoder.fallback:
            self.outbox.send(
                Warn(
                    f"device worker {self.plan.rank} ({self.plan.device}): torch.compile failed, "
                    f"encoding eagerly: {self.encoder.fallback}"
                )
            )
            self.encoder.fallback = None

    def reject(self, clip: Clip, reason: str, detail: str) -> None:
        self.outbox.send(Reject(clip.unit, clip.row, clip.meta["id"], reason, detail))
        self._done([clip], encoded=False)

    def _done(self, clips: list[Clip], encoded: bool = True) -> None:
        rank = self.plan.rank
        if encoded:
            self.stats.add(rank, len(clips), sum(c.meta["duration"] for c in clips))
        self._step()
        self.budget.give_back(rank, sum(c.samples for c in clips))


def _fullest(buckets: dict[int, list[Clip]]) -> int:
    return max(buckets, key=lambda length: length * len(buckets[length]))
