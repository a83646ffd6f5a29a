"""A real `kill -9` of each process at each moment of its life, on real `python encode.py` runs.

Whatever dies, and whenever, the run stops within 10 s: the other children are gone, the exit code
is 1, the log names the process, the signal and what it was doing, and prints the resume command.
Resuming then gives the bytes of a run that was never killed. Each moment is made exact by the
test-only hook in `snactok.engine.hook`: the child writes its pid to a file when it gets there and waits
to be killed, so no test sleeps and hopes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import alive, assert_gone, demo_args, run_cli, start_cli

from snactok.engine.hook import DIR_ENV, ENV

pytestmark = pytest.mark.slow

STOP_WITHIN = 10.0  # seconds from the kill to the run's exit


def _args(weights: Path, run_dir: Path, *extra: str) -> list[str]:
    """12 demo rows in 3 units of 4, one reader and one CPU worker, read 2 rows at a time."""
    shape = ["runtime.max_rows=12", "runtime.read_block_rows=2", "output.lines_per_file=4"]
    return demo_args(weights, run_dir, *shape, *extra)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, weights_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("never_killed")
    proc = run_cli(_args(weights_dir("snac_24khz"), run_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


def _start(args: list[str], log: Path, hook: str | None, hook_dir: Path) -> subprocess.Popen:
    env = {DIR_ENV: str(hook_dir), ENV: hook or ""}
    return start_cli(args, log, env)


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, within: float = 240.0) -> int:
    """The pid a child wrote when it reached its moment."""
    deadline = time.monotonic() + within
    while not path.exists():
        assert proc.poll() is None, f"exited ({proc.returncode}) first:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{path.name} never reached:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)
    return int(path.read_text())


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        found += kids
        todo += kids
    return found


def _assert_resumes_to_the_clean_bytes(args: list[str], run_dir: Path, clean: Path) -> None:
    proc = run_cli([*args, f"runtime.resume={run_dir}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in (run_dir / "shards").iterdir())
    assert names == sorted(p.name for p in (clean / "shards").iterdir())
    for name in names:
        assert (run_dir / "shards" / name).read_bytes() == (clean / "shards" / name).read_bytes(), name


# (hook, the process it kills and its display name, extra settings, what the log says it was doing)
MOMENTS = {
    "reader starting": ("snactok-read-0:starting:1", "reader 0", [], "while starting"),
    "reader reading": (
        "snactok-read-0:reading:6",
        "reader 0",
        [],
        "while reading unit demo-default-train-00001",
    ),
    "reader blocked on the budget": (
        "snactok-read-0:budget:3",
        "reader 0",
        ["runtime.queue_samples=1"],
        "while waiting for room in runtime.queue_samples",
    ),
    "reader idle after its last row": (
        "snactok-read-0:idle:1",
        "reader 0",
        [],
        "while idle after its last row",
    ),
    "device worker compiling": (
        "snactok-dev-0:compiling:1:go",  # carries on: the kill lands inside torch.compile
        "device worker 0 (cpu)",
        ["runtime.compile=true"],
        "while compiling its encoder",
    ),
    "device worker encoding": (
        "snactok-dev-0:encoding:4",
        "device worker 0 (cpu)",
        [],
        "while encoding unit demo-default-train-0000",
    ),
    "device worker between batches": (
        "snactok-read-0:reading:6,snactok-dev-0:waiting:1",  # the reader pauses, so input runs dry
        "device worker 0 (cpu)",
        [],
        "while waiting for clips",
    ),
    "device worker halfway through a message": (
        "snactok-dev-0:sending:3",
        "device worker 0 (cpu)",
        [],
        "it died in the middle of a message to this process",
    ),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_child_killed_at_any_moment_stops_the_run_within_seconds(
    moment, tmp_path, weights_dir, clean_run
):
    hook, display, extra, doing = MOMENTS[moment]
    process = hook.split(",")[-1].split(":")[:2]
    weights, run_dir = weights_dir("snac_24khz"), tmp_path / "run"
    args = _args(weights, run_dir)
    log = tmp_path / "killed.log"
    proc = _start([*args, *extra], log, hook, tmp_path)
    pid = _wait_for(tmp_path / ".".join(process), proc, log)
    family = _descendants(proc.pid)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    code = proc.wait(timeout=60)
    seconds = time.monotonic() - t0
    text = log.read_text()
    print(f"{moment}: stopped {seconds:.1f} s after the kill")  # docs/reliability.md (pytest -rP)
    assert code == 1 and seconds < STOP_WITHIN, (seconds, text[-3000:])
    assert f"{display} (pid {pid}) was killed by SIGKILL" in text, text[-3000:]
    assert doing in text, text[-3000:]
    assert f"Continue with the same command plus runtime.resume={run_dir}" in text
    assert "leaked semaphore" not in text and "Traceback" not in text, text[-3000:]
    assert_gone(family, within=5)
    _assert_resumes_to_the_clean_bytes(args, run_dir, clean_run)


def test_a_child_killed_while_it_imports_stops_the_run(tmp_path, weights_dir, clean_run):
    """Before the hook can run: the first spawned child, killed as soon as it exists."""
    weights, run_dir = weights_dir("snac_24khz"), tmp_path / "run"
    args = _args(weights, run_dir)
    log = tmp_path / "killed.log"
    proc = _start(args, log, None, tmp_path)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        spawned = [p for p in _descendants(proc.pid) if b"spawn_main" in _cmdline(p)]
        if spawned:
            break
        time.sleep(0.005)
    os.kill(spawned[0], signal.SIGKILL)
    t0 = time.monotonic()
    code = proc.wait(timeout=60)
    seconds = time.monotonic() - t0
    text = log.read_text()
    print(f"a child importing: stopped {seconds:.1f} s after the kill")
    assert code == 1 and seconds < STOP_WITHIN, (seconds, text[-3000:])
    assert f"(pid {spawned[0]}) was killed by SIGKILL" in text and "while starting" in text, text[-3000:]
    assert f"Continue with the same command plus runtime.resume={run_dir}" in text
    assert "leaked semaphore" not in text, text[-3000:]
    _assert_resumes_to_the_clean_bytes(args, run_dir, clean_run)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_main_process_killed_mid_run_takes_its_children_and_leaks_nothing(
    tmp_path, weights_dir, clean_run
):
    weights, run_dir = weights_dir("snac_24khz"), tmp_path / "run"
    args = _args(weights, run_dir)
    log = tmp_path / "killed.log"
    # the worker pauses in its 5th batch, so the kill comes mid-run, after a commit
    proc = _start(args, log, "snactok-dev-0:encoding:5", tmp_path)
    _wait_for(tmp_path / "snactok-dev-0.encoding", proc, log)
    family = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    proc.wait(timeout=30)
    assert_gone(family, within=STOP_WITHIN)
    print(f"the main process: every child gone {time.monotonic() - t0:.1f} s after the kill")
    time.sleep(0.5)  # the resource tracker, if any, has its last word
    assert "leaked semaphore" not in log.read_text()
    _assert_resumes_to_the_clean_bytes(args, run_dir, clean_run)


def test_a_stuck_child_stops_the_run_after_stall_seconds(tmp_path, weights_dir, clean_run):
    """A device worker that stops making progress (as in a wedged driver call) without dying."""
    weights, run_dir = weights_dir("snac_24khz"), tmp_path / "run"
    args = _args(weights, run_dir)
    log = tmp_path / "stuck.log"
    # 15 s: more than a child takes to import torch on a busy 2-core machine (5-8 s), the one
    # gap without steps in a healthy start
    proc = _start([*args, "runtime.stall_seconds=15"], log, "snactok-dev-0:encoding:2", tmp_path)
    pid = _wait_for(tmp_path / "snactok-dev-0.encoding", proc, log)
    t0 = time.monotonic()
    code = proc.wait(timeout=60)
    seconds = time.monotonic() - t0
    text = log.read_text()
    print(f"a stuck worker: stopped {seconds:.1f} s after it stopped (stall_seconds=15)")
    assert code == 1 and 15 <= seconds < 15 + STOP_WITHIN, (seconds, text[-3000:])
    assert "made no progress for" in text and "(runtime.stall_seconds=15)" in text, text[-3000:]
    assert f"device worker 0 (cpu) (pid {pid}) made no progress for" in text
    assert "while encoding unit demo-default-train-0000" in text
    assert f"Continue with the same command plus runtime.resume={run_dir}" in text
    assert not alive(pid)
    _assert_resumes_to_the_clean_bytes(args, run_dir, clean_run)
