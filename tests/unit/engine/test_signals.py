"""The main process's signals: SIGTERM and SIGUSR2 stop a run resumably, unless a handler that
was there first (submitit's) decides, and a requeue that Slurm's own SIGTERM cut short ends the
attempt as submitit would."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from snactok.engine.signals import Interrupted, stop_on_signals


def test_sigterm_stops_the_run_unless_a_handler_was_already_there():
    """Plain runs stop on SIGTERM; under submitit, whose handler is installed first, that handler
    decides (it requeues and exits) and is called instead."""
    with pytest.raises(Interrupted) as stopped, stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at once
    assert stopped.value.signum == signal.SIGTERM

    seen = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.1)
        assert seen == [signal.SIGUSR2]
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored on the way out
    finally:
        signal.signal(signal.SIGUSR2, before)


@pytest.mark.parametrize(
    ("cmd", "returncode", "ends"),
    [
        (["scontrol", "requeue", "3_0"], -signal.SIGTERM, SystemExit),  # the requeue went through
        (["scontrol", "requeue", "3_0"], 1, subprocess.CalledProcessError),  # it was refused
        (["sacct", "-j", "3"], -signal.SIGTERM, subprocess.CalledProcessError),  # not a requeue
    ],
)
def test_a_requeue_killed_by_its_own_sigterm_ends_the_attempt_as_submitit_does(cmd, returncode, ends):
    """submitit's SIGUSR2 handler runs `scontrol requeue`; Slurm may SIGTERM the job's processes,
    scontrol among them, before scontrol exits. That error must not be recorded as the job's
    result (it ended a sweep in CI): the attempt exits with SystemExit(-1), as submitit's own
    `_exit` does. Any other failure of the handler stays what it is."""

    def submitit_like(signum, frame):
        raise subprocess.CalledProcessError(returncode, cmd)

    before = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with pytest.raises(ends) as ended, stop_on_signals():
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(5)  # the handler raises at once
        if ends is SystemExit:
            assert ended.value.code == -1
    finally:
        signal.signal(signal.SIGUSR2, before)
