"""Progress: a bar per reader and per device plus a total on a terminal; log lines elsewhere."""

from __future__ import annotations

import logging

from snactok.monitor.progress import Progress


def test_terminal_bars_per_reader_and_device_with_a_total(capsys):
    progress = Progress(
        total_rows=10,
        readers=2,
        devices=["cpu", "cpu"],
        interval=5.0,
        unit_names=["demo-default-train-00000"],
        tty=True,
    )
    reader_stats = [3.0, 7.5, 4.0, 9.0]  # [items, audio s] per reader
    device_stats = [2.0, 5.0, 0.0, 3.0, 6.0, 0.0]  # [items, audio s, unit] per device
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
        progress.update([1.0, 2.0], [4.0, 8.0, 0.0], done=4, rejected={}, force=True)
        progress.update(
            [1.0, 2.0], [4.0, 8.0, 0.0], done=6, rejected={"too_long": 1, "non_finite": 2}, force=True
        )
    first, second = [r.getMessage() for r in caplog.records]
    assert first.startswith("rows 4/10 (40%)") and "ETA" in first and "cpu: 4 clips" in first
    assert "| rejected 0 |" in first
    assert "| rejected 3 (non_finite 2, too_long 1) |" in second
    assert progress._bars == []
