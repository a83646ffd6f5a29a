"""The two kinds of child process: readers (decode + resample) and device workers (batch + encode).

Readers take blocks of rows from a shared counter, so every reader stays busy even on one unit.
Clips travel to the device workers as float32 tensors in shared memory. A sample budget bounds
what is decoded but not yet encoded. A worker groups clips of one padded length, checks its fast
path against single-clip `SNAC.encode` before the first batch (`startup_check`), and encodes a
deterministic sample of rows again by that reference method (`chosen_for_verify`).

Everything between processes goes through `snactok.engine.ipc`, where no death can wedge another
process, and each child keeps its phase on the `Board`, for the main process to name.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import resource
import signal
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
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
    set_cpu_numerics,
)
from snactok.codec.layout import pad_multiple, padded_length
from snactok.codec.long_clips import encode_in_parts, plan_parts
from snactok.codec.weights import Weights, load_model
from snactok.engine.hook import reached
from snactok.engine.ipc import BlockCounter, Board, Budget, ClipChannel, Outbox, Phase, RunFlag
from snactok.inputs.audio import Rejected, Resampler, check_audio, decode

POLL_SECONDS = 0.5
IDLE_FLUSH_SECONDS = 0.05


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
    # (unit index, source index, start row, stop row, input shard): pipeline.read_blocks
    blocks: list[tuple[int, int, Any, Any, Any]]
    sample_rate: int
    min_samples: int
    max_duration: float | None
    verify_fraction: float = 0.0


def reader_main(
    plan: ReaderPlan,
    next_block: BlockCounter,
    work: ClipChannel,
    outbox: Outbox,
    budget: Budget,
    flag: RunFlag,
    stats: Any,
    board: Board,
) -> None:
    """Decode rows block by block; send clips to the workers and rejects to the main process."""
    _child_setup()
    with _reporting(outbox):
        reached("starting")
        resample = Resampler(plan.sample_rate)
        while flag.running:
            k = next_block.take()
            if k >= len(plan.blocks):
                break
            unit, src_index, start, stop_row, shard = plan.blocks[k]
            board.enter(plan.slot, Phase.READING, unit)
            rows = 0
            for index, row in plan.sources[src_index].read(start, stop_row, shard):
                rows += 1
                clip = _read_row(row, unit, src_index, index, plan, resample, outbox)
                board.step(plan.slot)
                if clip is None:
                    continue
                if not budget.fits(clip.samples):
                    board.enter(plan.slot, Phase.BUDGET, unit)
                    reached("budget")
                    if not budget.wait_for(clip.samples, flag):
                        return
                    board.enter(plan.slot, Phase.READING, unit)
                budget.take(plan.rank, clip.samples)
                if not work.put(clip, flag):
                    return
                stats[2 * plan.rank] += 1
                stats[2 * plan.rank + 1] += clip.meta["duration"]
                reached("reading")
            if shard is not None:  # a streamed shard's row count is known only now
                outbox.send(("unit_read", unit, rows))
        board.enter(plan.slot, Phase.IDLE)
        outbox.send(("peak_rss", f"reader {plan.rank}", peak_rss_mb()))
        reached("idle")
        # Queued tensors are shared by file descriptor, served by this process: stay alive until
        # every row is done.
        while flag.running:
            time.sleep(POLL_SECONDS / 5)


@contextlib.contextmanager
def _reporting(outbox: Outbox) -> Iterator[None]:
    """A child's body: an exception goes to the main process as its traceback, and every message
    is written before the child exits."""
    try:
        yield
    except Exception:
        outbox.send(("error", traceback.format_exc()))
        raise
    finally:
        outbox.close()


def _read_row(
    row: dict,
    unit: int,
    source: int,
    index: int,
    plan: ReaderPlan,
    resample: Resampler,
    outbox: Outbox,
) -> Clip | None:
    try:
        text = row["text"]
        if not isinstance(text, str):
            raise Rejected("bad_text", f"text is {type(text).__name__}, not a string")
        audio, rate = decode(row["audio"])
        check_audio(audio, rate, plan.min_samples, plan.max_duration)
        wave = resample(audio, rate)
    except Rejected as rej:
        outbox.send(("reject", unit, index, _row_id(row), rej.reason, rej.detail))
        return None
    speaker = row["speaker"]
    meta = {
        "id": _row_id(row),
        "text": text,
        "speaker": speaker if speaker is None or isinstance(speaker, str) else str(speaker),
        "duration": round(audio.shape[0] / rate, 6),
        "read_at": time.monotonic(),  # system-wide clock: the main process times the commit by it
    }
    if "keep" in row:
        meta["keep"] = row["keep"]
    verify = chosen_for_verify(source, index, plan.verify_fraction)
    return Clip(unit, index, meta, wave, verify)


def _row_id(row: dict) -> Any:
    rid = row["id"]
    return rid if isinstance(rid, int | str) else str(rid)


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


def device_main(
    plan: DevicePlan,
    work: ClipChannel,
    outbox: Outbox,
    budget: Budget,
    flag: RunFlag,
    stats: Any,
    board: Board,
) -> None:
    """Pull clips, bucket them by padded length, encode full buckets, send tokens back."""
    _child_setup()
    board.enter(plan.rank, Phase.LOADING)
    name = f"device worker {plan.rank} ({plan.device})"
    with _reporting(outbox):
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
        outbox.send(("worker_ready", plan.rank, seconds, encoder.path, check))
        loop.run(work, flag)
        board.enter(plan.rank, Phase.FINISHING)
        outbox.send(("peak_rss", name, peak_rss_mb()))
        outbox.send(("worker_done", plan.rank, round(loop.verify_seconds, 3)))


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
        outbox.send(("note", compiling_note(cache)))
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
    (`snactok.codec.long_clips`), interior parts batched together; its tokens equal a whole-clip encode and
    go back as one row.
    """

    def __init__(
        self,
        plan: DevicePlan,
        encoder: BatchEncoder | DryEncoder,
        outbox: Any,
        budget: Budget,
        stats: Any,
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
            self._enter(Phase.WAITING)
            clip = work.get(timeout=IDLE_FLUSH_SECONDS if self.held else POLL_SECONDS)
            if clip is None:
                if self.held:  # input is slow: encode what we have rather than idle
                    self.flush(_fullest(self.buckets))
                self.drain()
                if self.stats[3 * self.plan.rank] and not self.held:  # between batches
                    self._enter(Phase.WAITING)
                    reached("waiting")
                continue
            chunk = self.plan.chunk_samples
            if chunk is not None and padded_length(clip.samples, self.multiple) > chunk:
                self.encode_long(clip)
            else:
                self.add(clip)
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
        self.stats[3 * self.plan.rank + 2] = clip.unit
        self._enter(Phase.ENCODING, clip.unit)
        while True:
            try:
                codes = encode_in_parts(self.encoder, clip.wave, parts, per_batch, self._step)
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
        self.outbox.send(("batch", self.plan.rank, [key], codes[None], parts[-1].stop, checks))
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
                        (
                            "warning",
                            f"device worker {self.plan.rank}: out of memory at {len(part)} "
                            f"clips of {length} samples; batches are now {self.batch_samples} samples",
                        )
                    )
                    continue
                self.reject(part[0], "out_of_memory", f"{length} samples do not fit: {err}"[:500])
            clips = clips[len(part) :]

    @property
    def device_is_cuda(self) -> bool:
        return self.encoder.device.type == "cuda"

    def submit(self, clips: list[Clip], length: int) -> None:
        self.stats[3 * self.plan.rank + 2] = clips[0].unit  # shown in progress
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
        self.outbox.send(("batch", self.plan.rank, keys, codes, length, checks))
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
                (
                    "warning",
                    f"device worker {self.plan.rank} ({self.plan.device}): torch.compile failed, "
                    f"encoding eagerly: {self.encoder.fallback}",
                )
            )
            self.encoder.fallback = None

    def reject(self, clip: Clip, reason: str, detail: str) -> None:
        self.outbox.send(("reject", clip.unit, clip.row, clip.meta["id"], reason, detail))
        self._done([clip], encoded=False)

    def _done(self, clips: list[Clip], encoded: bool = True) -> None:
        rank = self.plan.rank
        if encoded:
            self.stats[3 * rank] += len(clips)
            self.stats[3 * rank + 1] += sum(c.meta["duration"] for c in clips)
        self._step()
        self.budget.give_back(rank, sum(c.samples for c in clips))


