"""A finished run, inspected: plots of what it wrote, and a few rows decoded back to audio.

    snactok-inspect outputs/2026-11-24/02-01-44
    snactok-inspect <run dir> --num-audio 5 --max-rows 100000
    snactok-inspect <run dir> --wandb-project snactok    # also log it to W&B

`write_report(run_dir)` reads the run through snactok.output.rundir: its header, the rows of its
committed shards (JSONL when it wrote any, else Parquet), and `metrics.jsonl` when there is one.
It writes into `<run dir>/report/` (plots: snactok.tools.plots; audio: snactok.tools.samples):

    durations.png          histogram of the rows' durations
    tokens_per_second.png  tokens per second of audio, per row and layer, against the nominal rate
                           sampling_rate / (prod(encoder_rates) * vq_strides[i])
    codebook_usage.png     per layer, code counts by rank; the fraction of the codebook used
    throughput.png         audio seconds per second and rows over time, from metrics.jsonl
    audio/NN_<id>_{original,reconstructed}.wav, audio/NN_<id>_spectrogram.png
                           the first rows decoded with `SNAC.decode`, next to the source audio
    summary.json           the numbers behind the plots, and a note for whatever was skipped

Rows decode with the run's own weights (the header's `weights.path`). Reconstructions are as long
as the tokens: the clip right-padded to the codec's pad multiple. Originals come from local-folder
sources only (the row id is the file's path in the folder); otherwise only the reconstruction is
written and the summary says why.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snactok.output.formats import read_rows
from snactok.output.rundir import METRICS, REPORT, Run, RunDirError, read_metrics, read_run
from snactok.tools.plots import (
    plot_codebook_usage,
    plot_durations,
    plot_throughput,
    plot_tokens_per_second,
)
from snactok.tools.samples import decode_samples

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    """What the plots need, gathered in one pass over the shards."""

    num_layers: int
    codebook_size: int
    durations: list[float] = field(default_factory=list)
    token_lengths: list[list[int]] = field(default_factory=list)
    code_counts: np.ndarray | None = None  # (layers, codebook_size) int64
    samples: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)  # (source label, row)


def write_report(
    run_dir: Path, num_audio: int = 3, wandb_run: Any = None, max_rows: int | None = None
) -> list[Path]:
    """Write the run's report under `run_dir/report/`; return the files written.

    `num_audio` rows are decoded back to audio. `max_rows` caps the rows read from the shards
    (all by default; reading is JSON parsing of every token). With `wandb_run`, the plots,
    spectrograms and audio are also logged to it as `wandb.Image` / `wandb.Audio`.
    """
    run = read_run(Path(run_dir))
    header = run.header
    out = run.dir / REPORT
    out.mkdir(exist_ok=True)
    stats = gather_stats(run, num_audio, max_rows)
    summary: dict[str, Any] = {
        "run_dir": str(run.dir.resolve()),
        "codec": header.codec,
        "weights": header.weights,
        "rows_scanned": len(stats.durations),
        "audio_seconds_scanned": round(float(sum(stats.durations)), 3),
        "run_summary": run.summary.record if run.summary else None,
    }
    plots, notes = draw_plots(stats, header.arch, run.dir, out, summary)
    clips = decode_samples(stats.samples, header, out / "audio") if stats.samples else []
    notes += [c["note"] for c in clips if c.get("note")]
    summary["audio"] = [{k: str(v) if isinstance(v, Path) else v for k, v in c.items()} for c in clips]
    summary["notes"] = notes
    for note in notes:
        log.info("report: %s", note)
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if wandb_run is not None:
        log_to_wandb(wandb_run, plots, clips, summary, header.arch["sampling_rate"])
    return [*plots.values(), *(p for c in clips for p in _clip_files(c)), summary_path]


def draw_plots(
    stats: RunStats, arch: dict[str, Any], run_dir: Path, out: Path, summary: dict[str, Any]
) -> tuple[dict[str, Path], list[str]]:
    """The run-wide plots by name, and a note for each one skipped; adds their numbers to `summary`."""
    plots: dict[str, Path] = {}
    notes: list[str] = []
    if stats.durations:
        plots["durations"] = plot_durations(stats.durations, out / "durations.png")
        plots["tokens_per_second"], summary["tokens_per_second"] = plot_tokens_per_second(
            stats.durations, stats.token_lengths, arch, out / "tokens_per_second.png"
        )
        plots["codebook_usage"], summary["codebook_usage"] = plot_codebook_usage(
            stats.code_counts, out / "codebook_usage.png"
        )
        summary["duration_seconds"] = _describe(stats.durations)
    else:
        notes.append("no rows in the shards: no duration, token or codebook plots")
    metrics = read_metrics(run_dir)
    if metrics:
        plots["throughput"] = plot_throughput(metrics, out / "throughput.png")
    else:
        notes.append(f"no throughput plot: {METRICS} is missing or has no records")
    return plots, notes


def iter_rows(run: Run) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(source label, row) for every row of the committed shards, in shard-name order."""
    labels = sorted((s["label"] for s in run.header.sources), key=len, reverse=True)
    for path in sorted(run.data_files(), key=lambda p: p.name):
        label = next((x for x in labels if path.name.startswith(f"{x}-")), None)
        for row in read_rows(path):
            yield label, row


