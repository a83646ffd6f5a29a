"""The two kinds of child process: readers (decode + resample) and device workers (batch + encode).

Readers take blocks of rows from a shared counter, so every reader stays busy even on one unit.
Clips travel to the device workers as float32 tensors in shared memory. A sample budget bounds
what is decoded but not yet encoded; a worker batches only clips of one padded length, so each
batch does exactly the math of encoding every clip alone.
"""

from __future__ import annotations

import queue
import traceback
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from snactok.audio import Rejected, Resampler, check_audio, decode
from snactok.codec import (
    BatchEncoder,
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
    blocks: list[tuple[int, int, int, int]]  # (unit index, source index, start row, stop row)
    sample_rate: int
    min_samples: int
    max_duration: float | None


def reader_main(
    plan: ReaderPlan, next_block: Any, work: Any, results: Any, budget: Budget, stop: Any, stats: Any
) -> None:
    """Decode rows block by block; send clips to the workers and rejects to the main process."""
    _child_setup()
    try:
        resample = Resampler(plan.sample_rate)
        while not stop.is_set():
            with next_block.get_lock():
                k = next_block.value
                next_block.value += 1
            if k >= len(plan.blocks):
                break
            unit, src_index, start, stop_row = plan.blocks[k]
            source = plan.sources[src_index]
            for offset, row in enumerate(source.rows(start, stop_row)):
                clip = _read_row(row, unit, start + offset, plan, resample, results)
                if clip is None:
                    continue
                if not budget.acquire(clip.samples, stop):
                    return
                work.put(clip)
                stats[2 * plan.rank] += 1
                stats[2 * plan.rank + 1] += clip.meta["duration"]
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


def device_main(
    plan: DevicePlan, work: Any, results: Any, budget: Budget, stop: Any, stats: Any
) -> None:
    """Pull clips, bucket them by padded length, encode full buckets, send tokens back."""
    _child_setup()
    try:
        device = prepare_device(plan.device, plan.cpu_threads)
        encoder = BatchEncoder(load_model(plan.weights, plan.arch, plan.seed), device, plan.arch)
        results.put(("worker_ready", plan.rank))
        _device_loop(plan, encoder, work, results, budget, stop, stats)
        results.put(("worker_done", plan.rank))
    except Exception:
        results.put(("error", f"device worker {plan.rank} ({plan.device})", traceback.format_exc()))
        raise


def _device_loop(
    plan: DevicePlan,
    encoder: BatchEncoder,
    work: Any,
    results: Any,
    budget: Budget,
    stop: Any,
    stats: Any,
) -> None:
    multiple = pad_multiple(plan.arch)
    buckets: dict[int, list[Clip]] = defaultdict(list)
    held = 0

    def flush(length: int) -> None:
        nonlocal held
        clips = buckets.pop(length)
        per_batch = max(1, plan.batch_samples // length)
        for i in range(0, len(clips), per_batch):
            _encode_and_send(clips[i : i + per_batch], length, encoder, plan, results, stats)
        released = sum(c.samples for c in clips)
        held -= released
        budget.release(released)

    while not stop.is_set():
        try:
            clip = work.get(timeout=IDLE_FLUSH_SECONDS if held else POLL_SECONDS)
        except queue.Empty:
            if held:  # input is slow: encode what we have rather than idle
                flush(_fullest(buckets))
            continue
        if clip is None:
            for length in sorted(buckets):
                flush(length)
            return
        length = padded_length(clip.samples, multiple)
        buckets[length].append(clip)
        held += clip.samples
        if length * len(buckets[length]) >= plan.batch_samples:
            flush(length)
        elif held >= plan.pool_samples:
            flush(_fullest(buckets))


def _fullest(buckets: dict[int, list[Clip]]) -> int:
    return max(buckets, key=lambda length: length * len(buckets[length]))


def _encode_and_send(
    clips: list[Clip], length: int, encoder: BatchEncoder, plan: DevicePlan, results: Any, stats: Any
) -> None:
    batch = encoder.staging(len(clips), length)
    for i, clip in enumerate(clips):
        batch[i, : clip.samples] = clip.wave
    codes = encoder.encode(batch)
    keys = [(c.unit, c.row, c.meta) for c in clips]
    results.put(("batch", plan.rank, keys, codes, length))
    stats[3 * plan.rank] += len(clips)
    stats[3 * plan.rank + 1] += sum(c.meta["duration"] for c in clips)
    stats[3 * plan.rank + 2] = clips[-1].unit


def _child_setup() -> None:
    # Readers and CPU workers share few cores; the parent sets threads for device workers.
    torch.set_num_threads(1)
    # Resampling and CPU encoding then give the same bits in every process, whatever its threads.
    use_thread_invariant_cpu_kernels()
    _raise_open_file_limit()


def _raise_open_file_limit() -> None:
    """Each queued tensor holds a file descriptor until it is received."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
