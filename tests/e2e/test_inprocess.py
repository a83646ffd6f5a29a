"""`runtime.inprocess=true`: readers in threads and the device loop in the main process.

What it proves: the in-process run writes the same shard bytes as the multi-process run of the
same config; the device loop and a reader ran in the main process (the test hook records the pid
of whichever process reaches `encoding` and `reading`: it is the pid the manifest header
records, the main process's); and no reader or device worker process started (their hooks, which
fire in the multi-process run, never fire). More than one device is refused before anything
starts, naming both keys and the fix.
"""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from snactok.engine.hook import DIR_ENV, ENV

pytestmark = pytest.mark.slow

HOOKS = "snactok-dev-0:encoding:1:go,snactok-read-0:reading:1:go,MainProcess:encoding:1:go,MainProcess:reading:1:go"


def _run(tmp_path, weights, name: str, *extra: str) -> tuple:
    run_dir, marks = tmp_path / name, tmp_path / f"{name}-hooks"
    marks.mkdir()
    args = ["dataset=demo", "runtime=debug", f"codec.weights={weights}", f"hydra.run.dir={run_dir}"]
    proc = run_cli([*args, *extra], env={ENV: HOOKS, DIR_ENV: str(marks)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shards = {p.name: p.read_bytes() for p in sorted((run_dir / "shards").iterdir())}
    header = json.loads((run_dir / "manifest.jsonl").read_text().splitlines()[0])
    pids = {p.name: int(p.read_text()) for p in marks.iterdir()}
    return shards, header["pid"], pids


def test_inprocess_gives_the_multiprocess_bytes_without_child_processes(tmp_path, weights_dir):
    weights = weights_dir("snac_24khz")
    spawned, spawned_main, spawned_pids = _run(tmp_path, weights, "processes")
    inline, main_pid, pids = _run(tmp_path, weights, "inprocess", "runtime.inprocess=true")
    assert spawned and inline == spawned
    assert set(spawned_pids) == {"snactok-dev-0.encoding", "snactok-read-0.reading"}
    assert spawned_main not in spawned_pids.values()
    assert pids == {"MainProcess.encoding": main_pid, "MainProcess.reading": main_pid}


def test_inprocess_with_two_devices_is_refused_before_anything_starts(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "dataset=demo",
            "runtime=debug",
            "codec.weights=random",
            "runtime.devices=[cpu,cpu]",
            "runtime.inprocess=true",
            f"hydra.run.dir={run_dir}",
        ]
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "runtime.inprocess=true runs one device worker" in text, text[-3000:]
    assert "runtime.devices resolves to ['cpu', 'cpu']" in text and "runtime.devices=[cpu]" in text
    assert not (run_dir / "shards").exists()
