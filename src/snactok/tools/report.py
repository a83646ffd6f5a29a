"""A finished run, inspected: plots of what it wrote, and a few rows decoded back to audio.

    python scripts/inspect_run.py outputs/2026-11-24/02-01-44
    python scripts/inspect_run.py <run dir> --num-audio 5 --wandb-project snactok

`write_report(run_dir)` reads the run's manifest header and shards (and `metrics.jsonl` when there
is one) and writes into `<run dir>/report/`:

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

import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from matplotlib.figure import Figure

from snactok.codec.weights import fold_weight_norm
from snactok.inputs.audio import Rejected, Resampler, decode
from snactok.inputs.sources import resolve_path
from snactok.output.formats import SHARD_SUFFIX, read_jsonl, read_shard, sha256_file

log = logging.getLogger(__name__)

REPORT_DIR = "report"
METRICS_FILE = "metrics.jsonl"


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
    run_dir = Path(run_dir)
    header = read_header(run_dir)
    arch = header["arch"]
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    stats = gather_stats(run_dir, header, num_audio, max_rows)
    summary: dict[str, Any] = {
        "run_dir": str(run_dir.resolve()),
        "codec": header.get("codec"),
        "weights": header.get("weights"),
        "rows_scanned": len(stats.durations),
        "audio_seconds_scanned": round(float(sum(stats.durations)), 3),
        "run_summary": _run_summary(run_dir),
    }
    plots, notes = draw_plots(stats, arch, run_dir, out, summary)
    clips = decode_samples(stats.samples, header, out / "audio") if stats.samples else []
    notes += [c["note"] for c in clips if c.get("note")]
    summary["audio"] = [{k: str(v) if isinstance(v, Path) else v for k, v in c.items()} for c in clips]
    summary["notes"] = notes
    for note in notes:
        log.info("report: %s", note)
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if wandb_run is not None:
        log_to_wandb(wandb_run, plots, clips, summary, header["arch"]["sampling_rate"])
    files = [*plots.values(), *(p for c in clips for p in _clip_files(c)), summary_path]
    return files


def draw_plots(
    stats: RunStats, arch: dict[str, Any], run_dir: Path, out: Path, summary: dict[str, Any]
) -> tuple[dict[str, Path], list[str]]:
    """The run-wide plots by name, and a note for each one skipped; adds their numbers to `summary`."""
    plots: dict[str, Path] = {}
    notes: list[str] = []
    if stats.durations:
        plots["durations"] = plot_durations(stats.durations, out / "durations.png")
        plots["tokens_per_second"], summary["tokens_per_second"] = plot_tokens_per_second(
            stats, arch, out / "tokens_per_second.png"
        )
        plots["codebook_usage"], summary["codebook_usage"] = plot_codebook_usage(
            stats.code_counts, out / "codebook_usage.png"
        )
        summary["duration_seconds"] = _describe(stats.durations)
    else:
        notes.append("no rows in the shards: no duration, token or codebook plots")
    metrics = read_metrics(run_dir / METRICS_FILE)
    if metrics:
        plots["throughput"] = plot_throughput(metrics, out / "throughput.png")
    else:
        notes.append(f"no throughput plot: {METRICS_FILE} is missing or has no records")
    return plots, notes


def read_header(run_dir: Path) -> dict[str, Any]:
    """The manifest's header record (the last one, should a resumed run have added another)."""
    manifest = run_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest} does not exist; give the run dir that encode.py wrote "
            "(it holds manifest.jsonl and shards/, e.g. outputs/<date>/<time>)"
        )
    headers = [r for r in read_jsonl(manifest) if r.get("type") == "header"]
    if not headers:
        raise ValueError(f"{manifest} has no header record; the run never started writing")
    return headers[-1]


def _run_summary(run_dir: Path) -> dict[str, Any] | None:
    records = [r for r in read_jsonl(run_dir / "manifest.jsonl") if r.get("type") == "summary"]
    return records[-1] if records else None


def shard_paths(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "shards").glob(f"*{SHARD_SUFFIX}"))


