"""The pipeline's ceiling without the model, measured side by side in one run (`make ceiling`).

    python scripts/ceiling.py                  # ~8 min on 2 CPU cores; rewrites docs/performance.md
    python scripts/ceiling.py --no-write --minutes 2

Built from the bundled demo speech (no espeak needed), it measures:
  1. Reader cost: CPU seconds per audio second to read, decode and resample (to 24 kHz) each input
     kind as a reader does (a `datasets` source, `snactok.inputs.audio.decode`, `Resampler`), against the
     same decode and resample done raw with soundfile/PyAV and torchaudio.
  2. Whole-machinery throughput: `encode.py runtime.dry_run=true` (everything real but the model)
     on 16 kHz FLAC, steady audio s/s, with 1 and 2 readers, snac_24khz and snac_44khz token
     rates, output.format jsonl, parquet and both.
  3. Main-process capacity: the main process's CPU seconds while collecting, per audio second and
     per row, on tiny clips at snac_44khz token rates (where the main process does the most per
     audio second); capacity = what one core of it could take if the devices returned instantly.
  4. Commit latency and work at risk: from a unit's last row read to its commit, and the most
     audio read but not yet committed (what a kill -9 loses), by queue_samples and lines_per_file.
  5. Peak RSS of each process at 1x and 10x the rows, in dry-run mode.
Every figure comes from this run; nothing is a constant.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import torch
import torchaudio.functional as AF
from ceiling_report import render, write_doc

from snactok.output.rundir import read_run

REPO = Path(__file__).resolve().parents[1]
TARGET_RATE = 24000
CLIP_SECONDS = 5.0
# name -> (rate, channels, how it is written)
KINDS = {
    "16 kHz FLAC": (16000, 1, "flac"),
    "44.1 kHz stereo MP3": (44100, 2, "mp3"),
    "48 kHz Opus": (48000, 1, "opus"),
    "24 kHz WAV": (24000, 1, "wav"),
    "m4a/AAC 44.1 kHz": (44100, 1, "m4a"),
    "Parquet, FLAC bytes": (16000, 1, "parquet"),
}


def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="snactok-ceiling-"))
    try:
        speech = base_speech(args.minutes)
        print(f"{len(speech) / TARGET_RATE:.0f} s of speech in {root}", flush=True)
        results = {
            "readers": {name: reader_cost(make_kind(root, name, speech)) for name in KINDS},
        }
        print(json.dumps(results["readers"], indent=1), flush=True)
        flac = make_kind(root, "16 kHz FLAC", speech) / "data"
        results["throughput"] = throughput(flac, root)
        tiny = tiny_clips(root / "tiny", speech)
        results["main"] = {
            (clips, w): dry_run(
                data, root, "snac_44khz", 2, ["output.format=both", f"output.writers={w}"]
            )
            for clips, data in (("0.25 s", tiny), ("5 s", flac))
            for w in (0, 1)
        }
        results["latency"] = latency(flac, root)
        results["rss"] = rss(flac, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = render(results, args)
    print("\n" + table)
    if args.write:
        write_doc(table)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="audio per dry run")
    p.add_argument("--no-write", dest="write", action="store_false", help="leave docs/ alone")
    return p.parse_args()


# ----------------------------------------------------------------------------- data
def base_speech(minutes: float) -> np.ndarray:
    """The bundled demo speech at 24 kHz, looped to `minutes`."""
    from snactok.inputs.audio import Resampler, decode

    resample, parts = Resampler(TARGET_RATE), []
    for path in sorted((REPO / "data" / "demo").glob("clip_*")):
        audio, rate = decode(str(path))
        parts.append(resample(audio, rate).numpy())
    speech = np.concatenate(parts)
    reps = int(np.ceil(minutes * 60 * TARGET_RATE / len(speech)))
    return np.tile(speech, reps)[: int(minutes * 60 * TARGET_RATE)]


def _clips(speech: np.ndarray, rate: int, channels: int, seconds: float) -> list[np.ndarray]:
    wave = AF.resample(torch.from_numpy(speech), TARGET_RATE, rate).numpy()
    n = int(seconds * rate)
    clips = [wave[i : i + n] for i in range(0, len(wave) - n + 1, n)]
    if channels == 2:  # a little delay between channels, as a real stereo recording has
        clips = [np.stack([c, np.roll(c, 7)], axis=1) for c in clips]
    return clips


def make_kind(root: Path, name: str, speech: np.ndarray, seconds: float = CLIP_SECONDS) -> Path:
    """A dir with `data/` as an audiofolder (or `data.parquet`) of the kind; built once."""
    out = root / name.replace(" ", "_").replace("/", "_")
    if out.exists():
        return out
    rate, channels, how = KINDS[name]
    clips = _clips(speech[: 120 * TARGET_RATE], rate, channels, seconds)  # 2 min per kind
    (out / "data").mkdir(parents=True)
    names = []
    for i, clip in enumerate(clips):
        suffix = {"opus": "ogg", "parquet": "flac"}.get(how, how)
        path = out / "data" / f"clip_{i:04d}.{suffix}"
        if how == "m4a":
            _write_aac(path, clip, rate)
        else:
            sub = {"opus": "OPUS", "mp3": "MPEG_LAYER_III", "wav": "PCM_16"}.get(how)
            sf.write(path, clip, rate, subtype=sub, format="OGG" if how == "opus" else None)
        names.append(path.name)
    _metadata(out / "data", names)
    if how == "parquet":
        audio = [{"bytes": (out / "data" / n).read_bytes(), "path": None} for n in names]
        table = pa.table({"id": names, "text": ["speech"] * len(names), "audio": audio})
        shutil.rmtree(out / "data")
        pq.write_table(table, out / "data.parquet")
    return out


def _metadata(folder: Path, names: list[str], repeat: int = 1) -> None:
    lines = ["file_name,text"] + [f"{n},speech" for _ in range(repeat) for n in names]
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")


def _write_aac(path: Path, clip: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(clip[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def tiny_clips(folder: Path, speech: np.ndarray) -> Path:
    """0.25 s clips of 16 kHz FLAC, listed 10 times over: the most rows per audio second."""
    folder.mkdir(parents=True)
    clips = _clips(speech[: 60 * TARGET_RATE], 16000, 1, 0.25)
    for i, clip in enumerate(clips):
        sf.write(folder / f"t{i:04d}.flac", clip, 16000)
    _metadata(folder, [f"t{i:04d}.flac" for i in range(len(clips))], repeat=10)
    return folder


# ----------------------------------------------------------------------------- 1. readers
def reader_cost(kind_dir: Path, rounds: int = 3) -> dict:
    """CPU s per audio s: as a reader reads (datasets source + decode + resample) vs raw. Both
    are warmed up first, then timed `rounds` times in alternating order; each takes its best."""
    from snactok.codec.encoder import set_cpu_numerics
    from snactok.inputs.sources import open_sources

    threads = torch.get_num_threads()
    set_cpu_numerics()  # a reader's torch threads
    parquet = kind_dir / "data.parquet"
    path = parquet if parquet.exists() else kind_dir / "data"
    source = open_sources(_dataset(path), None)[0]
    _ours(source, 1), _raw(path, 1)  # imports, kernels, first-call costs
    best = {"ours": float("inf"), "raw": float("inf")}
    for i in range(rounds):
        for name in ("ours", "raw") if i % 2 == 0 else ("raw", "ours"):
            t = time.process_time()
            audio_s = _ours(source) if name == "ours" else _raw(path)
            best[name] = min(best[name], (time.process_time() - t) / audio_s)
    torch.set_num_threads(threads)
    return best | {"ratio": best["ours"] / best["raw"], "audio_s": audio_s}


def _ours(source, limit: int | None = None) -> float:
    from snactok.inputs.audio import Resampler, decode

    resample, audio_s, rows = Resampler(TARGET_RATE), 0.0, limit or source.num_rows
    for start in range(0, rows, 32):
        for row in source.rows(start, min(start + 32, rows)):
            audio, rate = decode(row["audio"])
            resample(audio, rate)
            audio_s += len(audio) / rate
    return audio_s


def _raw(path: Path, limit: int | None = None) -> float:
    audio_s = 0.0
    for i, data in enumerate(_raw_inputs(path)):
        if limit is not None and i >= limit:
            break
        wave, rate = _raw_decode(data)
        AF.resample(torch.from_numpy(wave), rate, TARGET_RATE)
        audio_s += len(wave) / rate
    return audio_s


def _dataset(path: Path) -> Any:
    """The typed `dataset` config of one local source, with the schema's defaults."""
    from snactok.config.schema import DatasetConfig, SourceConfig

    return DatasetConfig(name=path.name, path=None, sources=[SourceConfig(path=str(path))])


