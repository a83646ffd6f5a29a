"""What every child process (reader or device worker) does first and last: leave signals to the
main process, die with it, run torch at the thread count tokens are defined at, and report its
exception and peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import resource
import signal
import traceback
from collections.abc import Iterator
from pathlib import Path

from snactok.codec.encoder import set_cpu_numerics
from snactok.engine.ipc import Outbox
from snactok.engine.messages import Failed

POLL_SECONDS = 0.5  # how long any process waits for work before it looks at the run flag again

# Ctrl-C (SIGINT to the whole terminal group), Slurm's SIGTERM to every process of the job, and
# SIGUSR2 before a time limit: the main process decides what they mean, stops the children and
# commits nothing half-done. A child that reacted on its own would die mid-message.
LEFT_TO_MAIN = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1


def child_setup() -> None:
    """A child process's first step."""
    _leave_signals_to_the_main_process()
    _die_with_the_main_process()
    # Resampling and encoding run torch at the thread count tokens are defined at (codec.py).
    set_cpu_numerics()
    raise_open_file_limit()


@contextlib.contextmanager
def reporting(outbox: Outbox) -> Iterator[None]:
    """A child's body: an exception goes to the main process as its traceback, and every message
    is written before the child exits."""
    try:
        yield
    except Exception:
        outbox.send(Failed(traceback.format_exc()))
        raise
    finally:
        outbox.close()


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


def raise_open_file_limit() -> None:
    """Each queued tensor holds a file descriptor until it is received."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