def iter_rows(run_dir: Path, header: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(source label, row) for every row of every shard, in shard-name order."""
    labels = sorted((s["label"] for s in header.get("sources", [])), key=len, reverse=True)
    for path in shard_paths(run_dir):
        label = next((x for x in labels if path.name.startswith(f"{x}-")), None)
        for row in read_shard(path):
            yield label, row


def gather_stats(
    run_dir: Path, header: dict[str, Any], num_audio: int, max_rows: int | None = None
) -> RunStats:
    """Durations, token lengths and code counts of the rows, and the first `num_audio` rows."""
    arch = header["arch"]
    layers = len(arch["vq_strides"])
    size = int(arch["codebook_size"])
    stats = RunStats(layers, size, code_counts=np.zeros((layers, size), np.int64))
    for label, row in iter_rows(run_dir, header):
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


def nominal_rates(arch: dict[str, Any]) -> list[float]:
    """Tokens per second of audio of each layer, before padding."""
    hop = math.prod(arch["encoder_rates"])
    return [arch["sampling_rate"] / (hop * s) for s in arch["vq_strides"]]


def codebook_usage(code_counts: np.ndarray) -> list[dict[str, Any]]:
    """Per layer: codes used, the fraction of the codebook that is, and the codes' perplexity."""
    usage = []
    for i, counts in enumerate(code_counts):
        total = int(counts.sum())
        p = counts[counts > 0] / max(total, 1)
        used = int((counts > 0).sum())
        usage.append(
            {
                "layer": i + 1,
                "tokens": total,
                "codes_used": used,
                "codebook_size": len(counts),
                "fraction_used": used / len(counts),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())) if total else 0.0,
            }
        )
    return usage


def plot_durations(durations: list[float], path: Path) -> Path:
    d = np.asarray(durations)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(d, bins=int(np.clip(np.sqrt(len(d)) * 2, 5, 60)), color="tab:blue", edgecolor="white")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("rows")
    ax.set_title(
        f"{len(d)} rows, {d.sum() / 3600:.3g} h of audio; "
        f"min {d.min():.2f} s, median {np.median(d):.2f} s, max {d.max():.2f} s"
    )
    fig.savefig(path, dpi=100)
    return path


def plot_tokens_per_second(
    stats: RunStats, arch: dict[str, Any], path: Path
) -> tuple[Path, list[dict[str, Any]]]:
    """Each row's tokens / duration against the nominal rate; short clips sit above it (padding)."""
    d = np.asarray(stats.durations)
    lengths = np.asarray(stats.token_lengths, np.float64)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    rows = []
    for i, nominal in enumerate(nominal_rates(arch)):
        color = f"C{i}"
        rate = lengths[:, i] / np.maximum(d, 1e-9)
        ax.scatter(d, rate, s=12, color=color, alpha=0.7, label=f"layer {i + 1}")
        ax.axhline(nominal, color=color, linestyle="--", linewidth=1)
        rows.append(
            {
                "layer": i + 1,
                "nominal": nominal,
                "mean": float(rate.mean()),
                "median": float(np.median(rate)),
                "overall": float(lengths[:, i].sum() / max(d.sum(), 1e-9)),
            }
        )
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("tokens per second of audio")
    ax.set_ylim(bottom=0)
    ax.set_title("tokens per second per layer (dashed: nominal rate)")
    ax.legend()
    fig.savefig(path, dpi=100)
    return path, rows


def plot_codebook_usage(code_counts: np.ndarray, path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Per layer, code counts sorted by rank (log scale); a flat curve is an evenly used codebook."""
    usage = codebook_usage(code_counts)
    layers = len(code_counts)
    fig = Figure(figsize=(7, 2.6 * layers), layout="constrained")
    axes = fig.subplots(layers, 1, squeeze=False)[:, 0]
    for ax, counts, u in zip(axes, code_counts, usage, strict=True):
        ranked = np.sort(counts)[::-1]
        ax.stairs(ranked, np.arange(len(ranked) + 1) + 0.5, fill=True, color="tab:green")
        if ranked.max() >= 10:  # a log axis over counts of 1 or 2 only shows odd ticks
            ax.set_yscale("log")
        ax.set_xlim(0, len(ranked) + 1)
        ax.set_ylabel("count")
        ax.set_title(
            f"layer {u['layer']}: {u['codes_used']}/{u['codebook_size']} codes used "
            f"({100 * u['fraction_used']:.1f}%), perplexity {u['perplexity']:.0f}, "
            f"{u['tokens']} tokens"
        )
    axes[-1].set_xlabel("code rank")
    fig.savefig(path, dpi=100)
    return path, usage


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The periodic snapshots of metrics.jsonl (records with a time, of type `metrics` or untyped);
    [] when there is no such file. Per-shard records and a torn last line are skipped.
    """
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("time"), int | float)
            and record.get("type", "metrics") == "metrics"
        ):
            records.append(record)
    return records


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _is_rows(name: str) -> bool:
    return name.rsplit("/", 1)[-1].startswith("rows")


