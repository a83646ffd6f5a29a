"""`runtime.inprocess=true`: one device and no child processes, so a breakpoint (pdb, an IDE) in
the device loop or a reader stops there.

The readers run in threads of the main process and the device loop runs in the main thread,
between the collector's polls; everything between them is what it is between processes (the
clip channel, the pipes, the shared counters), so the shards are the same bytes. It is slower:
one device, and the readers share this process's interpreter.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from snactok.codec.encoder import set_cpu_numerics
from snactok.engine.child import raise_open_file_limit
from snactok.engine.device import DevicePlan, close_device, open_device
from snactok.engine.ipc import Outbox
from snactok.engine.launch import Shared
from snactok.engine.processes import Child
from snactok.engine.reader import Reader, ReaderPlan
from snactok.errors import ConfigError


def check_inprocess(devices: list[str]) -> None:
    """runtime.inprocess=true runs one device worker, in this process."""
    if len(devices) != 1:
        raise ConfigError(
            f"runtime.inprocess=true runs one device worker in the main process, but "
            f"runtime.devices resolves to {devices}; set runtime.devices=[{devices[0]}] for one "
            "device, or runtime.inprocess=false to use them all"
        )


class ThreadProcess:
    """A reader's thread, with what the Supervisor asks of a process: start, exitcode, join.
    A thread cannot be killed; it leaves when the run flag stops it."""

    def __init__(self, target: Any, args: tuple, name: str):
        self._thread = threading.Thread(target=self._run, args=(target, args), name=name, daemon=True)
        self._failed = False
        self.pid = os.getpid()

    def _run(self, target: Any, args: tuple) -> None:
        try:
            target(*args)
        except Exception:  # its traceback went to the main thread as a Failed message
            self._failed = True

    def start(self) -> None:
        self._thread.start()

    @property
    def exitcode(self) -> int | None:
        if self._thread.is_alive():
            return None
        return 1 if self._failed else 0

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def kill(self) -> None:
        pass


def reader_threads(shared: Shared, readers: list[ReaderPlan]) -> list[Child]:
    """The readers as threads of this process, not started yet. This process takes the settings
    each child process sets for itself: torch's thread count, which tokens and resampled audio
    are defined at, and the open-file limit."""
    set_cpu_numerics()
    raise_open_file_limit()
    s = shared
    children = []
    for plan in readers:
        name = f"reader {plan.rank}"
        outbox, pipe = s.inbox.outbox_for(name)
        # the Supervisor closes `pipe` once the thread has started: the thread writes to its own copy
        outbox = Outbox(os.dup(pipe))
        reader = Reader(plan, s.links, s.next_block, s.reader_stats, outbox)
        thread = ThreadProcess(reader.serve, (), f"snactok-read-{plan.rank}")
        children.append(Child(name, plan.slot, thread, pipe))
    return children


class LocalDevice:
    """The device loop in the main thread, a step at a time between the collector's polls."""

    def __init__(self, plan: DevicePlan, shared: Shared):
        self.shared = shared
        self.outbox, _ = shared.inbox.outbox_for(plan.name)
        self.loop = open_device(plan, shared.links, shared.device_stats, self.outbox)
        self.active = True

    def step(self) -> bool:
        """One step of the device loop (it waits for a clip up to half a second); once the run
        flag says finish, encode what is held and report back. False once it has."""
        if not self.active:
            return False
        if self.shared.flag.running:
            self.loop.step(self.shared.work)
            return True
        self.loop.finish()
        close_device(self.loop)
        self.outbox.close()
        self.active = False
        return False
