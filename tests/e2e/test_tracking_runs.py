"""W&B and metrics.jsonl through real encode.py runs (W&B offline)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from snactok.output.files import read_jsonl

WANDB_CLI = Path(sys.executable).with_name("wandb")


def _inspect(run_dir: Path, *flags: str) -> str:
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    out = subprocess.run(
        [str(WANDB_CLI), "leet", "inspect", "--json", *flags, str(log)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def _run(run_dir: Path, weights: Path, *extra: str, env: dict | None = None) -> None:
    proc = run_cli(
        [
            "dataset=demo",
            f"codec.weights={weights}",
            "runtime=debug",
            "runtime.max_rows=4",
            "output.lines_per_file=2",
            f"hydra.run.dir={run_dir}",
            *extra,
        ],
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_an_offline_wandb_run_holds_config_metrics_and_a_shard_table(tmp_path, weights_dir):
    run_dir = tmp_path / "run"
    _run(run_dir, weights_dir("snac_24khz"), "wandb.mode=offline", "wandb.tags=[trial]", "report=true")
    state = json.loads(_inspect(run_dir, "--summary"))
    assert state["state"] == "finished" and state["project"] == "snactok"
    assert state["name"].startswith("demo-snac_24khz-")
    assert set(state["tags"]) == {"trial", "codec:snac_24khz", "dataset:demo"}
    assert state["config"]["codec"]["name"] == "snac_24khz"
    assert state["config"]["runtime"]["max_rows"] == 4
    summary = state["summary"]
    manifest = read_jsonl(run_dir / "manifest.jsonl")[-1]
    assert summary["rows_written"] == manifest["rows_written"] == 4
    assert summary["hours_encoded"] == pytest.approx(manifest["audio_seconds"] / 3600)
    assert summary["real_time_factor"] == manifest["audio_seconds_per_second"]
    assert summary["wall_seconds"] == manifest["wall_seconds"]
    assert summary["shards"]["_type"] == "table-file" and summary["shards"]["nrows"] == 2
    for key in (
        "audio_seconds_per_second",
        "items_per_second",
        "queue_fill",
        "device/0/audio_seconds_per_second",
        "reader/0/audio_seconds_per_second",
        "shard/rows",
        "shard/bytes",
        "shard/tokens_layer_3",
        "shard/compression_vs_pcm16",
    ):
        assert key in summary, key
    (run_record,) = [
        json.loads(line)["run"] for line in _inspect(run_dir).splitlines() if '"type":"run"' in line
    ]
    assert run_record["job_type"] == "encode"
    assert run_record["run_group"] == state["name"]  # a single run is its own group
    # The same metrics without W&B: a snapshot every few seconds and one record per shard.
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    shards = [m for m in metrics if m["type"] == "shard"]
    assert sorted(m["shard/file"] for m in shards) == sorted(
        r["file"] for r in read_jsonl(run_dir / "manifest.jsonl") if r["type"] == "shard"
    )
    last = [m for m in metrics if m["type"] == "metrics"][-1]
    assert last["rows_done"] == 4 and last["audio_seconds_per_second"] > 0
    # report=true: the plots and decoded audio are written at the end, and logged to W&B
    assert (run_dir / "report" / "summary.json").is_file()
    pngs = sorted(p.name for p in (run_dir / "report").glob("*.png"))
    assert len(pngs) >= 4, pngs
    media = {
        k
        for k, v in summary.items()
        if isinstance(v, dict) and v.get("_type") in {"image-file", "audio-file"}
    }
    assert media, sorted(summary)


@pytest.mark.slow
def test_a_wandb_that_cannot_start_never_stops_the_encoding(tmp_path, weights_dir):
    """Online mode with no API key and no terminal: wandb.init raises; the run goes on."""
    run_dir = tmp_path / "run"
    home = tmp_path / "home"  # no ~/.netrc, no wandb settings
    home.mkdir()
    env = {"HOME": str(home), "WANDB_API_KEY": "", "WANDB_MODE": "", "WANDB_DIR": str(tmp_path)}
    _run(run_dir, weights_dir("snac_24khz"), "runtime.max_rows=2", "wandb.mode=online", env=env)
    assert "W&B did not start" in (run_dir / "encode.log").read_text()
    assert read_jsonl(run_dir / "manifest.jsonl")[-1]["rows_written"] == 2
    assert any(m["type"] == "metrics" for m in read_jsonl(run_dir / "metrics.jsonl"))
