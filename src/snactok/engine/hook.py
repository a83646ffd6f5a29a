"""A test-only hook: stop a child at a named moment, so a test can kill it exactly there.

    SNACTOK_TEST_AT="snactok-read-0:budget:1,snactok-dev-0:compiling:1:go"
    SNACTOK_TEST_AT_DIR=/tmp/x

The named process writes its pid to `$SNACTOK_TEST_AT_DIR/<process>.<moment>` the nth time it
reaches `moment`, then waits there until it is killed (`go`: it carries on). The moments are the
`reached(...)` calls in `snactok.engine.workers`, `snactok.engine.ipc` and `snactok.engine.writers`. Unset (always,
outside tests), a call costs one comparison.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from snactok.output.files import write_bytes_atomic

ENV, DIR_ENV = "SNACTOK_TEST_AT", "SNACTOK_TEST_AT_DIR"


class _Hook:
    def __init__(self, spec: str, me: str):
        self.wanted: dict[str, tuple[int, bool]] = {}  # moment -> (nth, hold)
        for entry in filter(None, spec.split(",")):
            name, moment, nth, *go = entry.split(":")
            if name == me:
                self.wanted[moment] = (int(nth), go != ["go"])
        self.seen: dict[str, int] = {}
        self.me = me

    def reached(self, moment: str) -> None:
        if moment not in self.wanted:
            return
        self.seen[moment] = self.seen.get(moment, 0) + 1
        nth, hold = self.wanted[moment]
        if self.seen[moment] != nth:
            return
        marker = Path(os.environ[DIR_ENV]) / f"{self.me}.{moment}"
        write_bytes_atomic(marker, str(os.getpid()).encode())  # the test never reads half a pid
        while hold:
            time.sleep(1)


_hook: _Hook | None = None


def _get() -> _Hook | None:
    global _hook
    spec = os.environ.get(ENV)
    if not spec:
        return None
    if _hook is None:
        _hook = _Hook(spec, multiprocessing.current_process().name)
    return _hook


def reached(moment: str) -> None:
    """Mark that this process reached `moment` (a no-op unless SNACTOK_TEST_AT names it)."""
    hook = _get()
    if hook is not None:
        hook.reached(moment)


def armed(moment: str) -> bool:
    """Whether SNACTOK_TEST_AT names `moment` for this process."""
    hook = _get()
    return hook is not None and moment in hook.wanted
