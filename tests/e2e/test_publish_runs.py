"""Publishing real runs (encode.py, and the pipeline's run() with planted paths): the Hub's upload
endpoint is the one stand-in (the `hub` fixture, tests/fake_hub.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from fake_hub import REPO, URL, card, code_block, load_repo, uploaded_files
from fake_run import LABEL
from helpers import FAKE_SHA, populate_hf_cache, run_cli, run_rows

from snactok.tools.publish import publish


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, weights_dir):
    """`python encode.py` with the default Hub weights from a local HF cache (so the manifest has
    a weights commit), writing JSONL and Parquet with Orpheus codes: 6 demo rows, 2 per unit,
    clips over 2.6 s rejected; the first unit's two rows are both too long, so it is empty."""
    root = tmp_path_factory.mktemp("publish_real")
    populate_hf_cache(root / "hf", "hubertsiuzdak/snac_24khz", weights_dir("snac_24khz"))
    run_dir = root / "run"
    proc = run_cli(
        [
            "runtime=debug",
            "runtime.max_rows=6",
            "output.lines_per_file=2",
            "runtime.max_duration=2.6",
            "output.format=both",
            "output.flatten=orpheus",
            f"hydra.run.dir={run_dir}",
        ],
        env={"HF_HUB_CACHE": str(root / "hf" / "hub")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return SimpleNamespace(dir=run_dir, hub_cache=root / "hf" / "hub")


@pytest.mark.slow
def test_real_run_publishes_loads_and_decodes_as_the_card_says(real_run, hub, tmp_path):
    url = publish(real_run.dir, REPO, api=hub.api)
    assert url == URL
    header = json.loads((real_run.dir / "manifest.jsonl").read_text().splitlines()[0])
    meta, body = card(hub.uploaded)

    assert uploaded_files(hub.uploaded) == [
        "README.md",
        "manifest.jsonl",
        "rejects.jsonl",
        *[f"shards/{LABEL}-{i:05d}{s}" for i in range(3) for s in (".jsonl.gz", ".parquet")],
    ]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "shards/*.parquet"}]
    assert "| `codes` | list<int32> | Orpheus-style flat codes" in body
    assert f"at commit `{FAKE_SHA}`" in body and header["weights"]["sha256"] in body
    assert "| rows written | 2 |" in body and "| rows rejected | 4 (too_long: 4) |" in body
    assert "| shards | 3 `.parquet` files, 1 of them empty |" in body
    data = load_repo(hub.uploaded, tmp_path / "cache")
    assert data.to_list() == run_rows(real_run.dir)  # Parquet, read as the Hub would = the JSONL
    assert data["id"] == ["clip_003.ogg", "clip_005.flac"]

    # The card's decoding snippet, run as written but for where the dataset comes from.
    snippet = code_block(body, "Decoding tokens back to audio")
    assert f'load_dataset("{REPO}"' in snippet
    snippet = snippet.replace(f'"{REPO}"', repr(str(hub.uploaded)))
    snippet += 'print(tuple(audio.shape), round(row["duration"] * 24000), bool(audio.abs().max() > 0))\n'
    proc = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(real_run.hub_cache),
            "HF_DATASETS_CACHE": str(tmp_path / "cache2"),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shape, samples, audible = proc.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert shape == f"({samples},)" and audible == "True"  # trimmed to the clip, not silent
