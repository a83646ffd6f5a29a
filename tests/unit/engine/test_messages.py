"""What crosses between processes: messages and read blocks survive the pipe's pickle whole, and
the shared counters read back what each process added."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np

from snactok.engine.messages import Batch, Reject, UnitRead, WorkerReady
from snactok.engine.reader import Block, read_blocks
from snactok.engine.state import Board, Phase, Tally
from snactok.inputs.units import Unit


def test_messages_arrive_equal_and_typed():
    codes = np.arange(12, dtype=np.int16).reshape(2, 6)
    keys = [(0, 3, {"id": "a.wav", "duration": 0.5}), (1, 4, {"id": 7, "duration": 0.25})]
    batch = pickle.loads(pickle.dumps(Batch(0, keys, codes, 2048, [(1, 6, 6)]), protocol=5))
    assert isinstance(batch, Batch) and batch.keys == keys and batch.length == 2048
    np.testing.assert_array_equal(batch.codes, codes)
    assert batch.checks == [(1, 6, 6)]
    for msg in (
        Reject(2, 9, "b.wav", "too_long", "12.0 s > 10.0 s"),
        UnitRead(3, 41),
        WorkerReady(0, 1.5, "eager", {"passed": True, "path": "eager", "failed": []}),
    ):
        assert pickle.loads(pickle.dumps(msg, protocol=5)) == msg


def test_read_blocks_split_row_ranges_and_keep_a_streamed_shard_whole():
    units = [
        Unit(0, 0, 0, 0, 5, "s-00000"),
        Unit(1, 1, 2, None, None, "t-00002", shard=True),
    ]
    assert read_blocks(units, 2) == [
        Block(0, 0, 0, 2),
        Block(0, 0, 2, 4),
        Block(0, 0, 4, 5),
        Block(1, 1, None, None, 2),
    ]


def test_a_tally_counts_per_process_and_a_devices_unit_is_the_boards():
    ctx = mp.get_context("spawn")
    board = Board(ctx, 2)
    tally = Tally(ctx, 2, board)
    tally.add(0, 3, 1.5)
    tally.add(1, 2, 4.0)
    tally.add(1, 1, 0.5)
    assert len(tally) == 2 and (tally.items(1), tally.seconds(1)) == (3, 4.5)
    assert (tally.total_items(), tally.total_seconds()) == (6, 6.0)
    assert tally.unit(1) == -1
    board.enter(1, Phase.ENCODING, 7)
    assert tally.unit(1) == 7 and tally.unit(0) == -1
    assert Tally(ctx, 1).unit(0) == -1  # a reader's tally has no Board
