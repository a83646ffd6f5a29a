"""Measure snactok against the original batch-1 method, side by side, in one run.

    make bench                                   # ~12 min of generated 16 kHz FLAC speech
    python scripts/benchmark.py --minutes 2 --no-write      # a quick look
    python scripts/benchmark.py --data /path/to/audiofolder --codec snac_44khz

On the same clips and the same (random, calibrated) weights it measures:
  (a) the original method: per clip soundfile + torchaudio resample + `SNAC.encode`, eager, batch 1,
      torch's defaults, in a fresh process with the user's environment;
  (b) the model alone: pre-decoded clips through snactok's batched encoder, eager and compiled;
  (c) the pipeline: `python encode.py` on N and on 2N clips, cold and warm compile cache.
      Steady state = extra audio / extra time between the N and 2N runs; startup = the rest.
It also measures a large fp32 matmul (the practical compute limit), the readers' CPU cost, and
each process's peak memory. The table goes to stdout, to docs/performance.md (between the
bench markers) and, with --wandb, to Weights & Biases.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import make_demo_data as demo  # scripts/ is on sys.path when this file runs
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from bench_report import GFLOP_PER_AUDIO_SECOND, log_wandb, render, write_doc

from snactok.output.rundir import read_run

REPO = Path(__file__).resolve().parents[1]
BENCH_RATE = 16000
DATA_VERSION = 1  # bump when the generated set changes


def main() -> None:
    args = parse_args()
    if args.original_only:
        return original_method_job(Path(args.original_only))
    from snactok.engine.signals import MALLOC_TUNABLES

    if "GLIBC_TUNABLES" not in os.environ:  # what encode.py gives its workers; here for all of us
        os.execve(
            sys.executable,
            [sys.executable, *sys.argv],
            {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES},
        )
    from omegaconf import OmegaConf

    from snactok.codec.weights import random_weights_dir

    data = Path(args.data).resolve() if args.data else speech_set(args.minutes, args.cache / "bench")
    conf = compose(args.codec, data)
    arch = OmegaConf.to_container(conf.codec.arch)
    weights = random_weights_dir(arch, 0, args.cache.expanduser() / "random_weights")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = clip_rows(conf)
    print(f"{len(rows)} clips from {data}; weights {weights}; device {device}", flush=True)

    results: dict = {"machine": machine(), "codec": args.codec, "clips": len(rows), "data": str(data)}
    results["matmul_gflops"] = matmul_gflops()
    print(f"matmul: {results['matmul_gflops']:.0f} GFLOP/s", flush=True)
    results["reader"] = reader_cost(rows, arch["sampling_rate"])
    print(f"reader: {results['reader']}", flush=True)
    results["a"], tokens_a = original_method(rows, weights, arch["sampling_rate"])
    print(f"(a) {results['a']}", flush=True)
    clips = decoded(rows, arch["sampling_rate"])
    results["b_eager"], _ = model_alone(clips, weights, arch, device, compile=False)
    print(f"(b) eager {results['b_eager']}", flush=True)
    results["b"], tokens_b = model_alone(clips, weights, arch, device, compile=True)
    results["b"]["tokens_equal_a"] = agreement(tokens_b, tokens_a)
    print(f"(b) compiled {results['b']}", flush=True)
    if device == "cuda":
        results["b_bf16"], tokens_bf16 = model_alone(clips, weights, arch, device, True, "bf16")
        results["b_bf16"]["tokens_equal_fp32"] = agreement(tokens_bf16, tokens_b)
    results["c"] = pipeline_runs(args, data, len(rows))
    got = results["c"]["runs"]["warm_2n"].pop("tokens")
    for run in results["c"]["runs"].values():
        run.pop("tokens", None)
    results["c"]["tokens_equal_a"] = agreement(
        [got[Path(row["audio"]["path"]).name] for row in rows], tokens_a
    )
    print(f"(c) {results['c']}", flush=True)
    table = render(results, args)
    print("\n" + table)
    if args.write:
        write_doc(table, args)
    if args.wandb:
        log_wandb(results, table)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", help="an audiofolder (metadata.csv with file_name,text) instead")
    p.add_argument("--minutes", type=float, default=12.0, help="size of the generated speech set")
    p.add_argument("--codec", default="snac_24khz", choices=sorted(GFLOP_PER_AUDIO_SECOND))
    p.add_argument("--cache", type=Path, default=Path("~/.cache/snactok").expanduser())
    p.add_argument("--no-write", dest="write", action="store_false", help="leave docs/ alone")
    p.add_argument("--wandb", action="store_true", help="log the table (WANDB_MODE applies)")
    p.add_argument("--original-only", help=argparse.SUPPRESS)  # (a) in a plain child process
    return p.parse_args()


def compose(codec: str, data: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from snactok.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(
            "config", [f"codec={codec}", "dataset=local_folder", f"dataset.path={data}"]
        )


# ----------------------------------------------------------------------------- data
def speech_set(minutes: float, root: Path) -> Path:
    """~`minutes` of espeak-ng speech as 16 kHz FLAC, 1-4 sentences a clip; built once, cached."""
    out = root.expanduser() / f"speech_{minutes:g}min_v{DATA_VERSION}"
    if (out / "metadata.csv").is_file():
        return out
    exe = demo.require_espeak()
    sentences = list(demo.DEMO_UTTERANCES) + list(demo.CALIBRATION_UTTERANCES)
    rng = np.random.default_rng(7)
    clips, total = [], 0.0
    print(f"building {minutes:g} min of espeak-ng speech in {out} ...", flush=True)
    while total < minutes * 60:
        voice = sentences[int(rng.integers(len(sentences)))][0]
        same_lang = [t for v, t in sentences if v.split("+")[0] == voice.split("+")[0]]
        text = " ".join(rng.choice(same_lang, size=int(rng.integers(1, 5))))
        speed, pitch = int(rng.integers(120, 176)), int(rng.integers(30, 71))
        audio = demo.trim_silence(demo.espeak(exe, voice, text, speed, pitch), demo.ESPEAK_RATE)
        audio = demo.normalize(demo.resample(audio, demo.ESPEAK_RATE, BENCH_RATE), 0.8)
        clips.append(demo.Clip(audio, BENCH_RATE, "flac", text, voice))
        total += len(audio) / BENCH_RATE
    tmp = out.with_name(out.name + ".tmp")
    demo.write_audiofolder(tmp, clips)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"{len(clips)} clips, {total / 60:.1f} min", flush=True)
    return out


def clip_rows(conf) -> list[dict]:
    from snactok.config.schema import typed
    from snactok.inputs.sources import open_sources

    (source,) = open_sources(typed(conf).dataset, None)
    return list(source.rows(0, source.num_rows))


# ----------------------------------------------------------------------------- measurements
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    cores = len(os.sched_getaffinity(0))
    return {"cpu": cpu, "cores": cores, "ram_gib": round(mem), "gpu": gpu, "torch": torch.__version__}


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Best of `repeats` fp32 n x n matmuls: the practical compute limit of this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def reader_cost(rows: list[dict], rate: int) -> dict:
    """CPU seconds per audio second to decode + resample, as a reader runs it."""
    from snactok.codec.encoder import set_cpu_numerics
    from snactok.inputs.audio import Resampler, decode

    threads = torch.get_num_threads()
    set_cpu_numerics()  # as a reader runs
    resample, audio_s, ours, raw = Resampler(rate), 0.0, 0.0, 0.0
    for row in rows:
        t = time.process_time()
        audio, sr = decode(row["audio"])
        resample(audio, sr)
        ours += time.process_time() - t
        t = time.process_time()
        data, sr2 = sf.read(row["audio"]["path"], dtype="float32", always_2d=True)
        AF.resample(torch.from_numpy(data.mean(axis=1)), sr2, rate)
        raw += time.process_time() - t
        audio_s += len(audio) / sr
    torch.set_num_threads(threads)
    return {"ours": round(ours / audio_s, 5), "raw": round(raw / audio_s, 5), "audio_s": audio_s}


def original_method(rows: list[dict], weights: Path, rate: int) -> tuple[dict, list[np.ndarray]]:
    """(a) in a fresh process with the environment users have: not this one, which runs with
    encode.py's malloc tunables."""
    job = Path(tempfile.mkdtemp(prefix="snactok-bench-a-"))
    paths = [row["audio"]["path"] for row in rows]
    (job / "job.json").write_text(json.dumps({"weights": str(weights), "rate": rate, "paths": paths}))
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--original-only", str(job)]
    subprocess.run(cmd, check=True, env=env)
    stats = json.loads((job / "result.json").read_text())
    with np.load(job / "tokens.npz") as npz:
        tokens = [npz[f"t{i}"] for i in range(len(paths))]
    shutil.rmtree(job, ignore_errors=True)
    return stats, tokens


