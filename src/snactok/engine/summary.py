"""The run's totals: the summary record and last log lines, the verified sample's agreement, and
what the main process itself spent (`MainLoad`, for the ceiling benchmark)."""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from snactok.codec.weights import RANDOM
from snactok.engine.child import peak_rss_mb
from snactok.output.rundir import PARQUET_SUFFIX, recorded_files

if TYPE_CHECKING:
    from snactok.engine.collector import Collector

log = logging.getLogger(__name__)


@dataclass
class MainLoad:
    """What the main process spends and holds, for the ceiling benchmark: its CPU time, the time
    its commits take, the rows read but not committed (what a kill -9 would lose) at most, and
    the seconds from a unit's last row read to its commit."""

    commit_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rows_committed: int = 0  # by this attempt, as the readers count: rows sent to the devices
    audio_committed: float = 0.0
    uncommitted_rows: int = 0
    uncommitted_audio: float = 0.0
    cpu_at_start: float = 0.0  # when collecting began: imports and start-up are not its load

    def start(self) -> None:
        self.cpu_at_start = _cpu_seconds()

    def commit(self, record: dict, started: float, last_read: float) -> None:
        done = time.monotonic()
        self.commit_seconds += done - started
        if last_read:
            self.latencies.append(done - last_read)
        self.rows_committed += record["rows"]
        self.audio_committed += record["audio_seconds"]

    def watch(self, rows_read: float, audio_read: float) -> None:
        """The readers' totals now: what is read and not yet committed."""
        self.uncommitted_rows = max(self.uncommitted_rows, int(rows_read) - self.rows_committed)
        self.uncommitted_audio = max(self.uncommitted_audio, audio_read - self.audio_committed)

    def describe(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "cpu_seconds_collecting": round(_cpu_seconds() - self.cpu_at_start, 3),
            "commit_seconds": round(self.commit_seconds, 3),
            "max_uncommitted_rows": self.uncommitted_rows,
            "max_uncommitted_audio_seconds": round(self.uncommitted_audio, 3),
            "commit_latency_seconds": {
                "mean": round(sum(lat) / len(lat), 3) if lat else None,
                "max": round(max(lat), 3) if lat else None,
            },
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def verification(committed: list[dict]) -> dict[str, Any]:
    """Totals of the verified sample over the committed units' records."""
    totals: Counter[str] = Counter()
    mismatched = []
    for record in committed:
        check = record.get("verify") or {}
        totals.update({k: check.get(k, 0) for k in ("clips", "tokens", "equal")})
        mismatched += [{"unit": record["unit"], **m} for m in check.get("mismatched", [])]
    tokens = totals["tokens"]
    return {
        "clips": totals["clips"],
        "tokens": tokens,
        "tokens_equal": totals["equal"],
        "fraction_equal": round(totals["equal"] / tokens, 6) if tokens else None,
        "mismatched_rows": mismatched,
    }


def summarize(c: Collector, wall: float) -> dict[str, Any]:
    """Totals over every committed unit, this attempt's and earlier ones'; the rate is this
    attempt's alone, over its `wall` seconds."""
    audio_now = sum(r["audio_seconds"] for r in c.committed[c.prior_units :])
    return {
        "type": "summary",
        "units": len(c.committed),
        "units_planned": c.planned,
        "units_resumed": c.prior_units,
        "rows_read": sum(r["rows_read"] for r in c.committed),
        "rows_written": sum(r["rows"] for r in c.committed),
        "rows_rejected": sum(r["rejected"] for r in c.committed),
        "rejected_by_reason": dict(sorted(c.reasons.items())),
        "audio_seconds": round(sum(r["audio_seconds"] for r in c.committed), 3),
        "tokens": sum(sum(r["tokens_per_layer"]) for r in c.committed),
        "bytes_by_format": _bytes_by_format(c.committed),
        "wall_seconds": round(wall, 3),
        "audio_seconds_per_second": round(audio_now / max(wall, 1e-9), 3),
        # from the first tokens on: without start-up (loading, compiling, the start-up check)
        "steady_audio_seconds_per_second": _steady(c.timing.get("first_tokens"), audio_now, wall),
        "readers": c.readers,
        "main_process": c.load.describe(),
        "random_weights": c.weights.kind == RANDOM,
        "verify": verification(c.committed),
        "workers": dict(sorted(c.workers.items())),
        "seconds_to": c.timing,
        "peak_rss_mb": {"main": peak_rss_mb(), **dict(sorted(c.peak_rss.items()))},
    }


def log_summary(summary: dict[str, Any], dry_run: bool, audio: float, wall: float) -> None:
    """The run's last lines: rows, rejects, rates, then the verified sample's agreement. `audio`
    and `wall` unrounded, as the line always showed them."""
    steady = summary["steady_audio_seconds_per_second"]
    first = summary["seconds_to"].get("first_tokens")
    log.info(
        "done%s: %d rows written, %d rejected %s, %.1f s of audio in %.1f s: %.1f audio s/s overall, %s",
        " (DRY RUN, stand-in tokens)" if dry_run else "",
        summary["rows_written"],
        summary["rows_rejected"],
        summary["rejected_by_reason"],
        audio,
        wall,
        summary["audio_seconds_per_second"],
        f"{steady:.1f} steady (after {first:.1f} s of start-up)"
        if steady is not None
        else "no steady rate (nothing encoded in this attempt)",
    )
    log_verification(summary["verify"])


def _steady(first: float | None, audio: float, wall: float) -> float | None:
    if first is None or wall <= first:
        return None
    return round(audio / (wall - first), 3)


def _bytes_by_format(committed: list[dict]) -> dict[str, int]:
    sizes: Counter[str] = Counter()
    for record in committed:
        for entry in recorded_files(record):
            sizes["parquet" if entry["file"].endswith(PARQUET_SUFFIX) else "jsonl"] += entry["bytes"]
    return dict(sizes)


def log_verification(verify: dict[str, Any]) -> None:
    """The run's last word on fidelity: how many verified clips, and what share of their tokens
    equal single-clip SNAC.encode; below 100% it is a warning that names the rows."""
    if not verify["clips"]:
        log.info("verified 0 clips (runtime.verify_fraction picked none of the rows encoded)")
        return
    pct = 100 * verify["tokens_equal"] / verify["tokens"]
    line = (
        f"verified {verify['clips']} clips: {pct:.3f}% of tokens equal single-clip SNAC.encode "
        f"({verify['tokens_equal']} of {verify['tokens']})"
    )
    if verify["tokens_equal"] == verify["tokens"]:
        log.info("%s", line)
        return
    rows = ", ".join(
        f"unit {m['unit']} row {m['row']} (id {m['id']!r}): {m['differ']}"
        for m in verify["mismatched_rows"][:20]
    )
    more = len(verify["mismatched_rows"]) - 20
    log.warning(
        "%s. NOT ALL EQUAL on this machine; rows with differing tokens: %s%s",
        line,
        rows,
        f" and {more} more (manifest.jsonl)" if more > 0 else "",
    )
