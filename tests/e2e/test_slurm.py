"""The split run on a real Slurm cluster (slurmctld + slurmd + munge on this machine, started by
scripts/slurm_local.sh), submitted through `hydra/launcher=slurm`, one job pre-empted mid-run.

Without a cluster the test skips, saying how to start one; in CI (CI=true) it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, SPLIT_ARGS, run_rows

SCRIPT = ROOT / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="module")
def slurm():
    """A Slurm that runs jobs here; in CI, start it when it is not up."""

    def usable() -> bool:
        return (
            shutil.which("sinfo") is not None
            and subprocess.run(
                ["bash", str(SCRIPT), "status"], capture_output=True, timeout=60
            ).returncode
            == 0
        )

    if usable():
        return
    if os.environ.get("CI") != "true":
        pytest.skip(f"no Slurm cluster here; start one (root, Debian) with: bash {SCRIPT}")
    start = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if start.returncode != 0 or not usable():
        pytest.fail(f"Slurm did not start in CI:\n{start.stdout[-3000:]}\n{start.stderr[-3000:]}")


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def committed(manifest) -> list[dict]:
    if not manifest.is_file():
        return []
    lines = manifest.read_text().splitlines()
    return [json.loads(x) for x in lines if '"type": "shard"' in x]


@pytest.mark.slow
def test_a_pre_empted_slurm_job_is_requeued_resumes_and_the_merge_equals_one_node(
    slurm, tmp_path, weights_dir, split_reference
):
    """Two jobs through hydra/launcher=slurm (GPUs 0, 1 CPU each). Once job 0 has committed a
    unit, Slurm sends it SIGUSR2 as a pre-emption does; submitit requeues it, the requeued job
    continues its dir (runtime.resume=auto), and the merged result equals a one-node run."""
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "encode.py"),
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=null",
        "hydra.launcher.timeout_min=30",
        *SPLIT_ARGS,
        f"codec.weights={weights_dir('snac_24khz')}",
        "runtime.num_jobs=2",
        "runtime.job_index=range(0,2)",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as sweep_proc:
        try:
            wait_for(lambda: committed(sweep / "0" / "manifest.jsonl"), 300, "job 0's first unit")
            array = next(p.name for p in (sweep / ".submitit").iterdir() if p.name.endswith("_0"))
            subprocess.run(["scancel", "--signal=USR2", array], check=True, timeout=30)
            output, _ = sweep_proc.communicate(timeout=600)
        finally:
            if sweep_proc.poll() is None:
                sweep_proc.kill()
                subprocess.run(["scancel", array.split("_")[0]], timeout=30)
    assert sweep_proc.returncode == 0, output[-4000:]

    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob(f"{array}/*_log.*"))
    assert "Caught signal SIGUSR2" in logs and f"Requeued job {array}" in logs
    assert "Traceback" not in logs  # every process of the step got SIGUSR2; none died of it
    records = [json.loads(x) for x in (sweep / "0" / "manifest.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records].count("resume") == 1
    units = [r["unit"] for r in records if r["type"] == "shard"]
    assert sorted(units) == [0, 2, 4, 6]  # job 0's share, each once: nothing redone
    assert records[-1]["type"] == "summary" and records[-1]["units_resumed"] >= 1

    merged = subprocess.run(
        [str(Path(sys.executable).parent / "snactok-merge"), str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert run_rows(sweep / "merged") == run_rows(split_reference)