def original_method_job(job: Path) -> None:
    """The original pipeline's loop: decode, resample, `SNAC.encode` one clip at a time, eager,
    torch defaults (oneDNN on, every core)."""
    from snac import SNAC

    spec = json.loads((job / "job.json").read_text())
    model = SNAC.from_pretrained(spec["weights"]).eval()
    tokens, audio_s = [], 0.0
    t = time.perf_counter()
    with torch.inference_mode():
        for path in spec["paths"]:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            wave = AF.resample(torch.from_numpy(data.mean(axis=1)), sr, spec["rate"])
            codes = model.encode(wave.view(1, 1, -1))
            tokens.append(torch.cat(codes, dim=1)[0].numpy())
            audio_s += len(data) / sr
    wall = time.perf_counter() - t
    stats = {"audio_s": round(audio_s, 1), "wall_s": round(wall, 1), "rate": audio_s / wall}
    stats["threads"] = torch.get_num_threads()
    (job / "result.json").write_text(json.dumps(stats))
    np.savez(job / "tokens.npz", **{f"t{i}": t for i, t in enumerate(tokens)})


def decoded(rows: list[dict], rate: int) -> list[torch.Tensor]:
    from snactok.inputs.audio import Resampler, decode

    resample = Resampler(rate)
    return [resample(*decode(row["audio"])) for row in rows]


