"""snactok-inspect and snactok.tools.report on a real run dir: the plots are PNGs, the WAVs have the
lengths the tokens and the sources give, codebook usage matches the shards, W&B gets the media."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_png

from snactok.output.rundir import read_metrics
from snactok.tools.plots import codebook_usage, plot_throughput


def test_codebook_usage_counts():
    counts = np.zeros((2, 8), np.int64)
    counts[0, [1, 3]] = [3, 1]
    counts[1, :] = 1
    first, second = codebook_usage(counts)
    assert (first["codes_used"], first["fraction_used"], first["tokens"]) == (2, 0.25, 4)
    assert second["fraction_used"] == 1.0
    assert second["perplexity"] == pytest.approx(8.0)  # uniform over 8 codes


def test_throughput_plot_from_metrics_with_a_torn_line(tmp_path):
    snapshots = [
        {
            "type": "metrics",
            "time": t,
            "audio_seconds_per_second": 10.0 * t,
            "rows_done": 5 * t,
            "rows_rejected": t,
            "device": {"cuda:0": {"audio_seconds_per_second": 10.0 * t}},  # nested works too
        }
        for t in (1, 2, 3)
    ]
    shard = {"type": "shard", "time": 2.5, "shard/rows": 10, "shard/file": "shards/x.jsonl.gz"}
    lines = [json.dumps(r) for r in (*snapshots[:2], shard, snapshots[2])]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + '\n{"time": 4, "audio_sec')  # the run died mid-write
    metrics = read_metrics(tmp_path)
    assert metrics == snapshots
    assert read_metrics(tmp_path / "absent") == []
    assert_png(plot_throughput(metrics, tmp_path / "throughput.png"))
