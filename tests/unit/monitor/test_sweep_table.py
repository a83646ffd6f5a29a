"""The end-of-sweep table, read through snactok.output.rundir from each job dir's manifest."""

from __future__ import annotations

import json
from pathlib import Path

from snactok.monitor.tracking import format_table, sweep_table

HEADER = {"type": "header", "codec": "snac_24khz", "dataset": "demo"}
SHARD = {"type": "shard", "unit": 0, "file": "shards/a.jsonl.gz", "bytes": 1, "sha256": "x"}
SHARD |= {"rows_read": 3, "rows": 2, "rejected": 1, "audio_seconds": 7.2, "tokens_per_layer": [1]}
SUMMARY = {"type": "summary", "rows_written": 2, "rows_rejected": 1, "audio_seconds": 7200.0}
SUMMARY |= {"audio_seconds_per_second": 3.5}


def job(sweep: Path, name: str, *records: dict, tail: str = "") -> None:
    (sweep / name).mkdir(parents=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (sweep / name / "manifest.jsonl").write_text(lines + tail)


def test_one_row_per_job_in_job_order_finished_or_not(tmp_path):
    job(tmp_path, "10", HEADER, SHARD, SUMMARY)
    job(tmp_path, "2", HEADER, SHARD, {"type": "resume", "attempt_dir": "/x"}, tail='{"type": "sh')
    (tmp_path / "3").mkdir()  # a job that never wrote a manifest is not a run
    rows = sweep_table(tmp_path)
    assert [r["job"] for r in rows] == ["2", "10"]
    assert rows[0] == {
        "job": "2",
        "dataset": "demo",
        "codec": "snac_24khz",
        "rows": None,
        "hours": None,
        "rejected": None,
        "real_time_factor": None,
        "finished": False,
    }
    assert (rows[1]["rows"], rows[1]["hours"], rows[1]["rejected"]) == (2, 2.0, 1)
    assert rows[1]["real_time_factor"] == 3.5 and rows[1]["finished"]
    assert format_table(rows).splitlines()[2].startswith("| 2 | demo | snac_24khz | - |")