def _rate_names(names: list[str]) -> list[str]:
    """Audio seconds per second (total, per device, per reader); any other rate if there are none."""
    audio = [n for n in names if n.endswith("audio_seconds_per_second")]
    return audio or [n for n in names if "per_second" in n]


def plot_throughput(metrics: list[dict[str, Any]], path: Path) -> Path:
    """Audio seconds per second (total, per device, per reader) and row counts against time.

    Series are found by name, flat (`device/0/audio_seconds_per_second`, as snactok.monitor.tracking
    writes them) or nested (`{"device": {"0": {...}}}`): numeric leaves named
    `*audio_seconds_per_second` go to the top panel, `rows*` leaves to the bottom one.
    """
    flat = [_flatten(r) for r in sorted(metrics, key=lambda r: r["time"])]
    names = list(dict.fromkeys(k for f in flat for k in f if k != "time"))
    fig = Figure(figsize=(8, 6), layout="constrained")
    rates_ax, rows_ax = fig.subplots(2, 1, sharex=True)
    for ax, picked in ((rates_ax, _rate_names(names)), (rows_ax, list(filter(_is_rows, names)))):
        for name in picked:
            points = [(f["time"], f[name]) for f in flat if name in f]
            main = name in ("audio_seconds_per_second", "rows_done")
            ax.plot(*zip(*points, strict=True), label=name, linewidth=2 if main else 1)
        if ax.lines:
            ax.legend(fontsize="small")
    rates_ax.set_ylabel("audio seconds per second")
    rows_ax.set_ylabel("rows")
    rows_ax.set_xlabel("time since start (s)")
    last = flat[-1]
    rates_ax.set_title(
        f"throughput: {last.get('audio_seconds_per_second', float('nan')):.1f} audio s/s, "
        f"{int(last.get('rows_done', 0))} rows done, {int(last.get('rows_rejected', 0))} rejected "
        f"at {last['time']:.0f} s"
    )
    fig.savefig(path, dpi=100)
    return path


def load_decoder(header: dict[str, Any]) -> torch.nn.Module:
    """The run's SNAC with its decoder, from the header's weights; eval mode, on the CPU."""
    from snac import SNAC

    weights = header["weights"]
    path = Path(weights["path"]) if weights.get("path") else None
    if path is None or not (path / "pytorch_model.bin").is_file():
        if weights.get("kind") != "random":
            raise FileNotFoundError(
                f"the run's weights are gone from {weights.get('path')!r} ({weights}); restore them "
                "(a Hub snapshot comes back with huggingface-cli download <repo> --revision "
                "<commit>) or skip decoding with num_audio=0"
            )
        from snactok.codec.weights import arch_dict, random_snac

        seed = header["config"]["runtime"]["seed"]
        log.info("rebuilding the run's random weights (seed %d): %s is gone", seed, path)
        return random_snac(arch_dict(header["arch"]), seed).eval()
    if weights.get("sha256") and sha256_file(path / "pytorch_model.bin") != weights["sha256"]:
        log.warning("%s/pytorch_model.bin is not the file the run used (sha256 differs)", path)
    model = SNAC.from_pretrained(str(path)).eval()
    fold_weight_norm(model)  # same output, less work per call
    return model


