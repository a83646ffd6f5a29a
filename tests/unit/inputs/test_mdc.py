"""`dataset.mdc_id`: a Common Voice release downloaded from the Mozilla Data Collective before a run.

The MDC's HTTP API is the one boundary that cannot exist here (no network), so a stand-in serves it
on 127.0.0.1: the three requests `datacollective.download_dataset` makes (the dataset's details, a
download session for the bearer key, the archive, with Range). Everything else is real: the SDK,
its resume and unpacking, the lock, and the run that reads the release.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import ROOT, common_voice_language, compose_cfg, run_cli, run_rows
from omegaconf import OmegaConf

from snactok.config.checks import check_config
from snactok.errors import ConfigError
from snactok.inputs.mdc import dataset_path, fetch

if sys.version_info < (3, 11, 4):  # pyproject installs datacollective only from 3.11.4 on
    pytest.skip("datacollective needs Python >= 3.11.4", allow_module_level=True)

KEY = "mdc-test-key"
CV_ID = "cmcv21en"  # a dataset the stand-in serves
TERMS_ID = "cmterms"  # one whose terms the key's account has not accepted: 403
TERMS_PAGE = f"https://mozilladatacollective.com/datasets/{TERMS_ID}"
RELEASE = "cv-corpus-21.0-2025-03-14"
FILENAME = f"{RELEASE}-en.tar.gz"


class Api(ThreadingHTTPServer):
    """The stand-in MDC API: what it was asked (`seen`: method, path, Range), an archive it can
    cut short once (`cut_next`), and a gate archive requests wait at (`gate`)."""

    daemon_threads = True

    def __init__(self, archive: bytes):
        super().__init__(("127.0.0.1", 0), Handler)
        self.archive = archive
        self.seen: list[tuple[str, str, str | None]] = []
        self.cut_next = False
        self.gate = threading.Event()
        self.gate.set()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def archive_gets(self) -> list[tuple[str, str, str | None]]:
        return [s for s in self.seen if s[1] == f"/files/{FILENAME}"]


class Handler(BaseHTTPRequestHandler):
    server: Api

    def log_message(self, *args) -> None:  # keep pytest's output to the test's own
        pass

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.path, self.headers.get("Range")))
        if self.path == f"/files/{FILENAME}":
            return self._archive()
        dataset_id = self.path.removeprefix("/datasets/")
        if dataset_id not in (CV_ID, TERMS_ID):
            return self._json(404, {"message": f"no dataset {dataset_id}"})
        self._json(
            200,
            {
                "id": dataset_id,
                "slug": "common-voice-scripted-speech-21-0-english",
                "name": "Common Voice Scripted Speech 21.0 - English",
                "locale": "en",
                "license": "Creative Commons Zero v1.0 Universal",
                "licenseAbbreviation": "CC0-1.0",
                "datasetUrl": f"https://mozilladatacollective.com/datasets/{dataset_id}",
                "filename": FILENAME,
                "checksum": "c0ffee",
                "sizeBytes": len(self.server.archive),
            },
        )

    def do_POST(self) -> None:
        self.server.seen.append(("POST", self.path, None))
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self._json(401, {"message": "invalid API key"})
        if self.path == f"/datasets/{TERMS_ID}/download":
            return self._json(403, {"message": "accept the dataset's terms first"})
        size = len(self.server.archive)
        self._json(
            200,
            {
                "downloadUrl": f"{self.server.url}/files/{FILENAME}",
                "sizeBytes": size,
                "checksum": "c0ffee",
            },
        )

    def _archive(self) -> None:
        self.server.gate.wait(30)
        data, ranged = self.server.archive, self.headers.get("Range")
        start = int(ranged.removeprefix("bytes=").removesuffix("-")) if ranged else 0
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.server.cut_next:  # the full length announced, half sent, connection closed
            self.server.cut_next = False
            self.wfile.write(data[start : len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def _json(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[bytes, list[dict]]:
    """The archive as the MDC serves it (one language, `en`), and its train.tsv's rows."""
    root = tmp_path_factory.mktemp("release") / RELEASE
    mp3s = sorted(p.name for p in (ROOT / "data" / "demo").glob("*.mp3"))
    rows = common_voice_language(root, "en", mp3s)  # ~220 KB: an interrupted download keeps some
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname=RELEASE)
    return buf.getvalue(), rows


