"""snactok.output.rundir: the one reader of a run dir, on manifests written by hand."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from snactok.output.rundir import RunDirError, ShardFile, read_run


def shard(unit: int, *formats: str, rows: int = 2) -> dict:
    files = [
        {"file": f"shards/s-{unit:05d}{f}", "bytes": 10 + unit, "sha256": f"{unit}{f}"} for f in formats
    ]
    record = {"type": "shard", "unit": unit, "source": "s", "rows_read": rows + 1, "rows": rows}
    record |= {"rejected": 1, "audio_seconds": 1.5, "tokens_per_layer": [3, 6, 12]}
    return (
        record
        | {"file": files[0]["file"], "bytes": files[0]["bytes"], "sha256": files[0]["sha256"]}
        | ({"files": files} if len(formats) > 1 or formats == (".parquet",) else {})
    )


def write(run_dir: Path, records: list[dict], tail: str = "", rejects: list[dict] = ()) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (run_dir / "manifest.jsonl").write_text(lines + tail)
    (run_dir / "rejects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejects))
    return run_dir


HEADER = {"type": "header", "codec": "snac_24khz", "dataset": "demo", "fingerprint": {"a": 1}}
RESUME = {"type": "resume", "attempt_dir": "/runs/b", "host": "node2"}


def test_a_resumed_run_has_one_header_and_its_resume_records(tmp_path):
    """A resume appends a `resume` record, never a second header; the torn last line of a crash
    and the rejects of a unit that was not committed are not part of the run."""
    run_dir = write(
        tmp_path / "run",
        [HEADER, shard(0, ".jsonl.gz"), RESUME, shard(1, ".jsonl.gz")],
        tail='{"type": "shard", "unit": 2, "ro',
        rejects=[{"unit": 0, "row": 2, "reason": "too_long"}, {"unit": 2, "row": 8, "reason": "x"}],
    )
    run = read_run(run_dir)
    assert run.header.codec == "snac_24khz" and run.header.fingerprint == {"a": 1}
    assert [s.unit for s in run.shards] == [0, 1]
    assert [(r.attempt_dir, r.host) for r in run.resumes] == [("/runs/b", "node2")]
    assert not run.finished and run.rows == 4 and run.rejected == 2
    assert [r["unit"] for r in run.reject_records()] == [0]
    assert run.manifest.endswith(b"\n") and b'"unit": 2' not in run.manifest


def test_the_first_header_is_the_runs(tmp_path, caplog):
    """`open_run_dir` checks the first header's fingerprint, and merge writes its header first:
    a later one (a manifest pieced together by hand) is ignored, with a warning."""
    other = HEADER | {"codec": "snac_44khz", "fingerprint": {"a": 2}}
    run_dir = write(tmp_path / "run", [HEADER, shard(0, ".jsonl.gz"), other])
    with caplog.at_level(logging.WARNING):
        run = read_run(run_dir)
    assert run.header.codec == "snac_24khz" and run.header.fingerprint == {"a": 1}
    assert "holds 2 headers; the first is the run's" in caplog.text


def test_the_summary_is_the_last_one_after_every_shard(tmp_path):
    summary = {"type": "summary", "rows_written": 2, "audio_seconds": 1.5}
    done = read_run(write(tmp_path / "done", [HEADER, shard(0, ".jsonl.gz"), summary, RESUME, summary]))
    assert done.finished and done.summary.rows_written == 2
    stale = read_run(
        write(tmp_path / "stale", [HEADER, shard(0, ".jsonl.gz"), summary, shard(1, ".jsonl.gz")])
    )
    assert not stale.finished


def test_files_of_each_format_and_of_records_older_than_files(tmp_path):
    both = read_run(
        write(
            tmp_path / "both",
            [HEADER, shard(1, ".jsonl.gz", ".parquet"), shard(0, ".jsonl.gz", ".parquet", rows=0)],
        )
    )
    assert both.shards[1].files == (
        ShardFile("shards/s-00001.jsonl.gz", 11, "1.jsonl.gz"),
        ShardFile("shards/s-00001.parquet", 11, "1.parquet"),
    )
    assert both.shard_files(non_empty=True) == [
        both.dir / "shards/s-00001.jsonl.gz",
        both.dir / "shards/s-00001.parquet",
    ]
    assert both.data_files() == [
        both.dir / "shards/s-00000.jsonl.gz",
        both.dir / "shards/s-00001.jsonl.gz",
    ]
    assert both.file_names()[0] == "shards/s-00000.jsonl.gz" and len(both.file_names()) == 4
    parquet = read_run(write(tmp_path / "parquet", [HEADER, shard(0, ".parquet")]))
    assert parquet.data_files() == [parquet.dir / "shards/s-00000.parquet"]
    old = read_run(write(tmp_path / "old", [HEADER, shard(0, ".jsonl.gz")]))  # no `files` key
    assert old.shards[0].files == (ShardFile("shards/s-00000.jsonl.gz", 10, "0.jsonl.gz"),)


def test_a_dir_without_a_run_is_refused_with_what_to_give(tmp_path):
    with pytest.raises(RunDirError, match="manifest.jsonl does not exist; give the dir encode.py wrote"):
        read_run(tmp_path)
    with pytest.raises(RunDirError, match="has no header record"):
        read_run(write(tmp_path / "run", [shard(0, ".jsonl.gz")]))
