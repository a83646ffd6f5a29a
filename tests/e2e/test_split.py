"""One dataset split over jobs (`runtime.num_jobs`), run through Hydra's real submitit launcher
(`submitit_local`: the same code path as Slurm, with local processes), then checked and joined by
snactok-merge. tests/e2e/test_slurm.py does the same on a real Slurm cluster."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from helpers import SPLIT_ARGS, run_cli, run_rows


def merge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "snactok-merge"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_split_run_through_submitit_merges_into_the_single_node_run(
    tmp_path, weights_dir, split_reference
):
    """Two jobs through hydra/launcher=submitit_local; the merge equals one job row for row. Then
    the merge's checks: a lost unit is reported with a command that, run as printed, redoes it; a
    doubled job dir is refused; the jobs' save.local runs on the merged set, not per job."""
    sweep, saved = tmp_path / "sweep", tmp_path / "saved"
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            *SPLIT_ARGS,
            f"codec.weights={weights_dir('snac_24khz')}",
            "runtime.num_jobs=2",
            "runtime.job_index=range(0,2)",
            f"save.local={saved}",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for job in ("0", "1"):
        log = (sweep / job / "encode.log").read_text()
        assert "runtime.resume=auto" in log and "snactok-merge" in log
        assert f"job {job} of 2 takes 4" in log
    assert not saved.exists()  # a job holds half the data: saving waits for the merge

    done = merge(sweep)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 of 8 units from 2 job dir(s), each exactly once; 24 rows" in done.stdout
    merged = sweep / "merged"
    assert run_rows(merged) == run_rows(split_reference)
    assert len(datasets.load_from_disk(str(saved))) == 24
    records = [json.loads(x) for x in (merged / "manifest.jsonl").read_text().splitlines()]
    assert [r["unit"] for r in records if r["type"] == "shard"] == list(range(8))
    assert records[-1]["rows_written"] == 24 and records[0]["merged"]["num_jobs"] == 2

    # Job 1 loses its last unit (as if killed before committing it): reported, then redone.
    manifest = sweep / "1" / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    last = max(i for i, x in enumerate(lines) if json.loads(x)["type"] == "shard")
    lost = json.loads(lines[last])
    manifest.write_text("".join(lines[:last]))
    (sweep / "1" / lost["file"]).unlink()
    bad = merge(sweep)
    assert bad.returncode == 1
    assert (
        f"missing 1 unit(s):\n    job 1: units {lost['unit']} (demo-default-train-0000{lost['unit']})"
        in bad.stderr
    )
    redo = next(x for x in bad.stderr.splitlines() if "redo:" in x).split("redo: ", 1)[1]
    assert f"runtime.resume={sweep / '1'}" in redo and "runtime.job_index=1" in redo
    args = shlex.split(redo)[2:]  # python encode.py ...
    again = run_cli(args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert merge(sweep, "--no-save").returncode == 0
    assert run_rows(merged) == run_rows(split_reference)

    # A second copy of job 0's dir: its units are committed twice.
    shutil.copytree(sweep / "0", sweep / "0-again")
    doubled = merge(sweep)
    assert doubled.returncode == 1
    assert "committed more than once: 4 unit(s)" in doubled.stderr
    assert (
        "unit 0 (demo-default-train-00000) in" in doubled.stderr and "identical bytes" in doubled.stderr
    )
