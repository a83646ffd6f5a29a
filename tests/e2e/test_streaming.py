"""dataset.streaming=true: a local Parquet dataset of several files read as an IterableDataset,
one unit per input shard (file, or row group with dataset.reshard=true). The output must be the
non-streaming output's rows, in the same global order, with the same tokens; only the shard
boundaries may differ."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ROOT, demo_rows, run_cli, run_rows

FILES = (7, 6, 5)  # rows per Parquet file: 18 rows, uneven
ROW_GROUP = 4  # rows per row group: 2 groups per file


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    """The first 18 demo rows with their audio bytes embedded, in 3 Parquet files of 2 row groups,
    as `push_to_hub` lays a dataset out (data/train-0000N-of-00003.parquet, Audio feature)."""
    root = tmp_path_factory.mktemp("parquet_demo")
    (root / "data").mkdir()
    rows = demo_rows()[: sum(FILES)]
    features = datasets.Features(
        {
            "audio": datasets.Audio(decode=False),
            "text": datasets.Value("string"),
            "speaker": datasets.Value("string"),
        }
    )
    start = 0
    for i, n in enumerate(FILES):
        part = rows[start : start + n]
        start += n
        audio = [
            {"bytes": (ROOT / "data" / "demo" / r["file_name"]).read_bytes(), "path": r["file_name"]}
            for r in part
        ]
        columns = {
            "audio": audio,
            "text": [r["text"] for r in part],
            "speaker": [r["speaker"] for r in part],
        }
        table = pa.Table.from_pydict(columns, schema=features.arrow_schema)  # with HF's features
        pq.write_table(
            table, root / "data" / f"train-{i:05d}-of-{len(FILES):05d}.parquet", row_group_size=ROW_GROUP
        )
    return root


def encode(out, weights, parquet_dir, *extra, env=None, run_dir=None):
    """Run encode.py into `out`; the records of the manifest in `run_dir` (default: `out`)."""
    proc = run_cli(
        [
            "runtime=debug",
            "runtime.max_rows=null",
            "output.lines_per_file=4",
            "wandb.mode=disabled",
            f"codec.weights={weights}",
            f"dataset.sources.0.path={parquet_dir}",
            f"hydra.run.dir={out}",
            *extra,
        ],
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(x) for x in ((run_dir or out) / "manifest.jsonl").read_text().splitlines()]


def shard_records(records):
    return sorted((r for r in records if r["type"] == "shard"), key=lambda r: r["unit"])


@pytest.mark.slow
def test_streamed_parquet_gives_the_rows_and_tokens_of_the_non_streaming_run(
    tmp_path, weights_dir, parquet_dir
):
    weights = weights_dir("snac_24khz")
    cache_plain, cache_stream = tmp_path / "cache_plain", tmp_path / "cache_stream"
    plain = encode(tmp_path / "plain", weights, parquet_dir, env={"HF_DATASETS_CACHE": str(cache_plain)})
    stream = encode(
        tmp_path / "stream",
        weights,
        parquet_dir,
        "dataset.streaming=true",
        env={"HF_DATASETS_CACHE": str(cache_stream)},
    )
    expected = run_rows(tmp_path / "plain")
    assert len(expected) == sum(FILES) and [r["id"] for r in expected] == list(range(sum(FILES)))
    assert run_rows(tmp_path / "stream") == expected

    # units: 4-row ranges without streaming, one per file with it
    assert [(r["start"], r["stop"]) for r in shard_records(plain)] == [
        (0, 4),
        (4, 8),
        (8, 12),
        (12, 16),
        (16, 18),
    ]
    assert [(r["start"], r["stop"]) for r in shard_records(stream)] == [(0, 7), (7, 13), (13, 18)]
    assert stream[0]["fingerprint"]["dataset.streaming"] is True
    shards = stream[0]["fingerprint"]["dataset.sources"][0]["input_shards"]
    assert shards == [[f"train-{i:05d}-of-00003.parquet", n] for i, n in enumerate(FILES)]
    # nothing downloaded or converted: the non-streaming run wrote Arrow files, streaming none
    assert list(cache_plain.rglob("*.arrow"))
    assert not list(cache_stream.rglob("*.arrow"))

    # dataset.reshard=true: a unit per row group, same rows
    rg = encode(
        tmp_path / "reshard", weights, parquet_dir, "dataset.streaming=true", "dataset.reshard=true"
    )
    assert [(r["start"], r["stop"]) for r in shard_records(rg)] == [
        (0, 4),
        (4, 7),
        (7, 11),
        (11, 13),
        (13, 17),
        (17, 18),
    ]
    assert run_rows(tmp_path / "reshard") == expected

    # Resume works by input shard: drop the last committed shard, continue, get the same bytes.
    run_dir = tmp_path / "stream"
    manifest = run_dir / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    lost = max(i for i, x in enumerate(lines) if json.loads(x)["type"] == "shard")
    record = json.loads(lines[lost])
    manifest.write_text("".join(lines[:lost]))
    (run_dir / record["file"]).unlink()
    again = encode(
        tmp_path / "attempt2",
        weights,
        parquet_dir,
        "dataset.streaming=true",
        f"runtime.resume={run_dir}",
        run_dir=run_dir,
    )
    assert [r["unit"] for r in shard_records(again)] == [0, 1, 2]
    resumed = next(r for r in reversed(again) if r["type"] == "summary")
    assert resumed["units_resumed"] == 2 and resumed["units"] == 3
    assert pa.Table.from_pylist(run_rows(run_dir)) == pa.Table.from_pylist(expected)


def test_streaming_a_folder_of_audio_files_is_refused_with_the_reason(tmp_path):
    proc = run_cli(
        ["dataset=demo", "dataset.streaming=true", "runtime=debug", f"hydra.run.dir={tmp_path}"]
    )
    assert proc.returncode == 2
    assert "is a folder of audio files, which is read in place already" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_streamed_json_lines_without_row_counts_commit_as_each_shard_ends(tmp_path, weights_dir):
    """JSON has no row counts: each shard's size is known only once a reader has streamed it, ids
    are `<shard name>/<row>`, and runtime.max_rows (which needs counts) is refused."""
    root = tmp_path / "jsonl"
    (root / "data").mkdir(parents=True)
    rows = demo_rows()[:5]
    for i, part in enumerate((rows[:3], rows[3:])):
        lines = [
            json.dumps(
                {
                    "audio": str(ROOT / "data" / "demo" / r["file_name"]),
                    "text": r["text"],
                    "speaker": r["speaker"],
                }
            )
            for r in part
        ]
        # .json, not .jsonl: a file of JSON lines that is not counted ahead
        (root / "data" / f"train-{i:05d}-of-00002.json").write_text("\n".join(lines) + "\n")
    weights = weights_dir("snac_24khz")
    records = encode(tmp_path / "stream", weights, root, "dataset.streaming=true")
    assert [(r["unit"], r["start"], r["rows_read"]) for r in shard_records(records)] == [
        (0, None, 3),
        (1, None, 2),
    ]
    streamed = run_rows(tmp_path / "stream")
    assert [r["id"] for r in streamed] == [
        f"jsonl-default-train-0000{s}/{i}" for s, i in ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1))
    ]
    encode(tmp_path / "plain", weights, root)
    plain = run_rows(tmp_path / "plain")
    assert [{k: v for k, v in r.items() if k != "id"} for r in streamed] == [
        {k: v for k, v in r.items() if k != "id"} for r in plain
    ]

    refused = run_cli(
        [
            "runtime=debug",
            "runtime.max_rows=2",
            "dataset.streaming=true",
            f"dataset.sources.0.path={root}",
            f"hydra.run.dir={tmp_path / 'x'}",
        ]
    )
    assert refused.returncode == 2
    assert "runtime.max_rows=2 needs each input shard's row count" in refused.stdout + refused.stderr