def _fullest(buckets: dict[int, list[Clip]]) -> int:
    return max(buckets, key=lambda length: length * len(buckets[length]))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    /proc's VmHWM, because `ru_maxrss` survives exec on Linux: a spawned child would report at
    least its parent's peak at the time of the spawn.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child_setup() -> None:
    _leave_signals_to_the_main_process()
    _die_with_the_main_process()
    # Resampling and encoding run torch at the thread count tokens are defined at (codec.py).
    set_cpu_numerics()
    _raise_open_file_limit()


# Ctrl-C (SIGINT to the whole terminal group), Slurm's SIGTERM to every process of the job, and
# SIGUSR2 before a time limit: the main process decides what they mean, stops the children and
# commits nothing half-done. A child that reacted on its own would die mid-message.
LEFT_TO_MAIN = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1


def _leave_signals_to_the_main_process() -> None:
    for sig in LEFT_TO_MAIN:
        signal.signal(sig, signal.SIG_IGN)


def _die_with_the_main_process() -> None:
    """A SIGKILLed main process takes its children with it: no orphan keeps a GPU or a core.

    Linux's parent-death signal; the name (`ps`, `top`, /proc/PID/comm) says which child is which.
    """
    parent = multiprocessing.parent_process()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(PR_SET_NAME, multiprocessing.current_process().name.encode()[:15])
    except (OSError, AttributeError):  # not Linux: the main process kills children on its way out
        return
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os._exit(1)


def _raise_open_file_limit() -> None:
    """Each queued tensor holds a file descriptor until it is received."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
