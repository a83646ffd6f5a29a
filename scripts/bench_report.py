"""`scripts/benchmark.py`'s table: rendered from its results, written into docs/performance.md
between the bench markers, and logged to W&B with --wandb."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GFLOP_PER_AUDIO_SECOND = {"snac_24khz": 4.79, "snac_32khz": 13.8, "snac_44khz": 19.1}
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"


def render(r: dict, args: argparse.Namespace) -> str:
    gf = GFLOP_PER_AUDIO_SECOND[args.codec]
    a, b, be, c = r["a"]["rate"], r["b"]["rate"], r["b_eager"]["rate"], r["c"]["steady_rate"]
    mm = r["matmul_gflops"]
    m = r["machine"]
    runs = r["c"]["runs"]
    rss_n, rss_2n = runs["warm_n"]["peak_rss_mb"], runs["warm_2n"]["peak_rss_mb"]
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {m['cpu']}, "
        f"{m['cores']} cores, {m['ram_gib']} GiB RAM, GPU: {m['gpu']}, torch {m['torch']}.",
        f"Command: `{' '.join(['python', 'scripts/benchmark.py', *sys.argv[1:]])}`. "
        f"Data: {r['clips']} clips, {r['a']['audio_s'] / 60:.1f} min of audio; "
        f"{args.codec}, random calibrated weights.",
        "",
        "| what | audio s/s | x real time | vs (a) | GFLOP/s | of matmul |",
        "|---|---|---|---|---|---|",
        row(
            f"(a) original: batch 1, eager, decode + resample included, {r['a']['threads']} threads",
            a,
            a,
            gf,
            mm,
        ),
        row("(b) model alone, eager, batches as the pipeline makes them", be, a, gf, mm),
        row("(b) model alone, compiled", b, a, gf, mm),
        row("(c) pipeline `encode.py`, steady state (N vs 2N runs)", c, a, gf, mm),
        row(
            "(c) pipeline, steady state seen inside (after first tokens)",
            r["c"]["inside_rate"],
            a,
            gf,
            mm,
        ),
        "",
        "| figure | value |",
        "|---|---|",
        f"| (c)/(a), steady | **{c / a:.2f}x** |",
        f"| (c)/(b), steady | **{c / b:.2f}** |",
        f"| large fp32 matmul | {mm:.0f} GFLOP/s ({mm / gf:.0f}x real time if the encoder ran at it) |",
        f"| startup, warm compile cache | {r['c']['startup_warm_s']:.1f} s |",
        f"| startup, cold compile cache | {r['c']['startup_cold_s']:.1f} s |",
        f"| (b) compile warm-up in-process (default inductor cache) | {r['b']['warmup_s']:.1f} s |",
        f"| tokens of (b) equal to (a) | {100 * r['b']['tokens_equal_a']:.3f}% |",
        f"| tokens of (c) equal to (a) | {100 * r['c']['tokens_equal_a']:.3f}% |",
        f"| (c) encode path after the start-up check | {runs['warm_2n']['path']} |",
        f"| (c) in-run verify: clips, tokens equal | {fmt_verify(runs['warm_2n']['verify'])} |",
        f"| reader CPU s per audio s, snactok (decode + resample) | {r['reader']['ours']:.4f} |",
        f"| reader CPU s per audio s, raw soundfile + torchaudio | {r['reader']['raw']:.4f} |",
        f"| peak RSS MiB, N = {runs['warm_n']['rows']} clips | {fmt_rss(rss_n)} |",
        f"| peak RSS MiB, 2N = {runs['warm_2n']['rows']} clips | {fmt_rss(rss_2n)} |",
    ]
    if "b_bf16" in r:
        lines.insert(
            8,
            row("(b) model alone, compiled, bf16 autocast", r["b_bf16"]["rate"], a, gf, mm),
        )
        lines.append(f"| bf16 tokens equal to fp32 | {100 * r['b_bf16']['tokens_equal_fp32']:.2f}% |")
    return "\n".join(lines)


def row(what: str, rate: float, base: float, gf: float, mm: float) -> str:
    return f"| {what} | {rate:.2f} | {rate:.1f}x | {rate / base:.2f} | {rate * gf:.1f} | {rate * gf / mm:.0%} |"


def fmt_verify(v: dict) -> str:
    pct = 100 * v["tokens_equal"] / v["tokens"] if v["tokens"] else float("nan")
    return (
        f"{v['clips']} clips, {pct:.3f}%; their reference encode took {v['seconds']:.1f} s "
        f"of the worker's time"
    )


def fmt_rss(rss: dict) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in rss.items())


def write_doc(table: str, args: argparse.Namespace) -> None:
    path = REPO / "docs" / "performance.md"
    text = path.read_text()
    if MARK_START not in text or MARK_END not in text:
        raise SystemExit(f"{path} has no {MARK_START} ... {MARK_END} block to replace")
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_START}\n{table}\n{MARK_END}{tail}")
    print(f"wrote {path}")


def log_wandb(results: dict, table: str) -> None:
    import wandb

    run = wandb.init(project="snactok", job_type="benchmark", config={"codec": results["codec"]})
    try:
        run.summary.update(
            {
                "a_rate": results["a"]["rate"],
                "b_rate": results["b"]["rate"],
                "c_steady_rate": results["c"]["steady_rate"],
                "c_startup_warm_s": results["c"]["startup_warm_s"],
                "matmul_gflops": results["matmul_gflops"],
            }
        )
        run.log({"benchmark": wandb.Html(f"<pre>{table}</pre>")})
    finally:
        wandb.finish()
