"""`runtime.dry_run=true`: the real pipeline with a zero-cost stand-in for the model.

Its rows are the real run's rows (ids, text, speakers, durations, token lengths) with
`snactok.codec.dryrun.pattern` tokens; it is marked as a dry run in the manifest and the log, and it
can be neither saved, published, nor resumed as a real run.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import compose_cfg, run_cli, run_rows, start_cli

from snactok.codec.dryrun import pattern
from snactok.codec.weights import checked_in_codecs
from snactok.engine.run import run
from snactok.errors import ConfigError
from snactok.output.files import sha256_file
from snactok.output.rundir import read_run
from snactok.tools.publish import PublishError, check_publishable

DEMO = ["dataset=demo", "runtime=debug", "runtime.max_rows=null", "output.lines_per_file=16"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The demo as `demo_run` cuts it (3 units of 16 rows), as a dry run: no weights at all."""
    run_dir = tmp_path_factory.mktemp("dry")
    proc = run_cli([*DEMO, "runtime.dry_run=true", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_dry_run_writes_the_real_rows_with_stand_in_tokens(dry_run, weights_dir, tmp_path):
    run_dir, log = dry_run
    proc = run_cli([*DEMO, f"codec.weights={weights_dir('snac_24khz')}", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    real, dry = run_rows(tmp_path), run_rows(run_dir)
    keys = ("id", "text", "speaker", "duration", "token_lengths", "num_layers", "corpus")
    assert [{k: r[k] for k in keys} for r in dry] == [{k: r[k] for k in keys} for r in real]
    arch = checked_in_codecs()["snac_24khz"]
    for row in dry:
        tokens = row["snac_layer_1"] + row["snac_layer_2"] + row["snac_layer_3"]
        padded = row["token_lengths"][-1] * 512  # layer 3: one token per hop of 512 samples
        assert tokens == pattern(padded, arch).tolist()
    header = json.loads((run_dir / "manifest.jsonl").read_text().splitlines()[0])
    assert header["dry_run"].startswith("DRY RUN") and header["weights"]["kind"] == "dry_run"
    assert "DRY RUN (runtime.dry_run=true): no model" in log
    assert "done (DRY RUN, stand-in tokens): 40 rows written" in log


@pytest.mark.slow
def test_a_dry_run_is_not_published_nor_resumed_as_a_real_run(dry_run, weights_dir, tmp_path):
    run_dir = dry_run[0]
    with pytest.raises(PublishError, match="is a dry run .* Encode it for real"):
        check_publishable(read_run(run_dir))
    real = compose_cfg(
        [*DEMO, f"codec.weights={weights_dir('snac_24khz')}", f"runtime.resume={run_dir}"]
    )
    with pytest.raises(ConfigError, match="runtime.dry_run: the run has true, this command has false"):
        run(real, tmp_path)


@pytest.mark.slow
def test_a_killed_dry_run_resumes_to_the_uninterrupted_bytes(dry_run, tmp_path):
    """kill -9 of the main process after its first commit; the resumed dry run's shards are the
    uninterrupted dry run's, byte for byte."""
    run_dir, log = tmp_path / "run", tmp_path / "first.log"
    args = [
        *DEMO,
        "runtime.dry_run=true",
        "runtime.read_block_rows=4",
        "runtime.queue_samples=200000",
        f"hydra.run.dir={run_dir}",
    ]
    # hold the reader after its 20th row of 40 (unit 0 of 16 rows is done): the kill lands mid-run
    env = {"SNACTOK_TEST_AT": "snactok-read-0:reading:20", "SNACTOK_TEST_AT_DIR": str(tmp_path)}
    proc = start_cli(args, log, env=env)
    pid_file = tmp_path / "snactok-read-0.reading"
    _wait(lambda: pid_file.exists() or proc.poll() is not None)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    manifest = (run_dir / "manifest.jsonl").read_text()
    assert manifest.count('"type": "shard"') < 3, "the kill came after the last commit"
    resumed = run_cli([*args, f"runtime.resume={run_dir}"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    want = sorted((dry_run[0] / "shards").glob("*.jsonl.gz"))
    got = sorted((run_dir / "shards").glob("*.jsonl.gz"))
    assert [p.name for p in got] == [p.name for p in want]
    assert [sha256_file(p) for p in got] == [sha256_file(p) for p in want]


def _wait(condition, seconds: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