def find_original(label: str | None, row_id: Any, header: dict[str, Any]) -> Path | str:
    """The source file a row came from, or why it cannot be found."""
    sources = header.get("sources", [])
    index = next((i for i, s in enumerate(sources) if s["label"] == label), None)
    if index is None:
        return f"shard source {label!r} is not among the header's sources"
    src = header["config"]["dataset"]["sources"][index]
    if not src.get("path"):
        return f"source {label!r} is a Hub dataset; only local folders give back the original file"
    # The fingerprint holds the path as the run resolved it, from the run's working dir.
    resolved = header.get("fingerprint", {}).get("dataset.sources", [])
    at_run = resolved[index].get("path") if index < len(resolved) else None
    roots = [Path(p) for p in (at_run, resolve_path(src["path"])) if p]
    for root in roots:
        for candidate in (root / str(src["split"]) / str(row_id), root / str(row_id)):
            if candidate.is_file():
                return candidate
    return f"no file {row_id!r} under {sorted({str(r) for r in roots})}"


def decode_samples(
    samples: list[tuple[str | None, dict[str, Any]]], header: dict[str, Any], out: Path
) -> list[dict[str, Any]]:
    """Decode each row's tokens and read its source file; write both WAVs and a spectrogram.

    Both WAVs are at the codec rate. The reconstruction keeps the padded length the tokens stand
    for; the original is the source resampled as the run resampled it, unpadded.
    """
    out.mkdir(exist_ok=True)
    for stale in (
        *out.glob("*_original.wav"),
        *out.glob("*_reconstructed.wav"),
        *out.glob("*_spectrogram.png"),
    ):
        stale.unlink()  # an earlier report's clips would pass for this one's
    rate = header["arch"]["sampling_rate"]
    model = load_decoder(header)
    resample = Resampler(rate)
    clips = []
    for k, (label, row) in enumerate(samples):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(Path(str(row["id"])).with_suffix("")))
        stem = f"{k:02d}_{name[:60]}"  # the number keeps a.wav and a.flac apart
        recon = reconstruct(model, row)
        clip: dict[str, Any] = {"id": row["id"], "source": label, "duration": row["duration"]}
        clip["reconstructed"] = _write_wav(out / f"{stem}_reconstructed.wav", recon, rate)
        original = find_original(label, row["id"], header)
        wave = None
        if isinstance(original, Path):
            try:
                wave = resample(*decode(str(original))).numpy()
                clip["original"] = _write_wav(out / f"{stem}_original.wav", wave, rate)
                clip["original_file"] = str(original)
            except Rejected as err:
                original = f"cannot read {original}: {err}"
        if wave is None:
            clip["note"] = f"row {row['id']!r}: reconstruction only, {original}"
        clip["spectrogram"] = plot_spectrograms(
            wave, recon, rate, f"{row['id']} ({label})", out / f"{stem}_spectrogram.png"
        )
        clips.append(clip)
    return clips


@torch.inference_mode()
def reconstruct(model: torch.nn.Module, row: dict[str, Any]) -> np.ndarray:
    """A row's tokens through `SNAC.decode`, as mono float32 at the codec rate."""
    codes = [
        torch.tensor(row[f"snac_layer_{i + 1}"], dtype=torch.long)[None]
        for i in range(row["num_layers"])
    ]
    return model.decode(codes)[0, 0].float().numpy()


def _write_wav(path: Path, wave: np.ndarray, rate: int) -> Path:
    sf.write(path, np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16")
    return path


def _log_spectrogram(wave: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(wave, np.float32))
    if len(x) < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    return (10 * torch.log10(spec.abs().square() + 1e-10)).numpy()


def plot_spectrograms(
    original: np.ndarray | None, recon: np.ndarray, rate: int, title: str, path: Path
) -> Path:
    """Original over reconstruction on one colour scale; the reconstruction alone without one."""
    panels = [("original", original)] if original is not None else []
    panels.append(("reconstructed", recon))
    specs = [(name, _log_spectrogram(w), len(w) / rate) for name, w in panels]
    top = max(s.max() for _, s, _ in specs)
    fig = Figure(figsize=(8, 2.8 * len(specs)), layout="constrained")
    axes = fig.subplots(len(specs), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (name, spec, seconds) in zip(axes, specs, strict=True):
        image = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            extent=(0, seconds, 0, rate / 2000),
            vmin=top - 80,
            vmax=top,
            cmap="magma",
        )
        ax.set_ylabel("kHz")
        ax.set_title(f"{name}: {title}" + ("" if original is not None else " (no original)"))
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="dB")
    fig.savefig(path, dpi=100)
    return path


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