@pytest.fixture
def api(release, monkeypatch):
    """The stand-in, with MDC_API_URL and MDC_API_KEY set for this process and its CLI runs."""
    server = Api(release[0])
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setenv("MDC_API_URL", server.url)
    monkeypatch.setenv("MDC_API_KEY", KEY)
    yield server
    server.shutdown()
    server.server_close()


def overrides(cache: Path, mdc_id: str = CV_ID) -> list[str]:
    return ["dataset=common_voice", f"dataset.mdc_id={mdc_id}", f"runtime.cache_dir={cache}"]


def mdc_cfg(cache: Path, mdc_id: str = CV_ID):
    return compose_cfg(overrides(cache, mdc_id))


def language_dir(cache: Path) -> Path:
    return cache / "mdc" / CV_ID / FILENAME.removesuffix(".tar.gz") / RELEASE / "en"


@pytest.mark.slow
def test_a_run_downloads_the_release_and_encodes_it(api, release, tmp_path, weights_dir):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    run = [*overrides(cache), "runtime=debug", "runtime.max_rows=null"]
    proc = run_cli([*run, f"codec.weights={weights_dir('snac_24khz')}", f"hydra.run.dir={run_dir}"])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    rows = release[1]
    got = run_rows(run_dir)
    assert [r["id"] for r in got] == [r["path"] for r in rows]
    assert [r["text"] for r in got] == [r["sentence"] for r in rows]
    assert [r["speaker"] for r in got] == [r["client_id"] for r in rows]
    assert "is licensed CC0-1.0; using it means accepting its terms: " in text
    assert f"https://mozilladatacollective.com/datasets/{CV_ID}" in text
    header = json.loads((run_dir / "manifest.jsonl").read_text().splitlines()[0])
    dataset = header["config"]["dataset"]
    assert (dataset["mdc_id"], dataset["path"]) == (CV_ID, str(language_dir(cache)))


@pytest.mark.slow
def test_an_interrupted_download_resumes_where_it_stopped(api, release, tmp_path):
    cache, archive = tmp_path / "cache", release[0]
    api.cut_next = True
    run = [*overrides(cache), "runtime=debug", "codec.weights=random"]
    proc = run_cli([*run, f"hydra.run.dir={tmp_path / 'run'}"])
    text = proc.stdout + proc.stderr
    part = cache / "mdc" / CV_ID / f"{FILENAME}.part"
    kept = part.stat().st_size  # what the SDK wrote of the half sent: whole 64 KiB chunks
    assert proc.returncode == 1 and 0 < kept <= len(archive) // 2, (kept, text[-3000:])
    line = next(x for x in text.splitlines() if "the download failed" in x)
    assert f"dataset.mdc_id='{CV_ID}': the download failed (ChunkedEncodingError" in line
    resume = f"run the same command again to resume the download ({kept} of {len(archive)} bytes kept"
    assert f"{resume} in {part})" in line and "Traceback" not in text

    cfg = mdc_cfg(cache)  # the same again, in-process: the run after it is the CLI test's
    fetch(cfg)
    assert api.archive_gets()[-1] == ("GET", f"/files/{FILENAME}", f"bytes={kept}-")
    assert Path(cfg.dataset.path) == language_dir(cache) and not part.exists()
    assert (language_dir(cache) / "train.tsv").read_text().count("\n") == 1 + len(release[1])


def test_without_a_key_nothing_is_asked_and_the_error_says_how_to_get_one(api, tmp_path, monkeypatch):
    monkeypatch.delenv("MDC_API_KEY")
    with pytest.raises(
        ConfigError,
        match=r"needs a Mozilla Data Collective API key: create a key on "
        r"https://mozilladatacollective.com.*`export MDC_API_KEY=\.\.\.`.*never in the config",
    ):
        fetch(mdc_cfg(tmp_path))
    assert api.seen == []