def model_alone(
    clips: list[torch.Tensor],
    weights: Path,
    arch: dict,
    device: str,
    compile: bool,
    autocast: str | None = None,
) -> tuple[dict, list[np.ndarray]]:
    """Pre-decoded clips through BatchEncoder, bucketed by padded length as a worker does."""
    from snactok.codec.encoder import BatchEncoder, prepare_device
    from snactok.codec.weights import Weights, load_model
    from snactok.engine.launch import DEFAULT_BATCH_SAMPLES

    dev = prepare_device(device)
    model = load_model(Weights("random", "random", str(weights)), arch)
    t = time.perf_counter()
    batch_samples = DEFAULT_BATCH_SAMPLES[dev.type]
    encoder = BatchEncoder(model, dev, arch, compile, autocast, batch_samples)
    encoder.warm_up()
    warm = time.perf_counter() - t
    t = time.perf_counter()
    tokens = encode_grouped(encoder, clips, range(len(clips)))
    wall = time.perf_counter() - t
    audio_s = sum(len(c) for c in clips) / arch["sampling_rate"]
    stats = {"audio_s": round(audio_s, 1), "wall_s": round(wall, 1), "rate": audio_s / wall}
    stats |= {"warmup_s": round(warm, 1), "compiled": encoder.compiled, "fallback": encoder.fallback}
    return stats, tokens


