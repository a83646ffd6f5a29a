"""Crashes, signals and full disks, on real `python encode.py` processes: nothing is lost, nothing is
written twice, and a resumed run ends with the bytes of an uninterrupted one (`demo_run`).

The runs here read small blocks through a small queue, so units commit one after another and a
kill can land between commits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import assert_gone, compose_cfg, demo_args, run_cli, start_cli

from snactok.engine.run import run
from snactok.errors import ConfigError
from snactok.output.files import read_jsonl, sha256_file

pytestmark = pytest.mark.slow

SHARD_NAMES = [f"demo-default-train-0000{i}.jsonl.gz" for i in range(3)]


def _args(weights: Path, run_dir: Path, *extra: str) -> list[str]:
    """The demo in 3 units of 16 rows (as `demo_run`), one eager worker, commits spread out."""
    shape = ["runtime.max_rows=null", "runtime.read_block_rows=4", "runtime.queue_samples=200000"]
    return demo_args(weights, run_dir, *shape, "output.lines_per_file=16", *extra)


def _shard_records(run_dir: Path) -> list[dict]:
    """Shard records so far; read while the run appends, so a line may be half there."""
    path = run_dir / "manifest.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if r.get("type") == "shard"]


def _wait_for_shards(proc: subprocess.Popen, run_dir: Path, n: int, log: Path) -> None:
    deadline = time.monotonic() + 300
    while len(_shard_records(run_dir)) < n:
        assert proc.poll() is None, f"exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)


def _children(pid: int) -> dict[int, str]:
    """pid -> name of the processes whose parent is `pid` (the names workers give themselves)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
    return found


def _finish(proc: subprocess.Popen, within: float) -> tuple[int, float]:
    t0 = time.monotonic()
    code = proc.wait(timeout=within)
    return code, time.monotonic() - t0


def _snapshot(run_dir: Path) -> dict[str, tuple[int, int, str]]:
    """Committed shards by name: inode, mtime and hash, to show they are never touched again."""
    out = {}
    for r in _shard_records(run_dir):
        path = run_dir / r["file"]
        st = path.stat()
        out[path.name] = (st.st_ino, st.st_mtime_ns, sha256_file(path))
    return out


def _assert_same_as_uninterrupted(run_dir: Path, reference: Path) -> None:
    names = sorted(p.name for p in (run_dir / "shards").iterdir())
    assert names == SHARD_NAMES  # nothing temporary left either
    for name in names:
        assert (run_dir / "shards" / name).read_bytes() == (reference / "shards" / name).read_bytes()
    records = read_jsonl(run_dir / "manifest.jsonl")
    shards = [r for r in records if r["type"] == "shard"]
    assert sorted(r["unit"] for r in shards) == [0, 1, 2]  # each unit committed exactly once
    summary = records[-1]
    assert summary["type"] == "summary"
    assert (summary["rows_read"], summary["rows_written"], summary["rows_rejected"]) == (40, 40, 0)


