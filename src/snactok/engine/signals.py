"""The main process's side of signals and of its children's start: Ctrl-C, SIGTERM and SIGUSR2
stop the run resumably, children begin with SIGUSR2 blocked, and the environment they inherit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

# Readers' torch threads wait for work asleep, not spinning: spinning OpenMP threads of two
# readers took each other's cores (dry runs on 2 cores: 2 readers gave 0.45x one reader's rate;
# with this, 3.3x more). It changes no value, only how idle threads wait.
READER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
# glibc returns freed memory above 128 KiB-32 MiB (mmap threshold) and at the heap top (trim
# threshold) to the OS, so every encoder call page-faults its activations back in. Keeping freed
# memory in the process measured 9.2 -> 9.8x and 8.9 -> 10.4x real time on the compiled CPU
# encoder, with half the system time (docs/performance.md). Peak RSS is still set by the largest
# activations: the 10x-clips memory test runs with these settings.
MALLOC_TUNABLES = (
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296:"
    "glibc.malloc.top_pad=268435456"
)

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """A signal asked the run to stop (Ctrl-C, Slurm's SIGTERM or SIGUSR2)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGUSR2 (Slurm: pre-emption, time limit) stop the run as Ctrl-C does: the
    children stop, nothing half-done is committed, and the run can be resumed.

    Children ignore these signals, so this process decides. A handler already installed here
    (submitit's, which requeues the job) keeps the decision: it is called instead.
    """
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if callable(previous[signum]):
            _hand_over(previous[signum], signum, frame)
            return
        raise Interrupted(signum)

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _hand_over(previous: Any, signum: int, frame: Any) -> None:
    """Call the handler that was there before (submitit's). Its `scontrol requeue` can be killed
    by the SIGTERM Slurm sends this job *because* it requeued it, before scontrol exits; the
    requeue went through, so this attempt ends as submitit's own handler ends it, with
    SystemExit(-1), which records no result and leaves the requeued job to continue (a
    CalledProcessError would be recorded as the job's failure and end the sweep)."""
    try:
        previous(signum, frame)
    except subprocess.CalledProcessError as err:
        if err.returncode != -signal.SIGTERM or "requeue" not in err.cmd:
            raise
        log.warning("`%s` was stopped by the SIGTERM of its own requeue: exiting for it", err.cmd)
        raise SystemExit(-1) from err


@contextlib.contextmanager
def usr2_blocked() -> Iterator[None]:
    """Processes started inside begin with SIGUSR2 blocked. Slurm signals every process of a job
    step on pre-emption; this process decides (submitit requeues), and a child must not die of it
    before its own setup ignores it. multiprocessing's resource tracker never would: killed, it is
    relaunched and prints a traceback per shared-memory segment."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def child_env(values: dict[str, str]) -> Iterator[None]:
    """Children started inside inherit `values`, except those the user has set."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            del os.environ[key]
