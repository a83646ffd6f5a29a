"""WebDataset tar shards end to end through encode.py, built here from the bundled clips.

Emilia's layout (amphion's preprocessors/Emilia/README.md, VyvoTTS's vyvotts/tokenize_emilia.py):
`Emilia/EN/EN-B000000.tar`, each sample `<key>.mp3` + `<key>.json` with id, wav, text (starting
with a space), duration, speaker, language and dnsmos. Here as a Hub snapshot on disk, read whole
and streamed; and a plain folder of `<key>.flac` + `<key>.json` tars through `local_folder`.
"""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest
from helpers import ROOT, local_dataset, refused, run_cli, run_rows

from snactok.errors import ConfigError
from snactok.inputs.sources import open_sources

pytestmark = pytest.mark.slow


def _tar(path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def _emilia_json(key: str, i: int) -> dict:
    block = key.rsplit("_", 2)[0]
    return {
        "id": key,
        "wav": f"{block}/{key.rsplit('_', 1)[0]}/mp3/{key}.mp3",
        "text": f" Sample {i} of the block, said once.",
        "duration": 2.5,
        "speaker": f"{key.rsplit('_', 1)[0]}",
        "language": "en",
        "dnsmos": round(3.0 + i / 10, 4),
    }


@pytest.fixture(scope="module")
def emilia(tmp_path_factory):
    """A snapshot with two tars (3 + 2 samples); returns (root, the samples' json in order)."""
    root = tmp_path_factory.mktemp("Emilia-Dataset")
    mp3s = sorted((ROOT / "data" / "demo").glob("*.mp3"))
    metas = []
    for t, picked in enumerate((mp3s[:3], mp3s[3:5])):
        samples = []
        for i, mp3 in enumerate(picked):
            meta = _emilia_json(f"EN_B0000{t}_S0000{i % 2}_W00000{i}", len(metas))
            metas.append(meta)
            samples.append((meta["id"], {"json": json.dumps(meta).encode(), "mp3": mp3.read_bytes()}))
        _tar(root / "Emilia" / "EN" / f"EN-B00000{t}.tar", samples)
    (root / "Emilia" / "DE").mkdir()  # another language, not picked by data_files
    return root, metas


def _emilia_args(root, weights, run_dir, *more):
    return [
        "dataset=emilia",
        "dataset.sources.0.hub=null",
        f"dataset.sources.0.path={root}",
        f"codec.weights={weights}",
        "runtime=debug",
        "runtime.max_rows=null",
        f"hydra.run.dir={run_dir}",
        *more,
    ]


def test_emilia_read_whole_and_streamed_gives_the_source_rows(emilia, tmp_path, weights_dir):
    root, metas = emilia
    weights = weights_dir("snac_24khz")
    got = {}
    for streaming in ("false", "true"):
        run_dir = tmp_path / f"streaming-{streaming}"
        keep = "[json.dnsmos,json.language]"
        args = _emilia_args(root, weights, run_dir, f"dataset.streaming={streaming}")
        args.append(f"dataset.sources.0.keep_columns={keep}")
        proc = run_cli([*args, "output.format=both", "output.lines_per_file=2"])
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-3000:]
        assert "audio 'mp3' (auto), text 'json.text', speaker 'json.speaker', id '__key__'" in log
        rows = run_rows(run_dir)
        assert [r["id"] for r in rows] == [m["id"] for m in metas]
        assert [r["text"] for r in rows] == [m["text"] for m in metas]
        assert [r["speaker"] for r in rows] == [m["speaker"] for m in metas]
        assert [(r["dnsmos"], r["language"]) for r in rows] == [
            (m["dnsmos"], m["language"]) for m in metas
        ]
        table = pq.read_table(sorted((run_dir / "shards").glob("*.parquet"))[0])
        assert str(table.schema.field("dnsmos").type) == "double"
        got[streaming] = {r["id"]: r["snac_layer_1"] for r in rows}
    assert got["false"] == got["true"]  # same rows, same tokens, whichever way they are read


def _flac_tars(folder) -> list[dict]:
    flacs = sorted((ROOT / "data" / "demo").glob("*.flac"))[:3]
    metas = [{"text": f"flac {i}", "speaker": f"spk{i % 2}"} for i in range(3)]
    samples = [
        (f"utt{i:03d}", {"flac": f.read_bytes(), "json": json.dumps(m).encode()})
        for i, (f, m) in enumerate(zip(flacs, metas, strict=True))
    ]
    _tar(folder / "shard-000.tar", samples)
    return metas


def test_a_folder_of_flac_tars_reads_with_json_fields(tmp_path, weights_dir):
    folder = tmp_path / "wds"
    metas = _flac_tars(folder)
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "dataset=local_folder",
            f"dataset.path={folder}",
            "dataset.sources.0.text_column=json.text",
            "dataset.sources.0.speaker_column=json.speaker",
            f"codec.weights={weights_dir('snac_24khz')}",
            "runtime=debug",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = run_rows(run_dir)
    assert [r["id"] for r in rows] == ["utt000", "utt001", "utt002"]
    assert [(r["text"], r["speaker"]) for r in rows] == [(m["text"], m["speaker"]) for m in metas]


def test_a_json_field_that_is_not_there_fails_before_anything_starts(tmp_path, weights_dir):
    folder = tmp_path / "wds"
    _flac_tars(folder)
    args = [
        "dataset=local_folder",
        f"dataset.path={folder}",
        "dataset.sources.0.text_column=json.transcript",
    ]
    text = refused(args, tmp_path / "run", weights_dir("snac_24khz"))
    assert "dataset column 'json' has no field 'transcript'" in text, text[-3000:]
    assert (
        "its fields are ['text', 'speaker']: e.g. dataset.sources.0.text_column=json.text" in text
        and "Traceback" not in text
    )


def _source(path, **settings):
    return local_dataset(path, **({"text_column": "json.text"} | settings))


def test_text_only_tars_and_clashing_kept_columns_are_refused(tmp_path):
    folder = tmp_path / "wds"
    _flac_tars(folder)
    with pytest.raises(ConfigError, match="'json.speaker' would be written as column 'speaker'"):
        open_sources(_source(folder, keep_columns=["json.speaker"]), None)
    with pytest.raises(ConfigError, match="end in the same name twice"):
        open_sources(_source(folder, keep_columns=["json.text", "text"]), None)
    silent = tmp_path / "silent"
    _tar(silent / "a.tar", [(f"k{i}", {"json": b'{"text": "x"}'}) for i in range(2)])
    with pytest.raises(ConfigError, match="has no audio column: none is named `audio`"):
        open_sources(_source(silent), None)
