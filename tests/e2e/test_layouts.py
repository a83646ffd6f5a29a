"""Local sources in every layout `datasets` itself writes or reads, end to end through encode.py:
a `save_to_disk` dir, a folder of Parquet shards, one Parquet, JSONL or CSV file, and a Hub
snapshot on disk. Each run's rows (ids, text, speakers, and tokens) must be the source's, in the
source's order, and the same whether the source is read whole or streamed."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from helpers import ROOT, demo_rows, local_dataset, refused, run_cli, run_rows

from snactok.inputs.sources import open_sources
from snactok.inputs.units import plan_units

pytestmark = pytest.mark.slow

ROWS = 6


@pytest.fixture(scope="module")
def source():
    """Six demo clips with a string id, text and speaker; audio as bytes, and as paths."""
    picked = demo_rows()[:ROWS]
    paths = [str(ROOT / "data" / "demo" / r["file_name"]) for r in picked]
    return {
        "id": [f"utt-{i:03d}-{r['file_name']}" for i, r in enumerate(picked)],
        "text": [r["text"] for r in picked],
        "speaker": [r["speaker"] for r in picked],
        "paths": paths,
        "bytes": [open(p, "rb").read() for p in paths],
    }


def _with_bytes(source) -> datasets.Dataset:
    audio = [{"bytes": b, "path": None} for b in source["bytes"]]
    data = datasets.Dataset.from_dict(
        {"id": source["id"], "text": source["text"], "speaker": source["speaker"], "audio": audio}
    )
    return data.cast_column("audio", datasets.Audio(decode=False))


def _with_paths(source) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {k: source[k] for k in ("id", "text", "speaker")} | {"audio": source["paths"]}
    )


def _parquet_shards(folder, source) -> None:
    """Hub-style shard names: train-00000-of-00002.parquet, ..."""
    data = _with_bytes(source)
    folder.mkdir(parents=True)
    for i, part in enumerate((range(0, 4), range(4, ROWS))):
        data.select(part).to_parquet(str(folder / f"train-{i:05d}-of-00002.parquet"))


def _hub_snapshot(root, source):
    """What `hf download <repo> --repo-type dataset --local-dir root` leaves: a README whose
    `configs:` name the data files, here LibriSpeech's shape (config clean, split train.100)."""
    _parquet_shards(root / "clean" / "train.100", source)
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: clean\n  data_files:\n  - split: train.100\n"
        "    path: clean/train.100/*.parquet\n---\n# A dataset card\n"
    )
    return root


LAYOUTS = {
    "save_to_disk": lambda d, s: _with_bytes(s).save_to_disk(str(d / "saved")) or d / "saved",
    "parquet shards": lambda d, s: _parquet_shards(d / "shards", s) or d / "shards",
    "parquet file": lambda d, s: _with_bytes(s).to_parquet(str(d / "one.parquet")) and d / "one.parquet",
    "jsonl file": lambda d, s: _with_paths(s).to_json(str(d / "one.jsonl")) and d / "one.jsonl",
    "csv file": lambda d, s: _with_paths(s).to_csv(str(d / "one.csv"), index=False) and d / "one.csv",
}


