"""snactok-inspect on a real encode.py run."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import ROOT, assert_png, run_cli

from snactok.output.files import read_jsonl
from snactok.output.formats import read_shard
from snactok.tools.report import write_report

PLOTS = ("durations.png", "tokens_per_second.png", "codebook_usage.png", "throughput.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, weights_dir) -> Path:
    """A real 6-row demo run; with a metrics.jsonl shaped like the pipeline's if it wrote none."""
    d = tmp_path_factory.mktemp("inspect_run")
    proc = run_cli(
        [
            "dataset=demo",
            f"codec.weights={weights_dir('snac_24khz')}",
            "runtime=debug",
            "runtime.max_rows=6",
            f"hydra.run.dir={d}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = d / "metrics.jsonl"
    if not metrics.is_file() or not metrics.read_text().strip():  # as snactok.monitor.tracking writes it
        records = [
            {
                "type": "metrics",
                "time": 2.0 * t,
                "audio_seconds_per_second": 1.5 + 0.1 * t,
                "rows_done": t,
                "rows_rejected": 0,
                "device/0/audio_seconds_per_second": 1.5 + 0.1 * t,
            }
            for t in range(1, 7)
        ]
        metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    return d


def shard_rows(run_dir: Path) -> list[dict]:
    return [row for p in sorted((run_dir / "shards").glob("*.jsonl.gz")) for row in read_shard(p)]


@pytest.mark.slow
def test_script_writes_plots_audio_and_summary(run_dir):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snactok-inspect"), str(run_dir), "--num-audio", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = run_dir / "report"
    printed = [Path(line) for line in proc.stdout.split()]
    assert set(printed) >= {report / p for p in PLOTS} | {report / "summary.json"}
    assert all(p.is_file() for p in printed)
    for name in PLOTS:
        assert_png(report / name)

    header = read_jsonl(run_dir / "manifest.jsonl")[0]
    arch = header["arch"]
    rows = shard_rows(run_dir)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["rows_scanned"] == len(rows) == 6
    assert summary["notes"] == []  # metrics present, every original found

    # Codebook usage, counted here from the shards.
    for layer, usage in enumerate(summary["codebook_usage"], 1):
        used = len({c for row in rows for c in row[f"snac_layer_{layer}"]})
        assert usage["codes_used"] == used
        assert usage["fraction_used"] == used / arch["codebook_size"]
        assert 0 < usage["fraction_used"] <= 1
        assert usage["tokens"] == sum(row["token_lengths"][layer - 1] for row in rows)

    hop = math.prod(arch["encoder_rates"])
    nominal = [arch["sampling_rate"] / (hop * s) for s in arch["vq_strides"]]
    assert [t["nominal"] for t in summary["tokens_per_second"]] == pytest.approx(nominal)
    assert summary["tokens_per_second"][0]["nominal"] == pytest.approx(24000 / 2048)

    # Two rows decoded: reconstruction as long as its tokens, original as long as its duration.
    assert [a["id"] for a in summary["audio"]] == [row["id"] for row in rows[:2]]
    for clip, row in zip(summary["audio"], rows, strict=False):
        recon = sf.info(clip["reconstructed"])
        assert recon.samplerate == 24000
        assert recon.frames == row["token_lengths"][0] * hop * arch["vq_strides"][0]
        original = sf.info(clip["original"])
        assert original.samplerate == 24000
        assert abs(original.frames - row["duration"] * 24000) <= 1, (original.frames, row["duration"])
        assert Path(clip["original_file"]) == ROOT / "data" / "demo" / row["id"]
        wave, _ = sf.read(clip["reconstructed"])
        assert np.abs(wave).max() > 0  # decoded sound, not silence
        width, height = assert_png(Path(clip["spectrogram"]))
        assert height > width / 2  # two panels: original over reconstruction


@pytest.mark.slow
def test_missing_metrics_and_source_are_noted(run_dir, tmp_path):
    """A copy whose source folder has moved and that has no metrics.jsonl: the report still comes,
    with the reconstruction alone, no throughput plot, and a note for each."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report", "metrics.jsonl"))
    records = read_jsonl(copy / "manifest.jsonl")
    gone = str(tmp_path / "moved_away")
    records[0]["config"]["dataset"]["sources"][0]["path"] = gone
    records[0]["fingerprint"]["dataset.sources"][0]["path"] = gone
    (copy / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    files = write_report(copy, num_audio=1)

    report = copy / "report"
    assert not (report / "throughput.png").exists()
    assert report / "durations.png" in files
    summary = json.loads((report / "summary.json").read_text())
    first = shard_rows(copy)[0]
    assert [set(a) & {"original", "reconstructed"} for a in summary["audio"]] == [{"reconstructed"}]
    assert sf.info(summary["audio"][0]["reconstructed"]).frames == first["token_lengths"][0] * 2048
    notes = " | ".join(summary["notes"])
    assert "metrics.jsonl is missing" in notes
    assert f"reconstruction only, no file {first['id']!r} under" in notes
    width, height = assert_png(Path(summary["audio"][0]["spectrogram"]))
    assert height < width / 2  # one panel


@pytest.mark.slow
def test_logs_media_to_wandb(run_dir, tmp_path, monkeypatch):
    """A real offline W&B run: the logged record holds wandb.Image / wandb.Audio objects and the
    run's files get the media."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")  # conftest disables W&B for everything else
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="snactok-test")
    logged: list[dict] = []
    log = run.log
    monkeypatch.setattr(run, "log", lambda record, **kw: (logged.append(record), log(record, **kw)))
    try:
        write_report(run_dir, num_audio=1, wandb_run=run)
    finally:
        media = Path(run.dir) / "media"
        run.finish()

    assert len(logged) == 1
    record = logged[0]
    images = {k for k, v in record.items() if isinstance(v, wandb.Image)}
    audio = {k for k, v in record.items() if isinstance(v, wandb.Audio)}
    assert images == {f"report/{p[:-4]}" for p in PLOTS} | {"report/spectrogram/00"}
    assert audio == {"report/audio/00_original", "report/audio/00_reconstructed"}
    assert 0 < record["report/layer_1/codebook_fraction_used"] <= 1
    wavs = sorted((media / "audio").rglob("*.wav"))
    assert len(wavs) == 2 and {sf.info(w).samplerate for w in wavs} == {24000}
    assert len(list((media / "images").rglob("*.png"))) == len(images)
