"""The two kinds of child process: readers (decode + resample) and device workers (batch + encode).

Readers take blocks of rows from a shared counter, so every reader stays busy even on one unit.
Clips travel to the device workers as float32 tensors in shared memory. A sample budget bounds
what is decoded but not yet encoded; a worker batches only clips of one padded length, so each
batch does exactly the math of encoding every clip alone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import resource
import signal
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snactok.audio import Rejected, Resampler, check_audio, decode
from snactok.chunks import encode_in_parts, plan_parts
from snactok.codec import (
    BatchEncoder,
    Pending,
    Weights,
    load_model,
    pad_multiple,
    padded_length,
    prepare_device,
    use_thread_invariant_cpu_kernels,
)

POLL_SECONDS = 0.5
IDLE_FLUSH_SECONDS = 0.05


class Budget:
    """Samples decoded but not yet encoded, shared by all processes.

    A clip bigger than the whole budget still passes when nothing else is held, so it cannot
    deadlock.
    """

    def __init__(self, ctx: Any, capacity: int):
        self.capacity = capacity
        self._held = ctx.Value("q", 0, lock=False)
        self._cond = ctx.Condition()

    def acquire(self, n: int, stop: Any) -> bool:
        with self._cond:
            while self._held.value and self._held.value + n > self.capacity:
                if stop.is_set():
                    return False
                self._cond.wait(POLL_SECONDS)
            self._held.value += n
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self._held.value -= n
            self._cond.notify_all()

    @property
    def held(self) -> int:
        return self._held.value


@dataclass
class Clip:
    unit: int  # index into the run's unit list
    row: int  # row index within the source
    meta: dict[str, Any]  # id, text, speaker, duration
    wave: torch.Tensor  # mono float32 at the codec rate, in shared memory once queued

    @property
    def samples(self) -> int:
        return self.wave.shape[0]


@dataclass
class ReaderPlan:
    rank: int
    sources: list  # list[Source]
    # (unit index, source index, start row, stop row, input shard): pipeline.read_blocks
    blocks: list[tuple[int, int, Any, Any, Any]]
    sample_rate: int
    min_samples: int
    max_duration: float | None


def reader_main(
    plan: ReaderPlan,
    next_block: Any,
    work: Any,
    results: Any,
    budget: Budget,
    stop: Any,
    stats: Any,
    doing: Any,
) -> None:
    """Decode rows block by block; send clips to the workers and rejects to the main process.

    `doing[rank]` holds the unit being read (-1: none), so the main process can say what a reader
    that died was doing.
    """
    _child_setup()
    try:
        resample = Resampler(plan.sample_rate)
        while not stop.is_set():
            with next_block.get_lock():
                k = next_block.value
                next_block.value += 1
            if k >= len(plan.blocks):
                break
            unit, src_index, start, stop_row, shard = plan.blocks[k]
            doing[plan.rank] = unit
            rows = 0
            for index, row in plan.sources[src_index].read(start, stop_row, shard):
                rows += 1
                clip = _read_row(row, unit, index, plan, resample, results)
                if clip is None:
                    continue
                if not budget.acquire(clip.samples, stop):
                    return
                work.put(clip)
                stats[2 * plan.rank] += 1
                stats[2 * plan.rank + 1] += clip.meta["duration"]
            if shard is not None:  # a streamed shard's row count is known only now
                results.put(("unit_read", unit, rows))
        doing[plan.rank] = -1
        results.put(("peak_rss", f"reader {plan.rank}", peak_rss_mb()))
        # Queued tensors are shared by file descriptor, served by this process: stay alive until
        # the main process has everything.
        stop.wait()
    except Exception:
        results.put(("error", f"reader {plan.rank}", traceback.format_exc()))
        raise


def _read_row(
    row: dict, unit: int, index: int, plan: ReaderPlan, resample: Resampler, results: Any
) -> Clip | None:
    try:
        text = row["text"]
        if not isinstance(text, str):
            raise Rejected("bad_text", f"text is {type(text).__name__}, not a string")
        audio, rate = decode(row["audio"])
        check_audio(audio, rate, plan.min_samples, plan.max_duration)
        wave = resample(audio, rate)
    except Rejected as rej:
        results.put(("reject", unit, index, _row_id(row), rej.reason, rej.detail))
        return None
    speaker = row["speaker"]
    meta = {
        "id": _row_id(row),
        "text": text,
        "speaker": speaker if speaker is None or isinstance(speaker, str) else str(speaker),
        "duration": round(audio.shape[0] / rate, 6),
    }
    return Clip(unit, index, meta, wave)


def _row_id(row: dict) -> Any:
    rid = row["id"]
    return rid if isinstance(rid, int | str) else str(rid)


@dataclass
class DevicePlan:
    rank: int
    device: str
    weights: Weights
    arch: dict
    seed: int
    batch_samples: int
    pool_samples: int  # flush the fullest bucket when this worker holds more
    cpu_threads: int | None
    compile: bool = False
    cache_dir: str | None = None  # inductor/ under it keeps compiled kernels across runs
    autocast: str | None = None
    tf32: bool = False
    chunk_samples: int | None = None  # longer clips go in overlapping parts; None: never
    overlap_samples: int = 0  # context each side of a part's kept span (snactok.chunks)


def device_main(
    plan: DevicePlan, work: Any, results: Any, budget: Budget, stop: Any, stats: Any
) -> None:
    """Pull clips, bucket them by padded length, encode full buckets, send tokens back."""
    _child_setup()
    name = f"device worker {plan.rank} ({plan.device})"
    try:
        if plan.compile and plan.cache_dir:
            from snactok.kernels import remember_isa_probes  # imports dynamo: only when compiling

            cache = Path(plan.cache_dir).expanduser() / "inductor"
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
            remember_isa_probes(cache)
        t0 = time.monotonic()
        device = prepare_device(plan.device, plan.cpu_threads, plan.tf32)
        model = load_model(plan.weights, plan.arch, plan.seed)
        encoder = BatchEncoder(model, device, plan.arch, plan.compile, plan.autocast)
        multiple = pad_multiple(plan.arch)
        encoder.warm_up((1, 2) if plan.batch_samples >= 2 * multiple else (1,))
        loop = DeviceLoop(plan, encoder, results, budget, stats)
        loop.report_fallback()
        results.put(("worker_ready", plan.rank, round(time.monotonic() - t0, 2), encoder.compiled))
        loop.run(work, stop)
        results.put(("peak_rss", name, peak_rss_mb()))
        results.put(("worker_done", plan.rank))
    except Exception:
        results.put(("error", name, traceback.format_exc()))
        raise


class DeviceLoop:
    """Buckets clips by padded length and encodes them, one batch in flight while the next fills.

    A full bucket (batch_samples) is encoded at once. When input stalls or the worker holds
    pool_samples, the fullest bucket goes, so no clip waits for company that never comes. An
    out-of-memory error halves the batch and retries; a single clip that does not fit is rejected
    as out_of_memory. No clip is lost either way.

    A clip longer than chunk_samples is encoded on arrival in overlapping parts
    (`snactok.chunks`), interior parts batched together; its tokens equal a whole-clip encode and
    go back as one row.
    """

    def __init__(
        self, plan: DevicePlan, encoder: BatchEncoder, results: Any, budget: Budget, stats: Any
    ):
        self.plan = plan
        self.encoder = encoder
        self.results = results
        self.budget = budget
        self.stats = stats
        self.multiple = pad_multiple(plan.arch)
        self.batch_samples = plan.batch_samples
        self.buckets: dict[int, list[Clip]] = defaultdict(list)
        self.held = 0
        self.in_flight: tuple[list[Clip], int, Pending] | None = None

    def run(self, work: Any, stop: Any) -> None:
        while not stop.is_set():
            try:
                clip = work.get(timeout=IDLE_FLUSH_SECONDS if self.held else POLL_SECONDS)
            except queue.Empty:
                if self.held:  # input is slow: encode what we have rather than idle
                    self.flush(_fullest(self.buckets))
                self.drain()
                continue
            if clip is None:
                for length in sorted(self.buckets):
                    self.flush(length)
                self.drain()
                return
            chunk = self.plan.chunk_samples
            if chunk is not None and padded_length(clip.samples, self.multiple) > chunk:
                self.encode_long(clip)
            else:
                self.add(clip)

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
        while True:
            try:
                codes = encode_in_parts(self.encoder, clip.wave, parts, per_batch)
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
        self.results.put(("batch", self.plan.rank, [key], codes[None], parts[-1].stop))
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
                    self.results.put(
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
        self.stats[3 * self.plan.rank + 2] = clips[0].unit  # shown in progress, named if we die
        batch = self.encoder.staging(len(clips), length)
        for i, clip in enumerate(clips):
            batch[i, : clip.samples] = clip.wave
        pending = self.encoder.submit(batch)
        self.drain()  # the previous batch, while this one runs
        self.in_flight = (clips, length, pending)

    def drain(self) -> None:
        if self.in_flight is None:
            return
        clips, length, pending = self.in_flight
        self.in_flight = None
        codes = pending.result()
        keys = [(c.unit, c.row, c.meta) for c in clips]
        self.results.put(("batch", self.plan.rank, keys, codes, length))
        self._done(clips)
        self.report_fallback()

    def report_fallback(self) -> None:
        """Tell the main process, once, that compiling failed and the encoder runs eagerly."""
        if self.encoder.fallback:
            self.results.put(
                (
                    "warning",
                    f"device worker {self.plan.rank} ({self.plan.device}): torch.compile failed, "
                    f"encoding eagerly: {self.encoder.fallback}",
                )
            )
            self.encoder.fallback = None

    def reject(self, clip: Clip, reason: str, detail: str) -> None:
        self.results.put(("reject", clip.unit, clip.row, clip.meta["id"], reason, detail))
        self._done([clip], encoded=False)

    def _done(self, clips: list[Clip], encoded: bool = True) -> None:
        rank = self.plan.rank
        if encoded:
            self.stats[3 * rank] += len(clips)
            self.stats[3 * rank + 1] += sum(c.meta["duration"] for c in clips)
        self.budget.release(sum(c.samples for c in clips))


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
    # Readers and CPU workers share few cores; the parent sets threads for device workers.
    torch.set_num_threads(1)
    # Resampling and CPU encoding then give the same bits in every process, whatever its threads.
    use_thread_invariant_cpu_kernels()
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