def encode_grouped(encoder, clips: list[torch.Tensor], order) -> list[np.ndarray]:
    """Each clip's tokens, the clips taken in `order` and grouped by padded length into batches
    of `encoder.batch_samples`, as a device worker groups them."""
    from snactok.codec.layout import padded_length

    buckets: dict[int, list[int]] = defaultdict(list)
    for i in order:
        buckets[padded_length(len(clips[i]), encoder.multiple)].append(int(i))
    tokens: list = [None] * len(clips)
    for length, members in buckets.items():
        per = max(1, encoder.batch_samples // length)
        for k in range(0, len(members), per):
            part = members[k : k + per]
            batch = encoder.staging(len(part), length)
            for row, i in enumerate(part):
                batch[row, : len(clips[i])] = clips[i]
            for i, codes in zip(part, encoder.encode(batch, len(part)), strict=True):
                tokens[i] = codes.copy()
    return tokens


def agreement(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    same = sum(int((g.astype(np.int64) == w).sum()) for g, w in zip(got, want, strict=True))
    return same / sum(w.size for w in want)


def pipeline_runs(args: argparse.Namespace, data: Path, clips: int) -> dict:
    """encode.py on N (cold cache, then warm) and 2N clips; steady = difference quotient."""
    half = clips // 2
    cache = Path(tempfile.mkdtemp(prefix="snactok-bench-cache-"))
    # the cold run builds its own random weights too: copy the cached ones so only compile is cold
    shutil.copytree(args.cache.expanduser() / "random_weights", cache / "random_weights")
    runs = {}
    for name, rows in (("cold_n", half), ("warm_n", half), ("warm_2n", clips)):
        runs[name] = encode_run(args.codec, data, rows, cache)
        print(f"  {name}: { {k: v for k, v in runs[name].items() if k != 'tokens'} }", flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    n, two_n = runs["warm_n"], runs["warm_2n"]
    steady = (two_n["audio_s"] - n["audio_s"]) / (two_n["wall_s"] - n["wall_s"])
    return {
        "runs": runs,
        "steady_rate": steady,
        "startup_warm_s": n["wall_s"] - n["audio_s"] / steady,
        "startup_cold_s": runs["cold_n"]["wall_s"] - n["audio_s"] / steady,
        "inside_rate": two_n["audio_s"] / (two_n["inside_wall_s"] - two_n["first_tokens_s"]),
    }


def encode_run(codec: str, data: Path, rows: int, cache: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix="snactok-bench-run-"))
    cmd = [
        sys.executable,
        str(REPO / "encode.py"),
        f"codec={codec}",
        "codec.weights=random",
        "dataset=local_folder",
        f"dataset.path={data}",
        f"runtime.max_rows={rows}",
        f"runtime.cache_dir={cache}",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"encode.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = read_run(out).summary.record  # the run's totals (snactok.output.rundir)
    tokens = shard_tokens(out)
    shutil.rmtree(out, ignore_errors=True)
    worker = summary["workers"]["0"]
    return {
        "tokens": tokens,
        "path": worker["path"],
        "verify": summary["verify"] | {"seconds": worker.get("verify_seconds", 0.0)},
        "rows": summary["rows_written"],
        "audio_s": summary["audio_seconds"],
        "wall_s": round(wall, 2),
        "inside_wall_s": summary["wall_seconds"],
        "first_tokens_s": summary["seconds_to"].get("first_tokens", 0.0),
        "peak_rss_mb": summary["peak_rss_mb"],
    }


def shard_tokens(run_dir: Path) -> dict[str, np.ndarray]:
    """File name (the end of a folder row's id) -> flat tokens, from a run's shards."""
    from snactok.output.formats import read_shard

    tokens = {}
    for shard in read_run(run_dir).shard_files(format="jsonl"):
        for r in read_shard(shard):
            layers = sorted(k for k in r if k.startswith("snac_layer_"))
            tokens[Path(str(r["id"])).name] = np.concatenate([np.asarray(r[k]) for k in layers])
    return tokens


if __name__ == "__main__":
    main()
