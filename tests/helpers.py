"""Helpers the tests share: composed configs, CLI runs, run-dir rows, generated datasets.

Imported as `from helpers import ...` (pyproject puts tests/ on the path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from snactok import register_configs
from snactok.codec.weights import calibration_audio
from snactok.config.schema import typed

ROOT = Path(__file__).resolve().parents[1]


CODECS = ("snac_24khz", "snac_32khz", "snac_44khz")


FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"


def compose_cfg(overrides: list[str] | None = None):
    """Compose conf/config.yaml as encode.py does, minus the `hydra` node."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=list(overrides or []))
    finally:
        GlobalHydra.instance().clear()


def demo_args(weights, run_dir, *extra: str) -> list[str]:
    """encode.py's arguments for the demo on `runtime=debug` with `weights`, into `run_dir`, then
    `extra` overrides."""
    return [
        "dataset=demo",
        f"codec.weights={weights}",
        "runtime=debug",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def typed_cfg(overrides: list[str] | None = None):
    """`compose_cfg` as the run reads it: the schema's dataclasses (`config.schema.typed`)."""
    return typed(compose_cfg(overrides))


def assert_codes_spread(model, arch) -> None:
    # speech the calibration did not see: calibration takes the first 8 s
    audio = calibration_audio(arch["sampling_rate"], seconds=20.0)[4:].reshape(1, 1, -1)
    with torch.inference_mode():
        codes = model.encode(audio)
    for layer, c in enumerate(codes):
        _, counts = c.unique(return_counts=True)
        assert len(counts) >= 0.3 * min(c.numel(), arch["codebook_size"]), (layer, len(counts))
        assert counts.max().item() / c.numel() < 0.15, (layer, counts.max().item() / c.numel())


def populate_hf_cache(
    hf_home: Path,
    repo: str,
    weights: Path,
    names: tuple[str, ...] = ("config.json", "pytorch_model.bin"),
) -> Path:
    """Lay out the files `names` of `weights` as the HF hub cache does for `repo` at main, so
    hf_hub_download finds them offline exactly as it finds files a user downloaded earlier."""
    base = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / FAKE_SHA
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = snapshot / name
        if not target.exists():
            target.symlink_to(weights / name)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(FAKE_SHA)
    return snapshot


def run_cli(args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `python encode.py ...` in a child process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "encode.py"), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """`python encode.py ...` in the background, in its own session (so a test can signal its
    whole process group, as a terminal does), writing stdout and stderr to `log`.

    SIGINT is set back to its default in the child, as for a command typed at a terminal: a test
    run started in the background by a shell (`make test &`) inherits SIGINT ignored, and Python
    keeps an ignored SIGINT ignored."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "encode.py"), *args],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_gone(pids: list[int], within: float) -> None:
    """Every process in `pids` has exited within `within` seconds: no orphans."""
    import time

    deadline = time.monotonic() + within
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"left behind: {[p for p in pids if alive(p)]}"
        time.sleep(0.05)


def local_dataset(path, streaming: bool = False, **settings):
    """The typed `dataset` config of one local source, with the schema's defaults for what
    `settings` leaves out, as `sources.open_sources` takes it."""
    from snactok.config.schema import DatasetConfig, SourceConfig

    source = SourceConfig(path=str(path), **settings)
    return DatasetConfig(name="local", path=None, streaming=streaming, sources=[source])


def demo_rows() -> list[dict]:
    import csv

    with open(ROOT / "data" / "demo" / "metadata.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_rows(run_dir: Path) -> list[dict]:
    """Every row of a run dir's JSONL shards, in unit order (the dataset's global order)."""
    import json

    from snactok.output.formats import read_shard

    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    shards = sorted((r for r in records if r["type"] == "shard"), key=lambda r: r["unit"])
    return [row for r in shards for row in read_shard(run_dir / r["file"])]


# A run split over jobs: 24 demo rows in 8 units of 3; one CPU thread per job, as two jobs share
# this machine's 2 cores (more threads than cores slows each job ~10x).
SPLIT_ARGS = [
    "runtime=debug",
    "runtime.max_rows=24",
    "output.lines_per_file=3",
    "runtime.cpu_threads=1",
    "wandb.mode=disabled",
]


# A Common Voice release's TSV header, as the Mozilla Data Collective ships it (unquoted).
CV_COLUMNS = [
    "client_id",
    "path",
    "sentence_id",
    "sentence",
    "sentence_domain",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "variant",
    "locale",
    "segment",
]


def common_voice_language(root: Path, lang: str, mp3s: list[str]) -> list[dict]:
    """`root/lang` as a Common Voice release lays out a language: `clips/` with copies of the
    bundled `mp3s`, train.tsv and dev.tsv (the last clip); returns train's rows."""
    clips = root / lang / "clips"
    clips.mkdir(parents=True)
    rows = []
    for i, name in enumerate(mp3s):
        path = f"common_voice_{lang}_{19664030 + i}.mp3"
        shutil.copy(ROOT / "data" / "demo" / name, clips / path)
        sentence = f'He said "{lang} {i}" twice.' if i == 1 else f"Sentence {i} in {lang}."
        rows.append(
            {
                "client_id": f"{'ab' * 30}{i % 2:04d}",
                "path": path,
                "sentence_id": f"{i:064x}",
                "sentence": sentence,
                "locale": lang,
            }
        )
    for split, part in (("train", rows[:-1]), ("dev", rows[-1:])):
        lines = ["\t".join(CV_COLUMNS)]
        lines += ["\t".join(r.get(c, "") for c in CV_COLUMNS) for r in part]
        (root / lang / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows[:-1]


def assert_png(path: Path) -> tuple[int, int]:
    """A real PNG, fully decodable, bigger than a thumbnail; returns its size."""
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG", path
        img.load()  # decodes every pixel: a truncated file raises here
        assert img.width > 100 and img.height > 100, (path, img.size)
        return img.size


def refused(args: list[str], run_dir: Path, weights: Path) -> str:
    """`encode.py <args>` on runtime=debug that must stop as a config error (exit 2, before any
    process starts); returns what it printed."""
    proc = run_cli([*args, f"codec.weights={weights}", "runtime=debug", f"hydra.run.dir={run_dir}"])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return text