@pytest.mark.parametrize(
    ("mdc_id", "key", "message"),
    [
        ("nosuch", KEY, r"mdc_id='nosuch' is not on the Mozilla Data Collective .*no dataset nosuch"),
        (TERMS_ID, KEY, rf"access denied .*accept the dataset's terms on {TERMS_PAGE}"),
        (CV_ID, "revoked", r"the Mozilla Data Collective rejected the key in MDC_API_KEY: create a key"),
    ],
)
def test_a_refusal_says_what_to_change(api, tmp_path, monkeypatch, mdc_id, key, message):
    monkeypatch.setenv("MDC_API_KEY", key)
    with pytest.raises(ConfigError, match=message):
        fetch(mdc_cfg(tmp_path, mdc_id))
    assert api.archive_gets() == []


def test_an_mdc_id_stands_in_for_the_path_but_not_beside_one():
    cfg = mdc_cfg(Path("/cache"))
    check_config(cfg)
    assert OmegaConf.is_missing(cfg.dataset, "path")  # checked on a copy; the download fills it
    cfg.dataset.path = "/data/cv/en"
    with pytest.raises(ConfigError, match=r"mdc_id='cmcv21en' sets dataset.path .* is '/data/cv/en'"):
        check_config(cfg)


def test_concurrent_jobs_download_once(api, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="snactok.inputs.mdc")
    cfgs = [mdc_cfg(tmp_path), mdc_cfg(tmp_path)]  # composed here: Hydra's compose is not thread-safe
    jobs = [threading.Thread(target=fetch, args=(cfg,)) for cfg in cfgs]
    api.gate.clear()  # the first job's archive download waits, holding the lock
    jobs[0].start()
    wait_for(api.archive_gets)
    jobs[1].start()
    wait_for(lambda: "waiting for another process's download of dataset.mdc_id=cmcv21en" in caplog.text)
    api.gate.set()
    for job in jobs:
        job.join(30)
    assert len(api.archive_gets()) == 1
    assert [cfg.dataset.path for cfg in cfgs] == [str(language_dir(tmp_path))] * 2


def test_a_fetched_release_is_reused_without_a_key_or_the_network(api, tmp_path, monkeypatch, caplog):
    """Compute nodes often have no network: a finished download is read as it is."""
    caplog.set_level(logging.INFO, logger="snactok.inputs.mdc")
    fetch(mdc_cfg(tmp_path))
    asked = len(api.seen)
    monkeypatch.delenv("MDC_API_KEY")
    monkeypatch.setenv("MDC_API_URL", "http://127.0.0.1:9")  # nothing listens there
    cfg = mdc_cfg(tmp_path)
    fetch(cfg)
    assert len(api.seen) == asked and cfg.dataset.path == str(language_dir(tmp_path))
    assert "licensed CC0-1.0; its terms: https://mozilladatacollective.com/datasets/" in caplog.text
    assert f"delete {tmp_path / 'mdc' / CV_ID} to fetch it again" in caplog.text


def test_the_path_is_the_language_dir_or_with_languages_their_parent(tmp_path):
    release = tmp_path / RELEASE
    for lang in ("de", "en"):
        (release / lang / "clips").mkdir(parents=True)
        (release / lang / "train.tsv").write_text("client_id\tpath\n")
    held = rf"\['{RELEASE}/de', '{RELEASE}/en'\]"
    with pytest.raises(ConfigError, match=rf"several languages {held}; .* dataset.languages=\[de,en\]"):
        dataset_path(tmp_path, [])
    assert dataset_path(tmp_path, ["en", "de"]) == release
    with pytest.raises(ConfigError, match=rf"it holds {held}, no \['fr'\]"):
        dataset_path(tmp_path, ["en", "fr"])
    assert dataset_path(release / "en", []) == release / "en"


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
