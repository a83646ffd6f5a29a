"""Progress, drawn by the main process only: bars on a terminal, a line every few seconds elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


def format_eta(seconds: float) -> str:
    if seconds == float("inf") or seconds != seconds:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _rejected(by_reason: dict[str, int]) -> str:
    """`rejected 3 (decode_error 2, too_long 1)`."""
    total = sum(by_reason.values())
    if not total:
        return "rejected 0"
    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items()) if n)
    return f"rejected {total} ({parts})"


class Progress:
    """Reads the shared counters of readers and devices (`snactok.engine.state.Tally`: items and
    audio seconds each, and a device's unit) and shows them with the total rows done."""

    def __init__(
        self,
        total_rows: int | None,  # None: streamed shards without row counts
        readers: int,
        devices: list[str],
        interval: float,
        unit_names: list[str],
        tty: bool | None = None,
    ):
        self.total = total_rows
        self.devices = devices
        self.readers = readers
        self.interval = interval
        self.unit_names = unit_names
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.start = time.monotonic()
        self._last = 0.0
        self._bars: list[Any] = []
        if self.tty:
            self._open_bars()

    def _open_bars(self) -> None:
        from tqdm import tqdm

        names = [f"reader {r}" for r in range(self.readers)]
        names += [f"{d} worker {i}" for i, d in enumerate(self.devices)]
        for pos, name in enumerate(names):
            self._bars.append(
                tqdm(desc=name, position=pos, unit="clip", leave=False, dynamic_ncols=True)
            )
        self._bars.append(
            tqdm(desc="total", total=self.total, position=len(names), unit="row", dynamic_ncols=True)
        )

    def update(
        self,
        reader_stats: Any,
        device_stats: Any,
        done: int,
        rejected: dict[str, int],
        force: bool = False,
        starting: str | None = None,
    ) -> None:
        """`rejected` counts rejected rows by reason code; `starting` says what the workers do
        before the first rows, in place of an ETA that cannot be known yet."""
        now = time.monotonic()
        if not force and now - self._last < (0.5 if self.tty else self.interval):
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        audio = device_stats.total_seconds()
        if self.tty:
            self._draw(reader_stats, device_stats, done, rejected, elapsed, starting)
            return
        rate = done / elapsed
        known = self.total is not None
        eta = (self.total - done) / rate if rate and known else float("inf")
        per_device = ", ".join(
            f"{d}: {device_stats.items(i)} clips {device_stats.seconds(i) / elapsed:.1f} s/s"
            for i, d in enumerate(self.devices)
        )
        if starting:
            log.info("rows 0/%s | starting: %s", self.total if known else "?", starting)
            return
        log.info(
            "rows %d/%s (%s%%) | %.1f audio s/s | %.1f rows/s | %s | ETA %s | %s",
            done,
            self.total if known else "?",
            f"{100 * done / max(self.total, 1):.0f}" if known else "?",
            audio / elapsed,
            rate,
            _rejected(rejected),
            format_eta(eta),
            per_device,
        )

    def _draw(
        self,
        reader_stats: Any,
        device_stats: Any,
        done: int,
        rejected: dict[str, int],
        elapsed: float,
        starting: str | None,
    ) -> None:
        for r in range(self.readers):
            bar = self._bars[r]
            bar.n = reader_stats.items(r)
            bar.set_postfix_str(f"{reader_stats.seconds(r) / elapsed:.1f} audio s/s", refresh=False)
            bar.refresh()
        for i in range(len(self.devices)):
            bar = self._bars[self.readers + i]
            bar.n = device_stats.items(i)
            unit = device_stats.unit(i)
            shard = self.unit_names[unit] if 0 <= unit < len(self.unit_names) else "-"
            bar.set_postfix_str(
                f"{device_stats.seconds(i) / elapsed:.1f} audio s/s | {shard}", refresh=False
            )
            bar.refresh()
        total = self._bars[-1]
        total.n = done
        total.set_postfix_str(
            f"starting: {starting}" if starting else _rejected(rejected), refresh=False
        )
        total.refresh()

    def close(self) -> None:
        for bar in self._bars:
            bar.close()


def format_hours(seconds: float) -> str:
    return f"{seconds / 3600:,.2f} hours" if seconds >= 36 else f"{seconds:.1f} seconds"