def _all_rows(args: list[str], run_dir: Path, weights: Path) -> list[dict]:
    """Every row `encode.py <args>` writes on runtime=debug without a row limit."""
    run = [*args, f"codec.weights={weights}", "runtime=debug", "runtime.max_rows=null"]
    proc = run_cli([*run, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_rows(run_dir)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_local_layout_gives_the_source_rows_ids_text_and_speakers(
    layout, source, tmp_path, weights_dir
):
    path = LAYOUTS[layout](tmp_path, source)
    run_dir = tmp_path / "run"
    args = ["dataset=local_folder", f"dataset.path={path}", "dataset.sources.0.id_column=id"]
    args += ["dataset.sources.0.speaker_column=speaker", "output.lines_per_file=4"]
    rows = _all_rows(args, run_dir, weights_dir("snac_24khz"))
    assert [r["id"] for r in rows] == source["id"]
    assert [r["text"] for r in rows] == source["text"]
    assert [r["speaker"] for r in rows] == source["speaker"]
    assert all(r["token_lengths"][0] > 0 for r in rows)
    header = json.loads((run_dir / "manifest.jsonl").read_text().splitlines()[0])
    assert header["sources"][0]["rows"] == ROWS


def test_every_layout_gives_the_same_tokens(source, tmp_path, weights_dir):
    """The same audio as bytes (Parquet) and as paths (CSV) encodes to the same tokens."""
    tokens = []
    for layout in ("parquet file", "csv file"):
        path = LAYOUTS[layout](tmp_path, source)
        run_dir = tmp_path / layout.replace(" ", "_")
        proc = run_cli(
            [
                "dataset=local_folder",
                f"dataset.path={path}",
                "dataset.sources.0.id_column=id",
                f"codec.weights={weights_dir('snac_24khz')}",
                "runtime=debug",
                "runtime.max_rows=null",
                f"hydra.run.dir={run_dir}",
            ]
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        tokens.append([[r[f"snac_layer_{i}"] for i in (1, 2, 3)] for r in run_rows(run_dir)])
    assert tokens[0] == tokens[1]


def test_an_unreadable_source_says_what_was_found_before_anything_starts(tmp_path, weights_dir):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "table.xlsx").write_bytes(b"PK\x03\x04")
    (folder / "blob.bin").write_bytes(b"\x00" * 10)
    for path, expected in (
        (folder, "Found 1 .bin, 1 .xlsx"),
        (folder / "table.xlsx", "a single file must be one of"),
    ):
        text = refused(
            ["dataset=local_folder", f"dataset.path={path}"], tmp_path / "run", weights_dir("snac_24khz")
        )
        assert "config error" in text and expected in text, text[-3000:]


def test_id_and_speaker_columns_are_found_by_name_and_the_log_says_so(source, tmp_path, weights_dir):
    """A Hub-style Parquet with `id` and `speaker` columns and no column settings: its ids and
    speakers are used (`auto`), and the log line names them; `speaker_column=null` drops it."""
    path = LAYOUTS["parquet file"](tmp_path, source)
    args = [
        "dataset=local_folder",
        f"dataset.path={path}",
        f"codec.weights={weights_dir('snac_24khz')}",
        "runtime=debug",
        "runtime.max_rows=3",
    ]
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'auto'}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = run_rows(tmp_path / "auto")
    assert [(r["id"], r["speaker"]) for r in rows] == list(
        zip(source["id"], source["speaker"], strict=True)
    )[:3]
    log = proc.stdout + proc.stderr
    assert "columns audio 'audio' (auto), text 'text', speaker 'speaker' (auto), id 'id' (auto)" in log
    proc = run_cli([*args, "dataset.sources.0.speaker_column=null", f"hydra.run.dir={tmp_path / 'off'}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all("speaker" not in r for r in run_rows(tmp_path / "off"))
    assert "speaker none, id 'id' (auto)" in proc.stdout + proc.stderr


def test_a_hub_snapshot_on_disk_reads_by_config_and_split_streamed_too(source, tmp_path, weights_dir):
    root = _hub_snapshot(tmp_path / "librispeech_asr", source)
    for streaming in ("false", "true"):
        args = ["dataset=librispeech", "dataset.sources.0.hub=null", f"dataset.sources.0.path={root}"]
        args += ["dataset.sources.0.speaker_column=speaker", f"dataset.streaming={streaming}"]
        rows = _all_rows(args, tmp_path / f"streaming-{streaming}", weights_dir("snac_24khz"))
        assert [r["id"] for r in rows] == source["id"]
        assert [(r["text"], r["speaker"]) for r in rows] == list(
            zip(source["text"], source["speaker"], strict=True)
        )
        assert {r["lang"] for r in rows} == {"en"}


def _read_all(path, streaming: bool, **settings) -> list[tuple]:
    # id_column=None: ids are row indices, the ids that depend on reading in order
    cfg = local_dataset(path, streaming, **({"id_column": None} | settings))
    source = open_sources(cfg, None)[0]
    rows = []
    for unit in plan_units([source], 4):
        shard = unit.number if unit.shard else None
        rows += [
            (i, r["id"], r["text"], r["speaker"]) for i, r in source.read(unit.start, unit.stop, shard)
        ]
    return rows


@pytest.mark.parametrize("layout", [*LAYOUTS, "save_to_disk dict", "hub snapshot"])
def test_streaming_gives_the_same_ids_and_order_as_a_whole_load(layout, source, tmp_path):
    """Without an id column, ids are row indices: a stream must count each input shard's rows
    (Parquet footers, Arrow batches, JSON lines, CSV records) to number them as a whole load."""
    settings = {}
    if layout == "save_to_disk dict":
        data = _with_bytes(source)
        datasets.DatasetDict({"train": data.select(range(2)), "dev": data}).save_to_disk(
            str(tmp_path / "d")
        )
        path, settings = tmp_path / "d", {"split": "dev"}
    elif layout == "hub snapshot":
        path = _hub_snapshot(tmp_path / "snap", source)
        settings = {"config": "clean", "split": "train.100"}
    else:
        path = LAYOUTS[layout](tmp_path, source)
    whole = _read_all(path, False, **settings)
    assert [(i, rid, text, speaker) for i, rid, text, speaker in whole] == [
        (i, i, text, speaker)
        for i, (text, speaker) in enumerate(zip(source["text"], source["speaker"], strict=True))
    ]
    assert _read_all(path, True, **settings) == whole


def test_two_snapshots_of_one_name_read_their_own_rows(source, tmp_path):
    """datasets keys the cache of a folder whose README `configs:` pick its files by the folder
    name and config only; each snapshot must still read its own files, whole and streamed."""
    other = dict(source, text=[t.upper() for t in source["text"]])
    settings = {"config": "clean", "split": "train.100"}
    for streaming in (False, True):
        for src in (source, other):
            root = _hub_snapshot(tmp_path / f"{streaming}-{src['text'][0][:4]}" / "snapshot", src)
            texts = [text for _, _, text, _ in _read_all(root, streaming, **settings)]
            assert texts == src["text"]
