"""How `runtime.plan=true` words a plan it cannot fully estimate (no processes)."""

from __future__ import annotations

from snactok.engine.estimate import format_plan


def test_the_plan_says_when_it_has_no_rate_or_no_row_counts():
    plan = {
        "dataset": "emilia",
        "codec": "snac_24khz",
        "job": [3, 8],
        "units": 125,
        "units_total": 1000,
        "files": 125,
        "rows": None,
        "sampled_rows": 0,
        "mean_seconds_per_row": None,
        "audio_hours": None,
        "tokens_per_audio_second": 82.03,
        "output_bytes": None,
        "devices": ["cuda:0"],
        "rate": None,
        "pipeline_rate": None,
        "bound": None,
        "eta_seconds": None,
    }
    text = format_plan(plan)
    assert "job 3 of 8" in text and "units     125 of 1000" in text
    assert "unknown (no row counts in metadata)" in text
    assert "ETA       unknown: no run on this machine has measured ['cuda:0']" in text
    assert "pipeline  not measured for this dataset and codec: a dry run measures it" in text
