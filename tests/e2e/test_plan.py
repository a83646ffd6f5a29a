"""runtime.plan=true: the plan from metadata and sampled rows, checked against the run it plans."""

from __future__ import annotations

import json
import re

import pytest
from helpers import run_cli


@pytest.mark.slow
def test_plan_encodes_nothing_and_matches_the_run_it_plans(tmp_path, weights_dir):
    common = [
        "runtime=debug",
        "runtime.max_rows=12",
        "output.lines_per_file=4",
        f"runtime.cache_dir={tmp_path / 'cache'}",
        f"codec.weights={weights_dir('snac_24khz')}",
    ]
    first = run_cli([*common, "runtime.plan=true", f"hydra.run.dir={tmp_path / 'plan1'}"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert not (tmp_path / "plan1" / "manifest.jsonl").exists()
    assert not (tmp_path / "plan1" / "shards").exists()
    assert "units     3, 3 shard file(s)" in first.stdout and "rows      12" in first.stdout
    assert "ETA       unknown" in first.stdout
    plan = json.loads((tmp_path / "plan1" / "plan.json").read_text())

    run = run_cli([*common, f"hydra.run.dir={tmp_path / 'run'}"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads(x) for x in (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()]
    summary = records[-1]
    # every row sampled (12 <= 32): the hours are the run's, from file headers
    assert plan["audio_hours"] * 3600 == pytest.approx(summary["audio_seconds"], rel=1e-3)
    assert plan["sampled_rows"] == 12

    # The run measured its rate and bytes per token: the next plan has an ETA, and its size
    # estimate comes close to what the run wrote (tokens are whole frames of padded audio).
    second = run_cli([*common, "runtime.plan=true", f"hydra.run.dir={tmp_path / 'plan2'}"])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert re.search(r"ETA       \d+m\d\ds on \['cpu'\] at [\d.]+ audio s/s per device", second.stdout)
    again = json.loads((tmp_path / "plan2" / "plan.json").read_text())
    written = sum(r["bytes"] for r in records if r["type"] == "shard")
    assert again["output_bytes"] == pytest.approx(written, rel=0.15)
    rate = again["rate"]["audio_seconds_per_second_per_device"]
    assert again["eta_seconds"] == pytest.approx(summary["audio_seconds"] / rate, rel=1e-3)

    # A dry run measures the pipeline alone; the plan sets it beside the device rate. On CPU the
    # model, not the pipeline, is the bound (the dry run is several times faster).
    dry = run_cli([*common, "runtime.dry_run=true", f"hydra.run.dir={tmp_path / 'dry'}"])
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    third = run_cli([*common, "runtime.plan=true", f"hydra.run.dir={tmp_path / 'plan3'}"])
    assert re.search(r"pipeline  [\d.]+ audio s/s with 1 reader\(s\), from a dry run", third.stdout)
    assert "the devices bound this run" in third.stdout
    dry_rate = json.loads((tmp_path / "plan3" / "plan.json").read_text())["pipeline_rate"]
    assert dry_rate["audio_seconds_per_second"] > rate

    # a job's share of the plan
    job = run_cli(
        [
            *common,
            "runtime.plan=true",
            "runtime.num_jobs=2",
            "runtime.job_index=1",
            f"hydra.run.dir={tmp_path / 'plan3'}",
        ]
    )
    assert job.returncode == 0
    assert (
        "job 1 of 2" in job.stdout and "units     1 of 3" in job.stdout and "rows      4" in job.stdout
    )
