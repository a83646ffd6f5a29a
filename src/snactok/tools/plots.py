"""The report's plots (snactok.tools.report): durations, tokens per second, codebook usage,
throughput over time, and spectrograms, each written as a PNG by matplotlib's Figure (no pyplot
state, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure


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
    durations: list[float], token_lengths: list[list[int]], arch: dict[str, Any], path: Path
) -> tuple[Path, list[dict[str, Any]]]:
    """Each row's tokens / duration against the nominal rate; short clips sit above it (padding)."""
    d = np.asarray(durations)
    lengths = np.asarray(token_lengths, np.float64)
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