def gather_stats(run: Run, num_audio: int, max_rows: int | None = None) -> RunStats:
    """Durations, token lengths and code counts of the rows, and the first `num_audio` rows."""
    arch = run.header.arch
    layers = len(arch["vq_strides"])
    size = int(arch["codebook_size"])
    stats = RunStats(layers, size, code_counts=np.zeros((layers, size), np.int64))
    for label, row in iter_rows(run):
        if max_rows is not None and len(stats.durations) >= max_rows:
            break
        stats.durations.append(float(row["duration"]))
        stats.token_lengths.append([int(n) for n in row["token_lengths"]])
        for i in range(layers):
            codes = np.asarray(row[f"snac_layer_{i + 1}"], np.int64)
            stats.code_counts[i] += np.bincount(codes, minlength=size)[:size]
        if len(stats.samples) < num_audio:
            stats.samples.append((label, row))
    return stats


def _clip_files(clip: dict[str, Any]) -> list[Path]:
    return [clip[k] for k in ("original", "reconstructed", "spectrogram") if k in clip]


def _describe(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {
        "min": float(v.min()),
        "median": float(np.median(v)),
        "mean": float(v.mean()),
        "max": float(v.max()),
        "total": float(v.sum()),
    }


def log_to_wandb(
    run: Any, plots: dict[str, Path], clips: list[dict[str, Any]], summary: dict, rate: int
) -> None:
    """One `run.log` call: the plots as images, each clip's audio and spectrogram, usage numbers."""
    import wandb

    record: dict[str, Any] = {f"report/{name}": wandb.Image(str(p)) for name, p in plots.items()}
    for k, clip in enumerate(clips):
        for kind in ("original", "reconstructed"):
            if kind in clip:
                caption = f"{clip['id']} ({kind})"
                record[f"report/audio/{k:02d}_{kind}"] = wandb.Audio(
                    str(clip[kind]), sample_rate=rate, caption=caption
                )
        record[f"report/spectrogram/{k:02d}"] = wandb.Image(
            str(clip["spectrogram"]), caption=str(clip["id"])
        )
    for u in summary.get("codebook_usage", []):
        record[f"report/layer_{u['layer']}/codebook_fraction_used"] = u["fraction_used"]
        record[f"report/layer_{u['layer']}/codebook_perplexity"] = u["perplexity"]
    run.log(record)


def main(argv: list[str] | None = None) -> int:
    """`snactok-inspect`: plot a finished run and listen to a few of its rows."""
    parser = argparse.ArgumentParser(
        prog="snactok-inspect", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="the dir encode.py wrote (manifest.jsonl, shards/)")
    parser.add_argument("--num-audio", type=int, default=3, help="rows to decode back to audio")
    parser.add_argument("--max-rows", type=int, default=None, help="read at most this many rows")
    parser.add_argument("--wandb-project", default=None, help="log the report to a new W&B run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        header = read_run(args.run_dir).header
    except RunDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run = None
    if args.wandb_project:
        import wandb  # secrets come from the environment (WANDB_API_KEY) or `wandb login`

        run = wandb.init(
            project=args.wandb_project,
            job_type="report",
            name=f"report-{args.run_dir.resolve().name}",
            config=header.config,
        )
    try:
        files = write_report(args.run_dir, args.num_audio, run, max_rows=args.max_rows)
    finally:
        if run is not None:
            run.finish()
    for path in files:
        print(path)
    return 0
