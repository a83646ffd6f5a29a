"""Output formats through real encode.py runs."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from helpers import run_cli

from snactok.codec import orpheus
from snactok.output.files import read_jsonl, sha256_file
from snactok.output.formats import (
    read_shard,
)


@pytest.mark.slow
def test_a_both_run_writes_parquet_that_loads_as_its_jsonl_rows(tmp_path, weights_dir):
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "dataset=demo",
            "runtime=debug",
            "runtime.max_rows=6",
            f"codec.weights={weights_dir('snac_24khz')}",
            "output.format=both",
            "output.flatten=orpheus",
            f"save.local={tmp_path / 'saved'}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = ["demo-default-train-00000.jsonl.gz", "demo-default-train-00000.parquet"]
    assert sorted(p.name for p in (run_dir / "shards").iterdir()) == names
    (record,) = [r for r in read_jsonl(run_dir / "manifest.jsonl") if r["type"] == "shard"]
    assert [f["file"] for f in record["files"]] == [f"shards/{n}" for n in names]
    assert {k: record[k] for k in ("file", "bytes", "sha256")} == record["files"][0]
    for f in record["files"]:
        path = run_dir / f["file"]
        assert (f["bytes"], f["sha256"]) == (path.stat().st_size, sha256_file(path))

    jsonl = read_shard(run_dir / "shards" / names[0])
    data = datasets.load_dataset("parquet", data_files=str(run_dir / "shards" / names[1]), split="train")
    assert data.num_rows == len(jsonl) == 6
    assert data.column_names == list(jsonl[0]) and data.column_names[-1] == "codes"
    for i in (1, 2, 3):
        assert data.features[f"snac_layer_{i}"] == datasets.List(datasets.Value("int16"))
    assert data.features["codes"] == datasets.List(datasets.Value("int32"))
    assert data.to_list() == jsonl

    for row in jsonl:  # real tokens: the flat order inverts to the row's own layers
        codes = np.array(row["codes"])
        assert len(codes) == 7 * row["token_lengths"][0]
        assert codes.min() >= 128266 and codes.max() <= 156937
        layers = orpheus.unflatten(codes)
        assert [x.tolist() for x in layers] == [row[f"snac_layer_{i}"] for i in (1, 2, 3)]
    assert datasets.load_from_disk(str(tmp_path / "saved")).to_list() == jsonl
