"""`output.writers=N`: units written by writer processes, off the main process.

The shards must be the bytes the main process writes itself, and a writer killed mid-write must
leave a run that resumes to those bytes. Dry runs (snactok.codec.dryrun) feed the writers: they write
whatever tokens they are given, and a dry run gives the same ones every time.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import run_cli, start_cli

from snactok.output.files import sha256_file

pytestmark = pytest.mark.slow

ARGS = [
    "dataset=demo",
    "runtime=debug",
    "runtime.max_rows=null",
    "runtime.dry_run=true",
    "output.lines_per_file=4",
    "output.format=both",
]


def _shards(run_dir) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted((run_dir / "shards").iterdir())}


@pytest.fixture(scope="module")
def in_main(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("writers0")
    proc = run_cli([*ARGS, "output.writers=0", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


def test_writer_processes_write_the_main_processs_bytes(in_main, tmp_path):
    proc = run_cli([*ARGS, "output.writers=2", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(_shards(in_main)) == 20  # 10 units, 2 formats
    assert _shards(tmp_path) == _shards(in_main)


def test_a_killed_writer_stops_the_run_and_it_resumes_to_the_same_bytes(in_main, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "first.log"
    args = [*ARGS, "output.writers=2", f"hydra.run.dir={run_dir}"]
    env = {"SNACTOK_TEST_AT": "snactok-writer:writing:3", "SNACTOK_TEST_AT_DIR": str(tmp_path)}
    proc = start_cli(args, log, env=env)
    marker = tmp_path / "snactok-writer.writing"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    assert proc.wait(60) == 1
    text = log.read_text()
    assert "a writer process (output.writers) died" in text, text[-3000:]
    assert f"runtime.resume={run_dir}" in text and "Traceback" not in text
    assert len(_shards(run_dir)) < 20
    resumed = run_cli([*args, f"runtime.resume={run_dir}"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _shards(run_dir) == _shards(in_main)
