"""Run metrics: `metrics.jsonl` in the run dir always, Weights & Biases when it is on.

Only the main process talks to W&B. A W&B failure (network, auth, a full disk in its dir) is
logged once and W&B is switched off for the rest of the run: tracking never stops encoding.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from snactok.config.checks import looks_secret
from snactok.config.schema import Config, plain
from snactok.output.files import JsonlLog
from snactok.output.rundir import METRICS, job_dirs, read_run

log = logging.getLogger(__name__)

SHARD_COLUMNS = ("file", "rows", "rejected", "bytes", "audio_seconds", "compression_vs_pcm16")


def wandb_mode(configured: str | None) -> str:
    """`wandb.mode`, else WANDB_MODE, else online with an API key and offline without one."""
    if configured:
        return str(configured)  # a WandbMode from the typed config: its plain string
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def scrub(config: Any) -> Any:
    """The config without any key that looks like a credential (they are refused anyway)."""
    if isinstance(config, Mapping):
        return {k: scrub(v) for k, v in config.items() if not looks_secret(k)}
    if isinstance(config, list):
        return [scrub(v) for v in config]
    return config


class Tracker:
    """Logs a snapshot every `interval` seconds and one record per committed shard.

    Keys (metrics.jsonl and W&B alike): `audio_seconds_per_second`, `items_per_second`,
    `rows_done`, `rows_written`, `rows_rejected`, `rejected/<reason>`, `eta_seconds`,
    `queue_fill`, `device/<i>/audio_seconds_per_second`, `device/<i>/items_per_second`,
    `reader/<r>/audio_seconds_per_second`; per shard `shard/rows`, `shard/bytes`,
    `shard/tokens_layer_<n>`, `shard/compression_vs_pcm16`.
    """

    def __init__(self, conf: Config, run_dir: Path, group: str | None, interval: float):
        self.interval = interval
        self.metrics = JsonlLog(run_dir / METRICS)
        self.t0 = time.monotonic()
        self._last = float("-inf")
        self._shards_seen = 0
        self.codec_rate = conf.codec.arch.sampling_rate
        self.wandb = _start_wandb(conf, run_dir, group)

    def tick(
        self,
        collector: Any,
        reader_stats: Any,
        device_stats: Any,
        queue_fill: float,
        total_rows: int | None,
        force: bool = False,
    ) -> None:
        """Log new shard commits at once, and a snapshot when `interval` has passed."""
        for record in collector.committed[self._shards_seen :]:
            self._shard(record)
        self._shards_seen = len(collector.committed)
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.t0, 1e-9)
        audio = device_stats.total_seconds()
        items = device_stats.total_items()
        done = collector.rows_done
        rate = done / elapsed
        snapshot: dict[str, Any] = {
            "audio_seconds_per_second": audio / elapsed,
            "items_per_second": items / elapsed,
            "rows_done": done,
            "rows_written": sum(r["rows"] for r in collector.committed),
            "rows_rejected": sum(collector.reasons.values()),
            "eta_seconds": (total_rows - done) / rate if rate and total_rows is not None else None,
            "queue_fill": queue_fill,
        }
        snapshot |= {f"rejected/{k}": v for k, v in sorted(collector.reasons.items())}
        verify = collector.verification()
        snapshot["verify/clips"] = verify["clips"]
        snapshot["verify/tokens_equal_pct"] = _pct(verify["tokens_equal"], verify["tokens"])
        for i in range(len(device_stats)):
            snapshot[f"device/{i}/audio_seconds_per_second"] = device_stats.seconds(i) / elapsed
            snapshot[f"device/{i}/items_per_second"] = device_stats.items(i) / elapsed
        for r in range(len(reader_stats)):
            snapshot[f"reader/{r}/audio_seconds_per_second"] = reader_stats.seconds(r) / elapsed
        self._log("metrics", snapshot)

    def _shard(self, record: dict) -> None:
        pcm16 = record["audio_seconds"] * self.codec_rate * 2
        fields = {
            "shard/rows": record["rows"],
            "shard/rejected": record["rejected"],
            "shard/bytes": record["bytes"],
            "shard/compression_vs_pcm16": pcm16 / record["bytes"] if record["bytes"] else None,
        }
        fields |= {f"shard/tokens_layer_{n}": t for n, t in enumerate(record["tokens_per_layer"], 1)}
        verify = record.get("verify") or {}
        fields["shard/verified_clips"] = verify.get("clips", 0)
        fields["shard/verified_tokens_equal_pct"] = _pct(verify.get("equal", 0), verify.get("tokens", 0))
        self._log("shard", fields | {"shard/file": record["file"]})

    def _log(self, kind: str, fields: dict[str, Any]) -> None:
        self.metrics.append({"type": kind, "time": round(time.monotonic() - self.t0, 3), **fields})
        if kind == "shard":
            fields = {k: v for k, v in fields.items() if k != "shard/file"}
        self._wandb_call("log", fields)

    def finish(self, summary: dict | None, committed: list[dict]) -> None:
        """Totals, hours, mean real-time factor, wall time and a table of shards; then close."""
        try:
            if summary is not None and self.wandb is not None:
                audio = summary["audio_seconds"]
                totals = {
                    "rows_read": summary["rows_read"],
                    "rows_written": summary["rows_written"],
                    "rows_rejected": summary["rows_rejected"],
                    "hours_encoded": audio / 3600,
                    "real_time_factor": summary["audio_seconds_per_second"],
                    "wall_seconds": summary["wall_seconds"],
                    "units": summary["units"],
                    "verify/clips": summary["verify"]["clips"],
                    "verify/tokens": summary["verify"]["tokens"],
                    "verify/tokens_equal_pct": _pct(
                        summary["verify"]["tokens_equal"], summary["verify"]["tokens"]
                    ),
                } | {f"rejected/{k}": v for k, v in summary["rejected_by_reason"].items()}
                self._wandb_call("summary", totals)
                self._wandb_call("log", {"shards": self._shard_table(committed)})
        finally:
            self._wandb_call("finish", None)
            self.wandb = None
            self.metrics.close()

    def _shard_table(self, committed: list[dict]) -> Any:
        import wandb

        rows = []
        for r in sorted(committed, key=lambda r: r["unit"]):
            pcm16 = r["audio_seconds"] * self.codec_rate * 2
            ratio = round(pcm16 / r["bytes"], 2) if r["bytes"] else None
            rows.append([r["file"], r["rows"], r["rejected"], r["bytes"], r["audio_seconds"], ratio])
        return wandb.Table(columns=list(SHARD_COLUMNS), data=rows)

    def _wandb_call(self, what: str, payload: Any) -> None:
        if self.wandb is None:
            return
        try:
            if what == "log":
                self.wandb.log(payload)
            elif what == "summary":
                self.wandb.summary.update(payload)
            else:
                self.wandb.finish()
        except Exception as err:  # network, auth, disk: never stop the encoding
            log.warning(
                "W&B %s failed (%s: %s); W&B is off for the rest of the run",
                what,
                type(err).__name__,
                err,
            )
            self.wandb = None


def _start_wandb(conf: Config, run_dir: Path, group: str | None) -> Any:
    """One W&B run per Hydra job, or None when W&B is disabled or cannot start."""
    cfg = conf.wandb
    mode = wandb_mode(cfg.mode)
    if mode == "disabled":
        return None
    dataset, codec = conf.dataset.name, conf.codec.name
    name = f"{dataset}-{codec}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        import wandb

        return wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=mode,
            dir=str(run_dir),
            name=name,
            group=group or name,
            job_type="encode",
            tags=[*cfg.tags, f"codec:{codec}", f"dataset:{dataset}"],
            config=scrub(plain(conf)),
            reinit="finish_previous",
        )
    except Exception as err:
        log.warning("W&B did not start (%s: %s); encoding goes on without it", type(err).__name__, err)
        return None


def sweep_table(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job dir of a sweep: dataset, codec, rows, hours, rejects, real-time factor."""
    rows = []
    for run_dir in sorted(job_dirs(sweep_dir), key=lambda p: _job_order(p.name)):
        run = read_run(run_dir)
        summary = run.summary
        rows.append(
            {
                "job": run_dir.name,
                "dataset": run.header.dataset,
                "codec": run.header.codec,
                "rows": summary.rows_written if summary else None,
                "hours": round(summary.audio_seconds / 3600, 4) if summary else None,
                "rejected": summary.rows_rejected if summary else None,
                "real_time_factor": summary.audio_seconds_per_second if summary else None,
                "finished": summary is not None,
            }
        )
    return rows


def _job_order(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table, for the sweep dir and the terminal."""
    if not rows:
        return "(no runs)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join("-" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows
    ]
    return "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback: at the end of a `-m` sweep, a table of its runs in the sweep dir, printed.

    Hydra skips it when a job fails; the table is a convenience, not the record (each job's
    manifest is).
    """

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sweep_table(sweep_dir)
        table = format_table(rows)
        (sweep_dir / "sweep_summary.md").write_text(table + "\n")
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"sweep summary ({sweep_dir / 'sweep_summary.md'}):\n{table}", flush=True)


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 4) if whole else None
