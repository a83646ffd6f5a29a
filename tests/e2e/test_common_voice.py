"""`dataset=common_voice` on a release in the layout the Mozilla Data Collective ships: per language,
`clips/*.mp3` and unquoted TSVs (`client_id, path, sentence_id, sentence, ..., locale`). Built here
from the bundled MP3s; the headline command `codec=snac_44khz dataset=common_voice` runs on it."""

from __future__ import annotations

import pytest
from helpers import ROOT, common_voice_language, refused, run_cli, run_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv-corpus-21.0")
    mp3s = sorted(p.name for p in (ROOT / "data" / "demo").glob("*.mp3"))
    return root, {
        "en": common_voice_language(root, "en", mp3s[:4]),
        "de": common_voice_language(root, "de", mp3s[4:7]),
    }


def test_the_headline_command_reads_a_release_language_dir(release, tmp_path, weights_dir):
    root, rows = release
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "codec=snac_44khz",
            "dataset=common_voice",
            f"dataset.path={root / 'en'}",
            f"codec.weights={weights_dir('snac_44khz')}",
            "runtime=debug",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = run_rows(run_dir)
    assert [r["id"] for r in got] == [r["path"] for r in rows["en"]]
    assert [r["text"] for r in got] == [r["sentence"] for r in rows["en"]]  # the quote is text
    assert [r["speaker"] for r in got] == [r["client_id"] for r in rows["en"]]
    assert {r["locale"] for r in got} == {"en"} and len(got[0]["snac_layer_4"]) > 0


def test_several_languages_are_several_sources(release, tmp_path, weights_dir):
    root, rows = release
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "dataset=common_voice",
            f"dataset.path={root}",
            "dataset.languages=[en,de]",
            f"codec.weights={weights_dir('snac_24khz')}",
            "runtime=debug",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = run_rows(run_dir)
    assert [(r["id"], r["locale"]) for r in got] == [
        (r["path"], lang) for lang in ("en", "de") for r in rows[lang]
    ]
    shards = sorted(p.name for p in (run_dir / "shards").iterdir())
    assert shards == ["de-default-train-00000.jsonl.gz", "en-default-train-00000.jsonl.gz"]


def test_a_split_the_release_lacks_lists_the_splits_it_has(release, tmp_path, weights_dir):
    root, _ = release
    args = ["dataset=common_voice", f"dataset.path={root / 'en'}", "dataset.sources.0.split=validated"]
    text = refused(args, tmp_path / "run", weights_dir("snac_24khz"))
    assert "without validated.tsv; its splits are ['dev', 'train']" in text, text[-3000:]
