"""`runtime.plan=true`: what a run would do and cost, from metadata and a sample of rows, encoding
nothing. The rate comes from the last real run on this machine with the same device type, codec
and compile setting (kept in `<cache_dir>/rates.json` by every run); without one there is no ETA.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

from snactok.codec.layout import token_rates
from snactok.codec.weights import arch_dict
from snactok.config.schema import Config
from snactok.engine.devices import usable_cores
from snactok.inputs.sources import Source
from snactok.inputs.units import Unit
from snactok.monitor.progress import format_eta, format_hours
from snactok.output.files import write_bytes_atomic
from snactok.output.rundir import FORMAT_SUFFIXES

log = logging.getLogger(__name__)

SAMPLE_ROWS = 32  # rows whose duration is read, spread over the job's units
RATES = "rates.json"
# Output bytes per token, measured on the demo's 40 rows (tests/e2e/test_plan.py re-measures them):
# gzip JSON lines at level 1, and Parquet (zstd, int16 lists). Text, ids and file overheads are
# included, so per token they fall a little on bigger units. A run of the same format replaces
# them with its own figure.
BYTES_PER_TOKEN = {"jsonl": 2.83, "parquet": 3.28}


def make_plan(
    conf: Config,
    sources: list[Source],
    units: list[Unit],
    mine: list[Unit],
    devices: list[str],
    run_dir: Path,
) -> dict[str, Any]:
    """Print this job's plan and write it to run_dir/plan.json; return it."""
    rt, out, arch = conf.runtime, conf.output, conf.codec.arch
    durations = sample_durations(sources, mine, SAMPLE_ROWS)
    known = [u.rows for u in mine if u.rows is not None]
    rows = sum(known) if len(known) == len(mine) else None
    mean = sum(durations) / len(durations) if durations else None
    audio = rows * mean if rows is not None and mean is not None else None
    tokens_per_second = sum(token_rates(arch_dict(arch)))
    measured = read_rates(Path(rt.cache_dir).expanduser()).get(rate_key(conf, devices))
    per_token = {
        fmt: (measured or {}).get(f"bytes_per_token_{fmt}") or BYTES_PER_TOKEN[fmt]
        for fmt in ("jsonl", "parquet")
    }
    formats = ["jsonl", "parquet"] if out.format == "both" else [out.format]
    out_bytes = (
        sum(per_token[f] for f in formats) * tokens_per_second * audio if audio is not None else None
    )
    pipeline = read_rates(Path(rt.cache_dir).expanduser()).get(pipeline_key(conf))
    device_rate = measured["audio_seconds_per_second_per_device"] * len(devices) if measured else None
    pipeline_rate = pipeline["audio_seconds_per_second"] if pipeline else None
    rate = min(r for r in (device_rate, pipeline_rate) if r) if device_rate else None
    plan = {
        "type": "plan",
        "dataset": conf.dataset.name,
        "codec": conf.codec.name,
        "job": [rt.job_index, rt.num_jobs],
        "units": len(mine),
        "units_total": len(units),
        "rows": rows,
        "sampled_rows": len(durations),
        "mean_seconds_per_row": mean,
        "audio_hours": audio / 3600 if audio is not None else None,
        "tokens_per_audio_second": tokens_per_second,
        "output_bytes": out_bytes,
        "files": len(mine) * len(FORMAT_SUFFIXES[out.format]),
        "devices": devices,
        "rate": measured,
        # runtime.dry_run's measure of everything but the model, with this dataset and codec
        "pipeline_rate": pipeline,
        "bound": None
        if not (device_rate and pipeline_rate)
        else "pipeline"
        if pipeline_rate < device_rate
        else "devices",
        "eta_seconds": audio / rate if rate and audio is not None else None,
    }
    print(format_plan(plan))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    return plan


