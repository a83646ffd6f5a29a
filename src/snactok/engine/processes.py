"""The main process's watch over its children: a death or a stall stops the run at once, naming
who and what, and the way out never waits on a child.

Every wait here has a timeout, and none is on an object a child could hold (`snactok.engine.ipc`). A
child's death shows as its exit code within one poll (0.5 s), or at once as the end of its pipe.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.process
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from snactok.engine.ipc import Inbox
from snactok.engine.signals import child_env
from snactok.engine.state import BUSY, START_UP, Board, Phase
from snactok.errors import PipelineError

log = logging.getLogger(__name__)

JOIN_SECONDS = 10  # a clean finish: children leave on their own within this
GRACE_SECONDS = 1.0  # a failed run: idle children leave within this, the rest are killed
KILL_WAIT_SECONDS = 3.0


@dataclass
class Child:
    name: str  # "reader 0", "device worker 1 (cuda:1)"
    slot: int  # its row on the Board
    process: Any
    pipe: int  # this process's copy of the write end of its pipe; closed once it has started
    env: dict[str, str] = field(default_factory=dict)  # set for it, unless the user set them


@dataclass
class Supervisor:
    children: list[Child]
    board: Board
    inbox: Inbox
    unit_names: list[str]
    stall_seconds: float | None
    _seen: dict[int, tuple[int, float]] = field(default_factory=dict)  # slot -> (steps, when)
    _progress_at: float = field(default_factory=time.monotonic)
    _commits: int = 0
    started: list[Child] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # child name -> what it said it does

    def start(self) -> None:
        try:
            for child in self.children:
                try:
                    with child_env(child.env):
                        child.process.start()
                except OSError as err:  # it died before it read what it was given
                    self.check()
                    raise PipelineError(f"{child.name} could not be started: {err}") from err
                self.started.append(child)
        finally:
            for child in self.children:
                os.close(child.pipe)
        now = time.monotonic()
        self._progress_at = now
        self._seen = {c.slot: (self.board.steps(c.slot), now) for c in self.children}

    def check(self, exclude: str | None = None) -> None:
        """Raise PipelineError naming the first child that died (one whose pipe closed while it
        lives is given a moment to finish exiting)."""
        for child in self.started:
            if child.name == exclude:
                continue
            code = child.process.exitcode
            if code is None and child.name in self.inbox.closed:
                child.process.join(0.5)
                code = child.process.exitcode
            if code not in (None, 0):
                raise PipelineError(self.death(child, code))

    def death(self, child: Child, code: int) -> str:
        text = f"{child.name} (pid {child.process.pid}) {describe_exit(code)} {self.doing(child)}"
        cut = self.inbox.cut.get(child.name)
        if cut:
            got, size = cut
            text += (
                f"; it died in the middle of a message to this process ({got} of "
                f"{size if size is not None else '?'} bytes came), which was dropped"
            )
        return text

    def starting(self) -> str | None:
        """What the children still starting up are doing, e.g. `device worker 0 (cpu): compiling
        the encoder (...)`; None once none is."""
        busy = []
        for child in self.started:
            phase = self.board.phase(child.slot)
            if phase in START_UP and child.process.exitcode is None:
                what = self.notes.get(child.name) if phase == Phase.COMPILING else None
                busy.append(f"{child.name}: {what or phase.doing(None).removeprefix('while ')}")
        return "; ".join(busy) or None

    def doing(self, child: Child) -> str:
        unit = self.board.unit(child.slot)
        name = self.unit_names[unit] if 0 <= unit < len(self.unit_names) else None
        return self.board.phase(child.slot).doing(name)

    def watch_progress(self, commits: int) -> None:
        """Raise PipelineError when no child has made a step and no unit has committed for
        `stall_seconds`: something is stuck (a GPU in a driver call, a filesystem that stopped
        answering)."""
        now = time.monotonic()
        if commits != self._commits:
            self._commits, self._progress_at = commits, now
        for child in self.started:
            steps = self.board.steps(child.slot)
            if steps != self._seen[child.slot][0]:
                self._seen[child.slot] = (steps, now)
                self._progress_at = now
        if self.stall_seconds is None or now - self._progress_at < self.stall_seconds:
            return
        alive = [c for c in self.started if c.process.exitcode is None]
        busy = [c for c in alive if self.board.phase(c.slot) in BUSY] or alive
        stuck = "; ".join(
            f"{c.name} (pid {c.process.pid}) made no progress for "
            f"{now - self._seen[c.slot][1]:.0f} s {self.doing(c)}"
            for c in busy
        )
        raise PipelineError(
            f"the run made no progress for {now - self._progress_at:.0f} s (runtime.stall_seconds="
            f"{self.stall_seconds:g}): {stuck}"
        )

    def shutdown(self, clean: bool) -> None:
        """Let the children leave (they are told by the RunFlag), kill those still there, and
        never wait long: a child stuck in the kernel (a D-state GPU or NFS call) outlives even
        SIGKILL until that call returns, and is left behind with a warning."""
        deadline = time.monotonic() + (JOIN_SECONDS if clean else GRACE_SECONDS)
        for child in self.started:
            child.process.join(max(0.0, deadline - time.monotonic()))
        for child in self.started:
            if child.process.is_alive():
                child.process.kill()
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        for child in self.started:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                log.warning(
                    "%s (pid %d) has not exited %.0f s after SIGKILL: it is stuck in the kernel "
                    "(a driver or filesystem call) and goes when that call returns",
                    child.name,
                    child.process.pid,
                    KILL_WAIT_SECONDS,
                )
                _forget(child.process)
            elif clean and child.process.exitcode not in (0, -signal.SIGKILL):
                log.warning(
                    "%s %s after the run's work was done",
                    child.name,
                    describe_exit(child.process.exitcode),
                )
        self.inbox.close()


def _forget(process: Any) -> None:
    """Keep multiprocessing's exit handler from joining a process that cannot exit yet."""
    with contextlib.suppress(AttributeError, KeyError):
        multiprocessing.process._children.discard(process)


def describe_exit(exitcode: int) -> str:
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    name = signal.Signals(-exitcode).name
    why = {
        "SIGKILL": " (the kernel's OOM killer sends this, as does kill -9)",
        "SIGSEGV": " (a crash in native code)",
        "SIGBUS": " (a crash in native code, or a full /dev/shm)",
    }.get(name, "")
    return f"was killed by {name}{why}"
