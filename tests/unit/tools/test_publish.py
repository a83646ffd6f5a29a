"""Publishing a run to the HF Hub: what is uploaded, the card, and that the card's config loads.

The Hub cannot be reached from tests, so `HfApi` is replaced at that boundary and only there, by
`create_autospec(HfApi, instance=True)`: it carries HfApi's real method signatures, so calling a
method that does not exist, or one with a wrong argument, fails the test (see
`test_the_fake_hub_is_strict`). Its `upload_folder` copies what the real one would send (the
folder's files filtered by the same `filter_repo_objects`) into `uploaded/`; the tests then load
that copy with `datasets.load_dataset(<dir>)`, which reads the card's `configs:` exactly as
`load_dataset("<user>/<name>")` does on the Hub. Everything up to the boundary is the real code.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import REPO, URL, card, code_block, load_repo, uploaded_files
from fake_run import LABEL, WEIGHTS_SHA256, make_run, orpheus_codes
from helpers import FAKE_SHA, ROOT, run_rows
from huggingface_hub.hf_api import DatasetInfo

from snactok.output.files import sha256_file
from snactok.tools.publish import PublishError, publish, stage

# ---------------------------------------------------------------------------------- tests


def test_the_fake_hub_is_strict(hub):
    with pytest.raises(AttributeError):
        hub.api.upload_large_folder  # noqa: B018 (not in huggingface_hub 2.4)
    with pytest.raises(TypeError):
        hub.api.upload_folder(repo="x", folder_path=".")
    with pytest.raises(TypeError):
        hub.api.create_repo(REPO, kind="dataset")


def test_publish_uploads_the_run_as_it_is(tmp_path, hub):
    run_dir = make_run(tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}

    url = publish(run_dir, REPO, api=hub.api)

    assert url == URL
    hub.api.create_repo.assert_called_once_with(REPO, repo_type="dataset", private=True, exist_ok=True)
    hub.api.repo_info.assert_called_once_with(REPO, repo_type="dataset")  # visibility check
    hub.api.upload_folder.assert_called_once()
    kwargs = hub.api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO and kwargs["repo_type"] == "dataset"
    assert kwargs["allow_patterns"] == ["README.md", "manifest.jsonl", "rejects.jsonl", "shards/*"]
    assert kwargs["delete_patterns"] == ["shards/*"]
    assert kwargs["commit_message"] == "snactok: demo as snac_24khz tokens, 5 rows, 6.5 seconds of audio"
    assert not Path(kwargs["folder_path"]).exists()  # the staging dir is gone
    shards = [f"shards/{LABEL}-{i:05d}.jsonl.gz" for i in range(3)]
    assert uploaded_files(hub.uploaded) == ["README.md", "manifest.jsonl", "rejects.jsonl", *shards]
    assert hub.seen["links"] == set(shards)  # shards linked, not copied
    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    for record in records[1:-1]:  # every file the manifest names, with its bytes (empty one too)
        assert sha256_file(hub.uploaded / record["file"]) == record["sha256"]
    uploaded = [json.loads(line) for line in (hub.uploaded / "manifest.jsonl").read_text().splitlines()]
    assert uploaded[1:] == records[1:]  # shard records and summary: every field may be published
    header, full = uploaded[0], records[0]
    assert {"host", "fingerprint"} <= set(full) and not {"host", "fingerprint"} & set(header)
    assert "path" in full["weights"] and "path" not in header["weights"]
    assert header["weights"]["sha256"] == full["weights"]["sha256"] and header["arch"] == full["arch"]
    assert (hub.uploaded / "rejects.jsonl").read_bytes() == (run_dir / "rejects.jsonl").read_bytes()
    assert len((hub.uploaded / "rejects.jsonl").read_text().splitlines()) == 4
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # run dir untouched


def test_card_config_loads_every_row(tmp_path, hub):
    run_dir = make_run(tmp_path / "run")
    publish(run_dir, REPO, api=hub.api)
    meta, _ = card(hub.uploaded)

    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "shards/*.jsonl.gz"}]}
    ]
    pattern = meta["configs"][0]["data_files"][0]["path"]
    matched = [f for f in uploaded_files(hub.uploaded) if fnmatch.fnmatch(f, pattern)]
    assert matched == [f"shards/{LABEL}-{i:05d}.jsonl.gz" for i in range(3)]
    data = load_repo(hub.uploaded, tmp_path / "cache")
    assert data.num_rows == 5
    assert data.to_list() == run_rows(run_dir)


def test_card_describes_codec_sources_rows_and_schema(tmp_path, hub):
    publish(
        make_run(tmp_path / "run", units=((3, 0), (0, 3), (2, 1)), license="cc-by-4.0"),
        REPO,
        api=hub.api,
    )
    meta, body = card(hub.uploaded)

    assert meta["license"] == "cc-by-4.0"
    assert {"snac", "audio-tokens", "snac_24khz", "speech"} <= set(meta["tags"])
    assert meta["size_categories"] == "n<1K"
    assert (
        f"[`hubertsiuzdak/snac_24khz`](https://huggingface.co/hubertsiuzdak/snac_24khz) at commit `{FAKE_SHA}`"
        in body
    )
    assert f"sha256 `{WEIGHTS_SHA256}`" in body
    assert "| rows written | 5 |" in body and "| rows rejected | 4 (too_long: 4) |" in body
    assert "| shards | 3 `.jsonl.gz` files, 1 of them empty |" in body
    assert "| rows read | 9 |" in body
    assert "6.5 seconds of audio" in body  # rows 0-2 and 6-7 encoded: 0.5 + 0.75 + 1 + 2 + 2.25
    assert "24000 / (512 * 4) = 11.72" in body and "24000 / (512 * 1) = 46.88" in body
    assert "In all 82.03 tokens per second" in body
    # the folder by its name: the path on this machine stays here
    assert "| `demo-default-train` | local folder `demo` | 9 | - | - | cc-by-4.0 |" in body
    for column in (
        "text",
        "snac_layer_1",
        "snac_layer_3",
        "num_layers",
        "token_lengths",
        "speaker",
        "id",
    ):
        assert f"| `{column}` |" in body
    assert "| `corpus` | string | constant `espeak_demo`" in body
    assert "| `duration` | float64 | seconds of the original audio" in body
    assert 'load_dataset("me/demo-snac", split="train")' in body
    snippet = code_block(body, "Decoding tokens back to audio")
    assert f'SNAC.from_pretrained("hubertsiuzdak/snac_24khz", revision="{FAKE_SHA}")' in snippet
    assert "RANDOM" not in body and "PARTIAL" not in body and "unknown" not in body


def test_unknown_licence_is_other_and_said(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    stage(make_run(tmp_path / "run"), staged, REPO)
    meta, body = card(staged)
    assert meta["license"] == "other"
    assert "| **unknown** |" in body and "its terms apply" in body

    staged2 = tmp_path / "staged2"
    staged2.mkdir()
    stage(tmp_path / "run", staged2, REPO, license="cc0-1.0")
    assert card(staged2)[0]["license"] == "cc0-1.0"


def test_hub_source_names_its_revision_commit_and_licence(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    stage(make_run(tmp_path / "run", hub_source=True, license="cc-by-4.0"), staged, REPO)
    meta, body = card(staged)
    assert meta["license"] == "cc-by-4.0"
    assert (
        "| `demo-default-train` | [`openslr/librispeech_asr`](https://huggingface.co/datasets/"
        f"openslr/librispeech_asr) `clean` / `train` | 9 | `main` | `{'c' * 40}` | cc-by-4.0 |"
    ) in body


def test_random_weights_are_loud(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    stage(make_run(tmp_path / "run", weights="random"), staged, REPO)
    meta, body = card(staged)
    assert "random-weights" in meta["tags"]
    assert "**RANDOM WEIGHTS: THESE TOKENS ARE MEANINGLESS.**" in body
    assert "**RANDOM** (seeded, calibrated; `runtime.seed=0`)" in body


def test_local_weights_are_named_as_such(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    stage(make_run(tmp_path / "run", weights="local"), staged, REPO)
    _, body = card(staged)
    assert "a local copy, `snac_24khz` (not on the Hub" in body and "/models" not in body
    assert 'SNAC.from_pretrained("snac_24khz")' in code_block(body, "Decoding tokens back to audio")


def test_private_false_passes_through(tmp_path, hub):
    hub.api.repo_info.return_value = DatasetInfo(id=REPO, private=False)
    publish(make_run(tmp_path / "run"), REPO, private=False, api=hub.api)
    hub.api.create_repo.assert_called_once_with(REPO, repo_type="dataset", private=False, exist_ok=True)
    hub.api.upload_folder.assert_called_once()


def test_a_private_run_is_never_uploaded_into_a_public_repo(tmp_path, hub):
    hub.api.repo_info.return_value = DatasetInfo(id=REPO, private=False)
    with pytest.raises(PublishError, match="already exists and is PUBLIC"):
        publish(make_run(tmp_path / "run"), REPO, api=hub.api)
    hub.api.upload_folder.assert_not_called()


def test_unfinished_run_is_refused_unless_partial_is_allowed(tmp_path, hub):
    run_dir = make_run(tmp_path / "run", finished=False)
    with open(run_dir / "manifest.jsonl", "ab") as f:
        f.write(b'{"type": "shard", "unit": 3, "sou')  # torn by a crash mid-append

    with pytest.raises(
        PublishError, match=r"unfinished run \(3 of 3 units.*runtime\.resume=.*--allow-partial"
    ):
        publish(run_dir, REPO, api=hub.api)
    hub.api.create_repo.assert_not_called()
    hub.api.upload_folder.assert_not_called()

    publish(run_dir, REPO, api=hub.api, allow_partial=True)
    _, body = card(hub.uploaded)
    assert (
        "**PARTIAL RUN.**" in body
        and "(PARTIAL run)" in hub.api.upload_folder.call_args.kwargs["commit_message"]
    )
    assert (hub.uploaded / "manifest.jsonl").read_bytes().endswith(b"}\n")  # the torn line left out
    assert load_repo(hub.uploaded, tmp_path / "cache").num_rows == 5


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "manifest.jsonl").unlink(), "manifest.jsonl does not exist"),
        (lambda d: (d / f"shards/{LABEL}-00002.jsonl.gz").unlink(), "00002.jsonl.gz is missing"),
        (
            lambda d: (d / f"shards/{LABEL}-00000.jsonl.gz").write_bytes(b"x"),
            "has 1 bytes, the manifest",
        ),
    ],
)
def test_a_damaged_run_is_refused_before_the_hub_is_asked(tmp_path, hub, damage, message):
    run_dir = make_run(tmp_path / "run")
    damage(run_dir)
    with pytest.raises(PublishError, match=message):
        publish(run_dir, REPO, api=hub.api)
    hub.api.create_repo.assert_not_called()


def test_run_without_rows_or_repo_without_namespace_is_refused(tmp_path, hub):
    with pytest.raises(PublishError, match="no rows to publish: 3 rejected of 3 read"):
        publish(make_run(tmp_path / "empty", units=((0, 3),)), REPO, api=hub.api)
    with pytest.raises(PublishError, match="is not `namespace/name`"):
        publish(make_run(tmp_path / "run"), "demo-snac", api=hub.api)
    hub.api.create_repo.assert_not_called()


@pytest.mark.parametrize("fmt", ["both", "parquet"])
def test_parquet_shards_are_what_the_card_points_at(tmp_path, hub, fmt):
    """output.format=both|parquet: the card's config reads the Parquet files; with both, the
    JSONL files go too (the manifest names them) and the card says so."""
    run_dir = make_run(tmp_path / "run", fmt=fmt)
    expected = run_rows(make_run(tmp_path / "jsonl_twin"))  # the same rows, as JSONL
    publish(run_dir, REPO, api=hub.api)
    meta, body = card(hub.uploaded)

    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "shards/*.parquet"}]
    parquet_files = [f"shards/{LABEL}-{i:05d}.parquet" for i in range(3)]
    jsonl_files = [f"shards/{LABEL}-{i:05d}.jsonl.gz" for i in range(3)] if fmt == "both" else []
    assert uploaded_files(hub.uploaded) == sorted(
        ["README.md", "manifest.jsonl", "rejects.jsonl", *parquet_files, *jsonl_files]
    )
    assert "| shards | 3 `.parquet` files, 1 of them empty |" in body
    assert ("| also | the same rows as `.jsonl.gz` files" in body) == (fmt == "both")
    assert "| `snac_layer_1` | list<int16> |" in body and "| `duration` | float64 |" in body
    assert load_repo(hub.uploaded, tmp_path / "cache").to_list() == expected


def test_orpheus_codes_column_is_described_and_its_snippet_inverts_it(tmp_path):
    import torch

    staged = tmp_path / "staged"
    staged.mkdir()
    run_dir = make_run(tmp_path / "run", flatten="orpheus")
    stage(run_dir, staged, REPO)
    _, body = card(staged)

    assert "| `codes` | list<int64> | Orpheus-style flat codes" in body
    assert "offset by 128266 + k * 4096; 82.03 per second of audio" in body
    unflatten = re.findall(r"```python\n(.*?)```", body, re.S)[-1]
    for row in run_rows(run_dir):
        assert row["codes"] == orpheus_codes([row[f"snac_layer_{i}"] for i in (1, 2, 3)])
        scope = {"torch": torch, "row": row}
        exec(unflatten, scope)
        assert [c.tolist() for c in scope["codes"]] == [[row[f"snac_layer_{i}"]] for i in (1, 2, 3)]


def test_script_help_runs():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snactok-publish"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for option in ("--repo", "--public", "--allow-partial", "--license", "--stage-only"):
        assert option in proc.stdout


def test_script_refuses_an_unfinished_run_and_stages_a_finished_one(tmp_path):
    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).parent / "snactok-publish"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )

    unfinished = make_run(tmp_path / "unfinished", finished=False)
    proc = script(str(unfinished), "--repo", REPO)
    assert proc.returncode == 2, proc.stderr
    assert "unfinished run" in proc.stderr and "--allow-partial" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = script(str(tmp_path / "nothing"), "--repo", REPO)
    assert proc.returncode == 2 and "manifest.jsonl does not exist" in proc.stderr

    look = tmp_path / "look"
    proc = script(str(unfinished), "--repo", REPO, "--allow-partial", "--stage-only", str(look))
    assert proc.returncode == 0, proc.stderr
    assert uploaded_files(look) == [
        "README.md",
        "manifest.jsonl",
        "rejects.jsonl",
        *[f"shards/{LABEL}-{i:05d}.jsonl.gz" for i in range(3)],
    ]
    assert "**PARTIAL RUN.**" in (look / "README.md").read_text()


# ------------------------------------------------------------- a real encode.py run, end to end


# ------------------------------------------------------------------ what leaves the machine


@pytest.mark.slow
def test_the_upload_carries_no_host_user_or_path_of_the_machine_that_made_it(
    tmp_path, weights_dir, monkeypatch
):
    """A run whose every path sits under a planted user name and scratch dir, on a planted host,
    resumed once (a resume record names its attempt dir), with rejects whose detail names an
    absolute path. The local run keeps it all; the staged upload folder has none of it."""
    import gzip
    import platform

    from helpers import compose_cfg

    from snactok.engine.run import run

    user, scratch, host = "alice_sentinel", "scratch-7731", "host-sentinel-4242"
    root = tmp_path / "home" / user / scratch
    folder = root / "corpus"
    folder.mkdir(parents=True)
    for name in ("clip_000.wav", "clip_001.flac"):
        shutil.copy(ROOT / "data" / "demo" / name, folder / name)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.wav").write_bytes(os.urandom(3000))
    (folder / "metadata.csv").write_text(
        "file_name,text\nclip_000.wav,one\nclip_001.flac,two\nempty.wav,three\ngarbage.wav,four\n"
    )
    weights = root / "models" / "snac_24khz"
    shutil.copytree(weights_dir("snac_24khz"), weights)
    monkeypatch.setattr(platform, "node", lambda: host)
    args = [
        "dataset=local_folder",
        f"dataset.path={folder}",
        f"codec.weights={weights}",
        "runtime=debug",
        f"runtime.cache_dir={root / 'cache'}",
        "wandb.mode=disabled",
    ]
    run_dir = root / "outputs" / "run"
    run(compose_cfg(args), run_dir)
    run(compose_cfg([*args, f"runtime.resume={run_dir}"]), root / "outputs" / "attempt2")
    local = (run_dir / "manifest.jsonl").read_text() + (run_dir / "rejects.jsonl").read_text()
    for planted in (user, scratch, host, '"pid"', '"attempt_dir"'):
        assert planted in local  # the local record keeps everything

    staged = tmp_path / "staged"
    staged.mkdir()
    files = stage(run_dir, staged, REPO)
    texts = {}
    for rel in files:
        data = (staged / rel).read_bytes()
        texts[rel] = (gzip.decompress(data) if rel.endswith(".gz") else data).decode("utf-8", "replace")
    for rel, text in texts.items():
        for planted in (user, scratch, host, str(tmp_path), '"pid"', '"attempt_dir"', "/home/"):
            assert planted not in text, (rel, planted)
    rejects = [json.loads(line) for line in texts["rejects.jsonl"].splitlines()]
    assert sorted((r["id"], r["reason"]) for r in rejects) == [
        ("empty.wav", "decode_error"),
        ("garbage.wav", "decode_error"),
    ]
    assert "0-byte file: 'empty.wav'" in {r["id"]: r["detail"] for r in rejects}["empty.wav"]
    header = json.loads(texts["manifest.jsonl"].splitlines()[0])
    assert header["weights"]["name"] == "snac_24khz" and header["config"]["dataset"]["path"] == "corpus"
    assert "local folder `corpus`" in texts["README.md"]
    assert [json.loads(x)["type"] for x in texts["manifest.jsonl"].splitlines()] == [
        "header",
        "shard",
        "summary",
        "summary",
    ]
