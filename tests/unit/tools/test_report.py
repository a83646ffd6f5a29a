"""snactok.tools.report on run dirs made without encoding: every output.format gives its rows."""

from __future__ import annotations

import json

import pytest
from fake_run import make_run

from snactok.tools.report import write_report


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "both"])
def test_report_scans_every_row_whatever_the_format(tmp_path, fmt):
    """report=true output.format=parquet used to find no rows: only *.jsonl.gz was looked for.
    With both formats the rows are read once, not twice."""
    run_dir = make_run(tmp_path / "run", units=((3, 0), (0, 3), (2, 1)), fmt=fmt)

    write_report(run_dir, num_audio=0)

    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["rows_scanned"] == 5
    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    audio = sum(r["audio_seconds"] for r in records if r["type"] == "shard")
    assert summary["audio_seconds_scanned"] == pytest.approx(audio)
    tokens = [sum(r["tokens_per_layer"][i] for r in records if r["type"] == "shard") for i in range(3)]
    assert [u["tokens"] for u in summary["codebook_usage"]] == tokens
    assert (run_dir / "report" / "codebook_usage.png").is_file()
