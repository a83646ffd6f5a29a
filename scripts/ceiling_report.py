"""`scripts/ceiling.py`'s table: rendered from its results and written into docs/performance.md
between the ceiling markers."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK_START, MARK_END = "<!-- ceiling:start -->", "<!-- ceiling:end -->"


def section(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A bold-titled Markdown table, as the lines of docs/performance.md's ceiling block."""
    return ["", title, "", f"| {' | '.join(header)} |", "|" + "---|" * len(header)] + [
        f"| {' | '.join(row)} |" for row in rows
    ]


def render(r: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Command: `python scripts/ceiling.py` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} "
        f"CPUs: {_cpu_name()}). Speech: the bundled demo's, re-encoded per kind."
    ]
    lines += section(
        "**1. Reader cost** (CPU s per audio s, decode + resample to 24 kHz; lower is better)",
        [
            "input",
            "reader (datasets + snactok.inputs.audio)",
            "raw soundfile/PyAV + torchaudio",
            "ratio",
        ],
        [
            [name, f"{c['ours']:.5f}", f"{c['raw']:.5f}", f"{c['ratio']:.2f}x"]
            for name, c in r["readers"].items()
        ],
    )
    lines += render_throughput(r["throughput"])
    lines += render_main(r["main"])
    lines += section(
        "**4. Commit latency and work at risk** (snac_24khz, 2 readers)",
        [
            "queue_samples",
            "lines_per_file",
            "last row read -> commit, mean / max s",
            "most audio s read, not committed (kill -9 loses)",
        ],
        [
            [
                f"{queue:,}",
                str(lines_per),
                f"{run['latency']['mean']} / {run['latency']['max']}",
                f"{run['at_risk_s']:.0f} ({run['at_risk_rows']} rows)",
            ]
            for (queue, lines_per), run in r["latency"].items()
        ],
    )
    lines += ["", "**5. Peak RSS** (MiB, dry run, 2 readers)", ""]
    for run in r["rss"].values():
        rss_mb = ", ".join(f"{k} {v:.0f}" for k, v in run["rss"].items())
        lines.append(f"- {run['rows']} rows ({run['audio_s'] / 60:.0f} min): {rss_mb}")
    return "\n".join(lines)


def render_throughput(t: dict) -> list[str]:
    lines = section(
        "**2. Dry-run throughput** (everything but the model; steady audio s/s, 16 kHz FLAC, 5 s clips)",
        ["codec", "format", "readers", "audio s/s", "main process CPU s per 1,000 audio s"],
        [
            [*name.split(), f"{run['steady']:.0f}", f"{1000 * run['main_cpu_s'] / run['audio_s']:.2f}"]
            for name, run in t.items()
        ],
    )
    for codec in ("snac_24khz", "snac_44khz"):
        two, one = t[f"{codec} jsonl 2"]["steady"], t[f"{codec} jsonl 1"]["steady"]
        lines.append(f"\n2 readers / 1 reader, {codec}: {two / one:.2f}x")
    return lines


def render_main(main: dict) -> list[str]:
    from snactok.codec.layout import token_rates

    arch_rate = sum(token_rates(_arch("snac_44khz")))
    return section(
        "**3. Main-process capacity** (16 kHz FLAC, snac_44khz, output.format=both; from its "
        "CPU time while collecting: what one core of it could take if devices returned at once)",
        [
            "clips",
            "output.writers",
            "rows/s",
            "tokens/s",
            f"audio s/s (at {arch_rate:.1f} tokens per audio s)",
            "share of a core per 1,000 audio s/s",
            "of which commits",
        ],
        [
            [
                str(clips),
                str(writers),
                f"{m['rows'] / m['main_cpu_s']:,.0f}",
                f"{m['tokens'] / m['main_cpu_s']:,.0f}",
                f"{m['audio_s'] / m['main_cpu_s']:,.0f}",
                f"{1000 * m['main_cpu_s'] / m['audio_s']:.3f}",
                f"{m['commit_s']:.2f} s of {m['main_cpu_s']:.2f} s",
            ]
            for (clips, writers), m in main.items()
        ],
    )


def _arch(codec: str) -> dict:
    from snactok.codec.weights import checked_in_codecs

    return checked_in_codecs()[codec]


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def write_doc(table: str) -> None:
    path = REPO / "docs" / "performance.md"
    text = path.read_text()
    if MARK_START not in text:
        text += f"\n## The ceiling without the model\n\n{MARK_START}\n{MARK_END}\n"
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_START}\n{table}\n{MARK_END}{tail}")
    print(f"wrote {path}")
