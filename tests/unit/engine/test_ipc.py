"""The cross-process primitives of `snactok.engine.ipc`, each against the death that used to wedge a run,
in real spawned processes."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
import torch.multiprocessing as tmp

from snactok.engine.ipc import ClipChannel, Inbox
from snactok.engine.state import BlockCounter, Budget, RunFlag


def _hold_the_lock(counter: BlockCounter, ready) -> None:
    import fcntl

    fcntl.lockf(counter._fd, fcntl.LOCK_EX)
    ready.set()
    time.sleep(600)


def test_a_counter_holder_killed_with_the_lock_held_does_not_block_the_others():
    ctx = tmp.get_context("spawn")
    counter = BlockCounter()
    assert [counter.take() for _ in range(3)] == [0, 1, 2]
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_the_lock, args=(counter, ready), daemon=True)
    holder.start()
    assert ready.wait(60)
    got = []
    taker = threading.Thread(target=lambda: got.append(counter.take()), daemon=True)
    taker.start()
    taker.join(0.5)
    assert got == []  # the lock is held
    os.kill(holder.pid, signal.SIGKILL)
    taker.join(10)
    assert got == [3]  # the kernel released it with the holder


def _send(outbox, payload: bytes, then_die: bool) -> None:
    outbox.send(("batch", payload))
    if then_die:
        outbox._frames.put(None)  # let the writer finish the whole message first
        outbox._writer.join()
        outbox._write_all(memoryview(b"\x00" * 3 + b"partial"))  # then a frame cut short
        os.kill(os.getpid(), signal.SIGKILL)
    outbox.close()


@pytest.mark.parametrize("then_die", [False, True])
def test_the_inbox_takes_whole_messages_and_sees_a_message_cut_by_a_death(then_die):
    ctx = tmp.get_context("spawn")
    inbox = Inbox()
    outbox, pipe = inbox.outbox_for("child")
    payload = os.urandom(3 * 2**20)  # far more than a pipe holds: written and read in pieces
    child = ctx.Process(target=_send, args=(outbox, payload, then_die), daemon=True)
    child.start()
    os.close(pipe)
    got, deadline = [], time.monotonic() + 60
    while "child" not in inbox.closed:
        assert time.monotonic() < deadline
        got += inbox.poll(0.2)  # never blocks past its timeout, whatever the child does
    child.join(10)
    assert got == [("child", ("batch", payload))]
    if then_die:
        assert child.exitcode == -signal.SIGKILL and inbox.cut["child"][0] == 10
    else:
        assert child.exitcode == 0 and "child" not in inbox.cut
    inbox.close()


def _read_clips(channel: ClipChannel, flag: RunFlag, out) -> None:
    while flag.running:
        clip = channel.get(timeout=0.1)
        if clip is not None:
            out.put((clip["row"], float(clip["wave"].sum()), len(clip["text"])))


def test_clips_reach_any_of_several_workers_whole_big_ones_too():
    ctx = tmp.get_context("spawn")
    channel, flag, out = ClipChannel(), RunFlag(ctx), ctx.SimpleQueue()
    workers = [ctx.Process(target=_read_clips, args=(channel, flag, out), daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    clips = [
        {"row": i, "wave": torch.full((1000 + i,), 0.5), "text": "x" * (10 if i % 3 else 100_000)}
        for i in range(12)
    ]
    for clip in clips:
        assert channel.put(clip, flag)
    got = sorted(out.get() for _ in clips)
    assert got == [(c["row"], 0.5 * (1000 + c["row"]), len(c["text"])) for c in clips]
    flag.stop()
    for w in workers:
        w.join(10)
        assert w.exitcode == 0


def test_the_budget_waits_for_room_and_lets_an_oversized_clip_pass_alone():
    ctx = tmp.get_context("spawn")
    budget, flag = Budget(ctx, capacity=100, readers=2, devices=1), RunFlag(ctx)
    budget.take(0, 80)
    assert budget.held == 80 and not budget.fits(30) and budget.fits(20)
    got = []
    waiter = threading.Thread(target=lambda: got.append(budget.wait_for(30, flag)))
    waiter.start()
    waiter.join(0.3)
    assert got == []
    budget.give_back(0, 80)
    waiter.join(5)
    assert got == [True] and budget.held == 0
    budget.take(1, 500)  # bigger than the budget, with nothing held: it fits
    assert budget.held == 500 and not budget.fits(1)
    flag.stop()
    assert budget.wait_for(1, flag) is False  # a stopping run does not wait


class _Unkillable:
    """A stand-in for a child stuck in the kernel (D state), which outlives SIGKILL: no real
    process can be put in that state from a test."""

    pid, exitcode = 4242, None

    def join(self, timeout=None):
        time.sleep(min(timeout or 0, 0.05))

    def is_alive(self):
        return True

    def kill(self):
        self.killed = True


def test_the_way_out_never_waits_on_a_child_that_cannot_exit(caplog):
    import multiprocessing.process

    from snactok.engine.ipc import Inbox
    from snactok.engine.processes import Child, Supervisor
    from snactok.engine.state import Board

    stuck = _Unkillable()
    multiprocessing.process._children.add(stuck)
    board = Board(tmp.get_context("spawn"), 1)
    supervisor = Supervisor([Child("device worker 0 (cuda:0)", 0, stuck, -1)], board, Inbox(), [], 600)
    supervisor.started.append(supervisor.children[0])
    t0 = time.monotonic()
    supervisor.shutdown(clean=False)
    assert time.monotonic() - t0 < 5 and stuck.killed
    assert stuck not in multiprocessing.process._children  # the exit handler will not join it
    assert "has not exited 3 s after SIGKILL: it is stuck in the kernel" in caplog.text
