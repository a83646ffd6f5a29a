"""The real `python encode.py ...` in child processes: Hydra, readers, device workers and shards together.

Weights come from the session's random-weight SNACs, either as a local dir or laid out in a
temporary HF hub cache, so the Hub code path runs offline exactly as on a compute node.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ROOT, demo_rows, populate_hf_cache, run_cli
from snac import SNAC

from snactok.inputs.audio import Resampler, decode
from snactok.output.files import read_jsonl
from snactok.output.formats import read_shard

pytestmark = pytest.mark.slow


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _shards(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "shards").glob("*.jsonl.gz"))


def test_demo_run_writes_exactly_the_input_rows(demo_run):
    expected = demo_rows()
    shards = _shards(demo_run)
    assert [p.name for p in shards] == [f"demo-default-train-0000{i}.jsonl.gz" for i in range(3)]
    data = datasets.load_dataset("json", data_files=[str(p) for p in shards], split="train")
    assert data.num_rows == len(expected) == 40
    assert data["id"] == [e["file_name"] for e in expected]  # every row once, in input order
    assert data["text"] == [e["text"] for e in expected]
    assert data["speaker"] == [e["speaker"] for e in expected]
    assert set(data["corpus"]) == {"espeak_demo"}
    for row in data:
        assert row["num_layers"] == 3
        assert [len(row[f"snac_layer_{i}"]) for i in (1, 2, 3)] == row["token_lengths"]
        padded_seconds = row["token_lengths"][0] * 4 * 512 / 24000
        assert row["duration"] <= padded_seconds < row["duration"] + 2048 / 24000 + 1e-6


def test_demo_run_manifest_accounts_for_every_row(demo_run):
    records = read_jsonl(demo_run / "manifest.jsonl")
    header, summary = records[0], records[-1]
    shards = sorted(records[1:-1], key=lambda r: r["unit"])  # committed as units complete
    assert header["type"] == "header" and header["schema_version"] == 1
    assert header["codec"] == "snac_24khz" and header["weights"]["kind"] == "local"
    assert header["packages"]["torch"] == "2.11.0" and header["random_weights"] is False
    assert [s["rows"] for s in shards] == [16, 16, 8] and summary["rows_written"] == 40
    for s in shards:
        path = demo_run / s["file"]
        assert s["bytes"] == path.stat().st_size
        assert s["rows"] + s["rejected"] == s["rows_read"]
        rows = read_shard(path)
        assert s["tokens_per_layer"] == [sum(r["token_lengths"][i] for r in rows) for i in range(3)]
    assert set(summary["peak_rss_mb"]) == {
        "main",
        "device worker 0 (cpu)",
        "device worker 1 (cpu)",
        "reader 0",
        "reader 1",
    }
    assert all(50 < mb < 8000 for mb in summary["peak_rss_mb"].values())
    assert 0 < summary["seconds_to"]["first_worker_ready"] <= summary["seconds_to"]["first_tokens"]
    log = (demo_run / "encode.log").read_text()
    assert "device worker 0 ready" in log and "(compiled; start-up check: its encoder frames" in log
    assert summary["verify"]["clips"] >= 0 and "verified " in log
    assert (demo_run / ".hydra" / "config.yaml").exists()
    assert not list((demo_run / "shards").glob(".*"))  # no temporary files left


def test_demo_tokens_equal_single_clip_encode_of_the_decoded_audio(demo_run, weights_dir):
    model = SNAC.from_pretrained(str(weights_dir("snac_24khz")))
    rows = [row for p in _shards(demo_run) for row in read_shard(p)]
    resample = Resampler(24000)
    for row in rows[::5]:  # every format and rate appears among these
        audio, rate = decode(str(ROOT / "data" / "demo" / row["id"]))
        with torch.inference_mode():
            codes = model.encode(resample(audio, rate).view(1, 1, -1))
        for i, layer in enumerate(codes, 1):
            np.testing.assert_array_equal(row[f"snac_layer_{i}"], layer[0].numpy(), err_msg=row["id"])


@pytest.mark.parametrize(
    "variant",
    [
        # one eager worker, one reader, clips grouped many to a batch, one thread asked for
        [
            "runtime.devices=[cpu]",
            "runtime.num_readers=1",
            "runtime.compile=false",
            "runtime.batch_samples=262144",
            "runtime.cpu_threads=1",
        ],
        # one compiled worker, four readers racing through a tiny queue
        [
            "runtime.devices=[cpu]",
            "runtime.num_readers=4",
            "runtime.queue_samples=65536",
            "runtime.cpu_threads=2",
        ],
    ],
    ids=["1dev-1reader-eager-batched-1thread", "1dev-4readers-compiled-tinyqueue"],
)
def test_devices_readers_threads_batching_and_compile_leave_the_bytes_alone(
    variant, demo_run, weights_dir, tmp_path
):
    """The demo run (2 compiled workers, 2 readers) again in another shape: the same bytes."""
    proc = run_cli(
        [
            "dataset=demo",
            f"codec.weights={weights_dir('snac_24khz')}",
            *variant,
            "output.lines_per_file=16",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    _ok(proc)
    two, one = _shards(demo_run), _shards(tmp_path)
    assert [p.name for p in one] == [p.name for p in two]
    for a, b in zip(one, two, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    if "runtime.cpu_threads=1" in variant:
        assert "runtime.cpu_threads=1 does not change encoding" in proc.stdout + proc.stderr


def test_default_command_uses_hub_weights_from_the_local_cache(tmp_path, weights_dir):
    """`python encode.py` as typed, offline, with the weights already in the HF cache."""
    populate_hf_cache(tmp_path / "hf", "hubertsiuzdak/snac_24khz", weights_dir("snac_24khz"))
    run_dir = tmp_path / "run"
    proc = run_cli(
        ["runtime.max_rows=3", f"hydra.run.dir={run_dir}"],
        env={"HF_HUB_CACHE": str(tmp_path / "hf" / "hub")},
    )
    _ok(proc)
    header = read_jsonl(run_dir / "manifest.jsonl")[0]
    assert header["weights"]["kind"] == "hub"
    assert header["weights"]["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert header["devices"] == ["cpu"] and header["dataset"] == "demo"
    assert read_jsonl(run_dir / "manifest.jsonl")[-1]["rows_written"] == 3


def test_hub_dataset_command_composes_and_stops_cleanly_offline(tmp_path, weights_dir):
    """`codec=snac_44khz dataset=librispeech`: the weights resolve from the cache; the dataset
    cannot be fetched here, so the run stops before any process with a message, not a traceback."""
    populate_hf_cache(tmp_path / "hf", "hubertsiuzdak/snac_44khz", weights_dir("snac_44khz"))
    proc = run_cli(
        ["codec=snac_44khz", "dataset=librispeech", f"hydra.run.dir={tmp_path / 'run'}"],
        env={"HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_DATASETS_OFFLINE": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "cannot load dataset" in out and "Traceback" not in out
    assert not (tmp_path / "run" / "shards").exists()


def test_hub_unreachable_error_names_the_overrides(tmp_path):
    proc = run_cli(
        ["runtime=debug", f"hydra.run.dir={tmp_path / 'run'}"],
        env={"HF_HUB_CACHE": str(tmp_path / "empty")},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "codec.weights=/path/to/dir" in out and "codec.weights=random" in out
    assert "Traceback" not in out
    assert not (tmp_path / "run" / "shards").exists()


def test_missing_required_value_fails_with_the_key(tmp_path):
    proc = run_cli(["dataset=local_folder", "codec.weights=random", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 2
    assert "missing required config value(s): dataset.path" in proc.stdout + proc.stderr


def test_local_folder_counts_a_bad_file_goes_on_and_saves_to_disk(tmp_path, weights_dir):
    """`dataset=local_folder dataset.path=...`; the broken file is alone in the second unit, which
    must still commit (as an empty shard) so its completion can be checked."""
    folder = tmp_path / "wavs"
    folder.mkdir()
    lines = ["file_name,text"]
    for i in range(3):
        t = np.arange(16000 + 5000 * i) / 16000
        sf.write(folder / f"{i}.wav", (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
        lines.append(f"{i}.wav,clip number {i}")
    (folder / "broken.wav").write_text("not audio")
    lines.append("broken.wav,this one is broken")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "dataset=local_folder",
            f"dataset.path={folder}",
            "runtime=debug",
            "output.lines_per_file=3",
            f"codec.weights={weights_dir('snac_24khz')}",
            f"save.local={tmp_path / 'saved'}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    _ok(proc)
    full, empty = _shards(run_dir)
    assert (full.name, empty.name) == (
        "wavs-default-train-00000.jsonl.gz",
        "wavs-default-train-00001.jsonl.gz",
    )
    rows = read_shard(full)
    assert [r["id"] for r in rows] == ["0.wav", "1.wav", "2.wav"]
    assert "speaker" not in rows[0]  # no speaker column configured
    assert read_shard(empty) == []
    (reject,) = read_jsonl(run_dir / "rejects.jsonl")
    assert (reject["id"], reject["reason"]) == ("broken.wav", "decode_error")
    records = read_jsonl(run_dir / "manifest.jsonl")
    assert sorted((r["rows"], r["rejected"]) for r in records if r["type"] == "shard") == [
        (0, 1),
        (3, 0),
    ]
    summary = records[-1]
    assert (summary["rows_read"], summary["rows_written"], summary["rejected_by_reason"]) == (
        4,
        3,
        {"decode_error": 1},
    )
    saved = datasets.load_from_disk(str(tmp_path / "saved"))
    assert saved["id"] == ["0.wav", "1.wav", "2.wav"] and saved["snac_layer_1"] == [
        r["snac_layer_1"] for r in rows
    ]
    assert "rows 4/4 (100%)" in (run_dir / "encode.log").read_text()  # progress lines off a terminal


def test_multirun_sweep_writes_one_dir_per_job(tmp_path, weights_dir):
    """`-m dataset=demo,demo_music codec=snac_24khz,snac_32khz`: four runs, four output dirs, four
    offline W&B runs in one group, and a summary table of the runs in the sweep dir.

    `codec.weights=random` keeps each job's weights matched to its codec."""
    proc = run_cli(
        [
            "-m",
            "dataset=demo,demo_music",
            "codec=snac_24khz,snac_32khz",
            "codec.weights=random",
            "runtime=debug",
            "runtime.max_rows=2",
            "wandb.mode=offline",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    _ok(proc)
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen, groups = set(), set()
    for job in jobs:
        header = read_jsonl(job / "manifest.jsonl")[0]
        seen.add((header["dataset"], header["codec"]))
        assert header["random_weights"] is True
        (shard,) = _shards(job)
        rows = read_shard(shard)
        assert len(rows) == 2 and rows[0]["num_layers"] == (3 if header["codec"] == "snac_24khz" else 4)
        (wandb_log,) = job.glob("wandb/offline-run-*/run-*.wandb")
        groups.add(_wandb_group(wandb_log))
    assert seen == {(d, c) for d in ("demo", "demo_music") for c in ("snac_24khz", "snac_32khz")}
    assert groups == {f"sweep-{tmp_path.parent.name}-{tmp_path.name}"}
    table = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert [(r["job"], r["rows"], r["rejected"], r["finished"]) for r in table] == [
        (str(i), 2, 0, True) for i in range(4)
    ]
    assert {(r["dataset"], r["codec"]) for r in table} == seen
    assert all(r["hours"] > 0 and r["real_time_factor"] > 0 for r in table)
    assert "| job | dataset | codec | rows | hours | rejected | real_time_factor |" in proc.stdout


def _wandb_group(log: Path) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (run,) = [json.loads(line)["run"] for line in out.splitlines() if '"type":"run"' in line]
    return run["run_group"]


def test_peak_memory_does_not_grow_with_the_number_of_clips(tmp_path, weights_dir):
    """10x the clips, same peak per process: memory is bounded by the queue, batch and unit
    budgets, not by the dataset."""
    folder = tmp_path / "wavs"
    folder.mkdir()
    lines = ["file_name,text"]
    for i in range(120):
        t = np.arange(8000) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 7 * i) * t) * np.hanning(len(t))
        sf.write(folder / f"{i:03d}.flac", wave.astype(np.float32), 16000)
        lines.append(f"{i:03d}.flac,clip {i}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    peaks = {}
    for rows in (12, 120):
        run_dir = tmp_path / f"run{rows}"
        proc = run_cli(
            [
                "dataset=local_folder",
                f"dataset.path={folder}",
                "runtime=debug",
                f"runtime.max_rows={rows}",
                "runtime.batch_samples=49152",  # 4 clips: the small run fills batches too
                "output.lines_per_file=10",
                f"codec.weights={weights_dir('snac_24khz')}",
                f"hydra.run.dir={run_dir}",
            ]
        )
        _ok(proc)
        summary = read_jsonl(run_dir / "manifest.jsonl")[-1]
        assert summary["rows_written"] == rows
        peaks[rows] = summary["peak_rss_mb"]
    assert set(peaks[12]) == set(peaks[120]) == {"main", "device worker 0 (cpu)", "reader 0"}
    for name, small in peaks[12].items():
        assert peaks[120][name] <= 1.1 * small + 40, (name, small, peaks[120][name])


def test_secrets_from_the_environment_never_reach_the_run_dir(tmp_path, weights_dir):
    """Fake credentials planted in the environment appear in no file the run writes."""
    planted = {"HF_TOKEN": "hf_PlantedFakeToken0123456789", "WANDB_API_KEY": "wandbPlantedFakeKey987"}
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "dataset=demo",
            f"codec.weights={weights_dir('snac_24khz')}",
            "runtime=debug",
            "runtime.max_rows=2",
            "wandb.mode=offline",  # so W&B's files are grepped too
            f"hydra.run.dir={run_dir}",
        ],
        env=planted,
    )
    _ok(proc)
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"manifest.jsonl", "rejects.jsonl", "encode.log", "config.yaml", "metrics.jsonl"} <= names
    assert any(name.endswith(".wandb") for name in names)
    for path in files:
        data = path.read_bytes()
        for secret in planted.values():
            assert secret.encode() not in data, path


def test_a_token_on_the_command_line_is_refused_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(["+hf_token=hf_abc", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 2
    assert "refusing the override `+hf_token=...`" in proc.stderr and "HF_TOKEN" in proc.stderr
    assert "hf_abc" not in proc.stdout + proc.stderr
    assert not run_dir.exists()  # Hydra never saved it