def test_killed_worker_then_killed_main_resume_to_the_uninterrupted_bytes(
    tmp_path, weights_dir, demo_run
):
    """SIGKILL a device worker, then (in the resumed run) the main process; a crash's leftovers
    (a half-written shard, a torn manifest line) are planted before the last resume. Speed-only
    settings (devices, readers, batch size) change between attempts, which is allowed."""
    weights, run_dir = weights_dir("snac_24khz"), tmp_path / "run"
    log = tmp_path / "attempt1.log"
    proc = start_cli(_args(weights, run_dir), log)
    _wait_for_shards(proc, run_dir, 1, log)
    children = _children(proc.pid)
    (worker,) = [pid for pid, name in children.items() if name == "snactok-dev-0"]
    os.kill(worker, signal.SIGKILL)
    code, seconds = _finish(proc, within=60)
    text = log.read_text()
    assert code == 1 and seconds < 15, text[-3000:]
    assert f"device worker 0 (cpu) (pid {worker}) was killed by SIGKILL" in text
    # a worker killed at a random moment is encoding or waiting for its next clip
    assert "while encoding unit demo-default-train-0000" in text or "while waiting for clips" in text
    assert f"runtime.resume={run_dir}" in text
    assert_gone(list(children), within=15)
    committed = _snapshot(run_dir)
    assert 1 <= len(committed) < 3

    log = tmp_path / "attempt2.log"
    proc = start_cli(
        _args(weights, tmp_path / "attempt2", f"runtime.resume={run_dir}", "runtime.batch_samples=1"),
        log,
    )
    _wait_for_shards(proc, run_dir, len(committed) + 1, log)
    children = _children(proc.pid)
    assert sorted(children.values()).count("snactok-read-0") == 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert_gone(list(children), within=15)  # the workers die with the main process
    assert all(_snapshot(run_dir)[name] == seen for name, seen in committed.items())
    committed = _snapshot(run_dir)

    # What a crash in the middle of a commit leaves: a temporary shard, a torn manifest line.
    (run_dir / "shards" / f".{SHARD_NAMES[2]}.tmp").write_bytes(b"\x1f\x8b half a shard")
    with open(run_dir / "manifest.jsonl", "a") as f:
        f.write('{"type": "shard", "unit": 2, "fi')
    proc = run_cli(
        _args(
            weights,
            tmp_path / "attempt3",
            f"runtime.resume={run_dir}",
            "runtime.devices=[cpu,cpu]",
            "runtime.num_readers=2",
        )
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all(_snapshot(run_dir)[name] == seen for name, seen in committed.items())
    _assert_same_as_uninterrupted(run_dir, demo_run)
    summary = read_jsonl(run_dir / "manifest.jsonl")[-1]
    assert summary["units_resumed"] == len(committed)


def test_ctrl_c_and_sigterm_stop_within_seconds_and_resume_auto_continues(
    tmp_path, weights_dir, demo_run
):
    """Ctrl-C reaches the whole process group, as from a terminal; Slurm's SIGTERM reaches every
    process of the job. Only the main process acts on either."""
    weights, run_dir = weights_dir("snac_24khz"), tmp_path / "run"
    args = _args(weights, run_dir, "runtime.resume=auto")
    for attempt, (sig, expected_code) in enumerate([(signal.SIGINT, 130), (signal.SIGTERM, 143)]):
        log = tmp_path / f"attempt{attempt}.log"
        before = len(_shard_records(run_dir))
        proc = start_cli(args, log)
        _wait_for_shards(proc, run_dir, before + 1, log)
        children = _children(proc.pid)
        os.killpg(proc.pid, sig)
        code, seconds = _finish(proc, within=60)
        text = log.read_text()
        assert code == expected_code and seconds < 15, (seconds, text[-3000:])
        assert "Continue with the same command plus runtime.resume=auto" in text
        assert "Traceback" not in text  # children ignored the signal: no half-sent messages
        assert_gone(list(children), within=15)
    if len(_shard_records(run_dir)) == 3:
        pytest.skip("the run finished before the second signal; nothing left to resume")
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_same_as_uninterrupted(run_dir, demo_run)


def test_resume_refuses_other_settings_and_names_each_key(tmp_path, demo_run):
    cfg = compose_cfg(
        [
            "dataset=demo",
            f"codec.weights={read_jsonl(demo_run / 'manifest.jsonl')[0]['weights']['path']}",
            "runtime=debug",
            "runtime.max_rows=null",
            "output.lines_per_file=8",
            "runtime.min_samples=2",
            f"runtime.resume={demo_run}",
        ]
    )
    with pytest.raises(ConfigError) as err:
        run(cfg, tmp_path)
    message = str(err.value)
    assert "output.lines_per_file: the run has 16, this command has 8" in message
    assert "runtime.min_samples: the run has 1, this command has 2" in message
    assert "runtime.max_rows" not in message and "codec" not in message.split("\n", 1)[1]


def test_a_new_run_never_writes_into_an_existing_run(tmp_path, demo_run):
    cfg = compose_cfg(["dataset=demo", "codec.weights=random", "runtime=debug"])
    with pytest.raises(ConfigError, match=r"already holds a run.*runtime.resume=auto"):
        run(cfg, demo_run)
    cfg = compose_cfg(["runtime=debug", "runtime.resume=auto", "codec.weights=random"])
    with pytest.raises(ConfigError, match="made with other settings"):  # random != its weights
        run(cfg, demo_run)
    with pytest.raises(ConfigError, match="does not exist"):
        cfg = compose_cfg(["runtime=debug", "codec.weights=random", f"runtime.resume={tmp_path}"])
        run(cfg, tmp_path / "new")


def _small_disk(path: Path) -> str:
    """Mount an 8 KiB tmpfs (two pages) at `path`, or make it read-only: a write must fail."""
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(path)], capture_output=True
        )
        if done.returncode == 0:
            return "tmpfs"
        pytest.skip(f"running as root but cannot mount a tmpfs: {done.stderr.decode().strip()}")
    path.chmod(0o555)
    return "read-only"


def test_a_full_disk_stops_the_run_with_a_clear_message_and_no_half_shard(tmp_path, weights_dir):
    run_dir = tmp_path / "run"
    kind = _small_disk(run_dir / "shards")
    try:
        proc = run_cli(
            [
                "dataset=demo",
                f"codec.weights={weights_dir('snac_24khz')}",
                "runtime=debug",
                "runtime.max_rows=12",
                "output.lines_per_file=2",
                f"hydra.run.dir={run_dir}",
            ]
        )
        text = proc.stdout + proc.stderr
        assert proc.returncode == 1, text[-3000:]
        errno = "No space left on device" if kind == "tmpfs" else "Permission denied"
        assert f"cannot write {run_dir / 'shards'}" in text and errno in text
        assert f"Continue with the same command plus runtime.resume={run_dir}" in text
        records = {r["file"]: r for r in _shard_records(run_dir)}
        on_disk = sorted(p.name for p in (run_dir / "shards").iterdir())
        # every shard under a final name is whole and recorded; no temporary file is left
        assert on_disk == sorted(Path(f).name for f in records)
        assert len(on_disk) < 6
        for name in on_disk:
            assert sha256_file(run_dir / "shards" / name) == records[f"shards/{name}"]["sha256"]
    finally:
        if kind == "tmpfs":
            subprocess.run(["umount", str(run_dir / "shards")], check=False)