def _raw_inputs(path: Path):
    """What raw code starts from: the Parquet's bytes, or each file's path."""
    if path.suffix == ".parquet":
        for item in pq.read_table(path, columns=["audio"]).column("audio").to_pylist():
            yield io.BytesIO(item["bytes"])
        return
    yield from sorted(str(p) for p in path.iterdir() if p.name != "metadata.csv")


def _raw_decode(data) -> tuple[np.ndarray, int]:
    """soundfile where it reads the format, else PyAV; mono by the channel mean."""
    if isinstance(data, str) and data.endswith(".m4a"):
        with av.open(data) as container:
            stream = container.streams.audio[0]
            chunks = [f.to_ndarray() for f in container.decode(stream)]
        return np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32), stream.rate
    wave, rate = sf.read(data, dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


# ----------------------------------------------------------------------------- 2-5. dry runs
def dry_run(data: Path, root: Path, codec: str, readers: int, extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    cmd = [
        sys.executable,
        str(REPO / "encode.py"),
        f"codec={codec}",
        "dataset=local_folder",
        f"dataset.path={data}",
        "dataset.sources.0.text_column=text",
        "runtime=cpu",
        "runtime.dry_run=true",
        f"runtime.num_readers={readers}",
        "runtime.verify_fraction=0",
        f"runtime.cache_dir={root / 'cache'}",
        "wandb.mode=disabled",
        f"hydra.run.dir={out}",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = read_run(out).summary.record  # the run's totals (snactok.output.rundir)
    shutil.rmtree(out, ignore_errors=True)
    main = summary["main_process"]
    result = {
        "steady": summary["steady_audio_seconds_per_second"],
        "audio_s": summary["audio_seconds"],
        "rows": summary["rows_written"],
        "tokens": summary["tokens"],
        "main_cpu_s": main["cpu_seconds_collecting"],
        "commit_s": main["commit_seconds"],
        "latency": main["commit_latency_seconds"],
        "at_risk_s": main["max_uncommitted_audio_seconds"],
        "at_risk_rows": main["max_uncommitted_rows"],
        "rss": summary["peak_rss_mb"],
    }
    print(f"  {codec} readers={readers} {' '.join(extra)}: {result}", flush=True)
    return result


def throughput(flac: Path, root: Path) -> dict:
    _metadata_repeat(flac, 25)  # 50 min of audio from the 2 min of clips
    runs = {}
    for codec in ("snac_24khz", "snac_44khz"):
        for readers in (1, 2):
            runs[f"{codec} jsonl {readers}"] = dry_run(flac, root, codec, readers, [])
    for fmt in ("parquet", "both"):
        runs[f"snac_44khz {fmt} 2"] = dry_run(flac, root, "snac_44khz", 2, [f"output.format={fmt}"])
    return runs


def _metadata_repeat(folder: Path, repeat: int) -> None:
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".flac")
    _metadata(folder, names, repeat)


def latency(flac: Path, root: Path) -> dict:
    runs = {}
    for queue in (2**20, 2**23, 2**26):
        for lines in (16, 256):
            extra = [f"runtime.queue_samples={queue}", f"output.lines_per_file={lines}"]
            runs[(queue, lines)] = dry_run(flac, root, "snac_24khz", 2, extra)
    return runs


def rss(flac: Path, root: Path) -> dict:
    runs = {}
    for repeat in (5, 50):
        _metadata_repeat(flac, repeat)
        runs[repeat] = dry_run(flac, root, "snac_24khz", 2, ["output.lines_per_file=256"])
    _metadata_repeat(flac, 5)
    return runs


if __name__ == "__main__":
    main()
