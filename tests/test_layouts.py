"""Local sources in every layout `datasets` itself writes or reads, end to end through encode.py:
a `save_to_disk` dir, one Parquet file, one JSONL file, one CSV file. Each run's rows (ids, text,
speakers, and tokens) must be the source's, in the source's order."""

from __future__ import annotations

import json

import datasets
import pytest
from conftest import ROOT, demo_rows, run_cli, run_rows

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


LAYOUTS = {
    "save_to_disk": lambda d, s: _with_bytes(s).save_to_disk(str(d / "saved")) or d / "saved",
    "parquet file": lambda d, s: _with_bytes(s).to_parquet(str(d / "one.parquet")) and d / "one.parquet",
    "jsonl file": lambda d, s: _with_paths(s).to_json(str(d / "one.jsonl")) and d / "one.jsonl",
    "csv file": lambda d, s: _with_paths(s).to_csv(str(d / "one.csv"), index=False) and d / "one.csv",
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_local_layout_gives_the_source_rows_ids_text_and_speakers(
    layout, source, tmp_path, weights_dir
):
    path = LAYOUTS[layout](tmp_path, source)
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "dataset=local_folder",
            f"dataset.path={path}",
            "dataset.sources.0.id_column=id",
            "dataset.sources.0.speaker_column=speaker",
            f"codec.weights={weights_dir('snac_24khz')}",
            "runtime=debug",
            "runtime.max_rows=null",
            "output.lines_per_file=4",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = run_rows(run_dir)
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
        proc = run_cli(
            [
                "dataset=local_folder",
                f"dataset.path={path}",
                f"codec.weights={weights_dir('snac_24khz')}",
                "runtime=debug",
                f"hydra.run.dir={tmp_path / 'run'}",
            ]
        )
        text = proc.stdout + proc.stderr
        assert proc.returncode == 2, text[-3000:]
        assert "config error" in text and expected in text and "Traceback" not in text, text[-3000:]


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
    assert "columns audio 'audio', text 'text', speaker 'speaker' (auto), id 'id' (auto)" in log
    proc = run_cli([*args, "dataset.sources.0.speaker_column=null", f"hydra.run.dir={tmp_path / 'off'}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all("speaker" not in r for r in run_rows(tmp_path / "off"))
    assert "speaker none, id 'id' (auto)" in proc.stdout + proc.stderr
