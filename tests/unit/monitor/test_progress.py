"""Progress: a bar per reader and per device plus a total on a terminal; log lines elsewhere."""

from __future__ import annotations

import logging
import multiprocessing as mp

from snactok.engine.state import Board, Phase, Tally
from snactok.monitor.progress import Progress


def _tally(counts: list[tuple[float, float]], units: list[int] | None = None) -> Tally:
    """Shared counters holding (items, audio seconds) per process, and each device's unit."""
    ctx = mp.get_context("spawn")
    board = None
    if units is not None:
        board = Board(ctx, len(units))
        for slot, unit in enumerate(units):
            board.enter(slot, Phase.ENCODING, unit)
    tally = Tally(ctx, len(counts), board)
    for slot, (items, seconds) in enumerate(counts):
        tally.add(slot, items, seconds)
    return tally


def test_terminal_bars_per_reader_and_device_with_a_total(capsys):
    progress = Progress(
        total_rows=10,
        readers=2,
        devices=["cpu", "cpu"],
        interval=5.0,
        unit_names=["demo-default-train-00000"],
        tty=True,
    )
    reader_stats = _tally([(3, 7.5), (4, 9.0)])
    device_stats = _tally([(2, 5.0), (3, 6.0)], units=[0, 0])
    progress.update(reader_stats, device_stats, done=5, rejected={"decode_error": 1}, force=True)
    bars = {bar.desc: bar for bar in progress._bars}
    assert sorted(bars) == ["cpu worker 0", "cpu worker 1", "reader 0", "reader 1", "total"]
    assert (bars["reader 1"].n, bars["cpu worker 1"].n, bars["total"].n, bars["total"].total) == (
        4,
        3,
        5,
        10,
    )
    assert "demo-default-train-00000" in bars["cpu worker 0"].postfix
    assert bars["total"].postfix == "rejected 1 (decode_error 1)"
    progress.close()
    assert "total" in capsys.readouterr().err


def test_off_a_terminal_it_logs_a_line(caplog):
    progress = Progress(
        total_rows=10, readers=1, devices=["cpu"], interval=5.0, unit_names=["u"], tty=False
    )
    with caplog.at_level(logging.INFO, logger="snactok.monitor.progress"):
        readers, devices = _tally([(1, 2.0)]), _tally([(4, 8.0)], units=[0])
        progress.update(readers, devices, done=4, rejected={}, force=True)
        progress.update(readers, devices, done=6, rejected={"too_long": 1, "non_finite": 2}, force=True)
    first, second = [r.getMessage() for r in caplog.records]
    assert first.startswith("rows 4/10 (40%)") and "ETA" in first and "cpu: 4 clips" in first
    assert "| rejected 0 |" in first
    assert "| rejected 3 (non_finite 2, too_long 1) |" in second
    assert progress._bars == []