def sample_durations(sources: list[Source], units: list[Unit], n: int) -> list[float]:
    """Durations (s) of up to `n` rows spread evenly over `units`, read from file headers where
    the format has one; rows that do not decode are left out, as the run would reject them."""
    if not units:
        return []
    picks = [units[i * len(units) // min(n, len(units))] for i in range(min(n, len(units)))]
    per_unit = max(1, n // len(picks))
    durations = []
    for unit in picks:
        src = sources[unit.source]
        if unit.shard:
            rows = (row for _, row in src.read(unit.start, unit.stop, unit.number))
        else:
            stop = min(unit.stop, unit.start + per_unit)
            rows = iter(src.rows(unit.start, stop))
        for _, row in zip(range(per_unit), rows, strict=False):
            seconds = _duration(row["audio"])
            if seconds is not None:
                durations.append(seconds)
    return durations


def _duration(value: Any) -> float | None:
    import soundfile as sf

    from snactok.inputs.audio import Rejected, bytes_or_path, decode

    data, path = bytes_or_path(value)
    try:
        info = sf.info(io.BytesIO(data) if data is not None else path)
        return info.frames / info.samplerate
    except Exception:  # no header soundfile knows (e.g. AAC): decode the whole clip
        try:
            audio, rate = decode(value)
        except Rejected:
            return None
        return audio.shape[0] / rate


def rate_key(conf: Config, devices: list[str]) -> str:

    kind = "cuda" if any(d != "cpu" for d in devices) else f"cpu{usable_cores()}"
    compiled = "compiled" if conf.runtime.compile else "eager"
    return f"{kind}|{conf.codec.name}|{compiled}"


def pipeline_key(conf: Config) -> str:
    """A dry run's rate: the whole machine's, for this dataset (its input kind) and codec."""

    return f"pipeline|cpu{usable_cores()}|{conf.dataset.name}|{conf.codec.name}"


def read_rates(cache_dir: Path) -> dict[str, Any]:
    path = cache_dir / RATES
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def remember_rate(conf: Config, devices: list[str], summary: dict[str, Any]) -> None:
    """Record this attempt's steady rate per device (from its first tokens on, so start-up and
    compiling are left out) and the output's bytes per token, for later plans. A cache that
    cannot be written costs only the plans."""
    wall = summary["wall_seconds"] - summary["seconds_to"].get("first_tokens", 0.0)
    audio = summary["audio_seconds_per_second"] * summary["wall_seconds"]  # this attempt's
    if audio < 10 or wall <= 0:  # too little to measure
        return
    cache_dir = Path(conf.runtime.cache_dir).expanduser()
    rates = read_rates(cache_dir)
    measured = {"audio_seconds": round(audio, 1), "measured": time.strftime("%Y-%m-%d %H:%M")}
    if conf.runtime.dry_run:  # the pipeline's rate; its stand-in tokens say no bytes
        entry = {"audio_seconds_per_second": round(audio / wall, 3), "readers": summary["readers"]}
        rates[pipeline_key(conf)] = entry | measured
    else:
        entry = {
            "audio_seconds_per_second_per_device": round(audio / wall / len(devices), 3),
            "devices": len(devices),
        } | measured
        tokens = summary.get("tokens", 0)
        for fmt, size in summary.get("bytes_by_format", {}).items():
            if tokens:
                entry[f"bytes_per_token_{fmt}"] = round(size / tokens, 3)
        rates[rate_key(conf, devices)] = entry
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(
            cache_dir / RATES, (json.dumps(rates, indent=2, sort_keys=True) + "\n").encode()
        )
    except OSError as err:
        log.debug("could not record the rate in %s: %s", cache_dir, err)


def format_plan(plan: dict[str, Any]) -> str:
    job, jobs = plan["job"]
    lines = [
        f"plan: {plan['dataset']} with {plan['codec']}"
        + (f", job {job} of {jobs}" if jobs > 1 else "")
        + " (nothing is encoded)",
        f"  units     {plan['units']}"
        + (f" of {plan['units_total']}" if jobs > 1 else "")
        + f", {plan['files']} shard file(s)",
        f"  rows      {plan['rows'] if plan['rows'] is not None else 'unknown (no row counts in metadata)'}",
    ]
    if plan["mean_seconds_per_row"] is None:
        lines.append("  audio     unknown (no sampled row decoded)")
    else:
        hours = plan["audio_hours"]
        lines.append(
            f"  audio     {'~' + format_hours(hours * 3600) if hours is not None else 'unknown'} "
            f"({plan['mean_seconds_per_row']:.2f} s per row over {plan['sampled_rows']} sampled rows)"
        )
    size = plan["output_bytes"]
    lines.append(
        f"  output    {'~' + _bytes(size) if size is not None else 'unknown'} "
        f"({plan['tokens_per_audio_second']:.0f} tokens per audio second)"
    )
    rate = plan["rate"]
    if rate is None:
        lines.append(
            f"  ETA       unknown: no run on this machine has measured {plan['devices']} with this "
            "codec; run a short job first (e.g. runtime.max_rows=500), then plan again"
        )
    else:
        eta = plan["eta_seconds"]
        lines.append(
            f"  ETA       {format_eta(eta) if eta is not None else 'unknown'} on {plan['devices']} "
            f"at {rate['audio_seconds_per_second_per_device']:.1f} audio s/s per device "
            f"(measured {rate['measured']})"
        )
    lines.append(_pipeline_line(plan))
    return "\n".join(lines)


def _pipeline_line(plan: dict[str, Any]) -> str:
    """What everything but the model can feed (a dry run's measure), and which bounds the run."""
    pipeline = plan["pipeline_rate"]
    if pipeline is None:
        return (
            "  pipeline  not measured for this dataset and codec: a dry run measures it "
            "(runtime.dry_run=true runtime.max_rows=500), then plan again"
        )
    bound = {
        "pipeline": "the pipeline bounds this run: add readers (runtime.num_readers) or cores",
        "devices": "the devices bound this run",
        None: "no device rate to compare it with",
    }[plan["bound"]]
    return (
        f"  pipeline  {pipeline['audio_seconds_per_second']:.1f} audio s/s with "
        f"{pipeline['readers']} reader(s), from a dry run (measured {pipeline['measured']}); {bound}"
    )


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"
