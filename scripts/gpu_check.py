"""The token contract and speed on a CUDA GPU, in one run (`python scripts/gpu_check.py`).

    python scripts/gpu_check.py                          # random calibrated snac_24khz weights
    python scripts/gpu_check.py --codec snac_44khz --weights /models/snac_44khz

Reports, against the reference (single-clip `SNAC.encode`, eager, torch's defaults on the GPU):
  1. the reference against itself over repeated calls (TorchScript's profiling executor may fuse
     Snake after the first calls);
  2. parity of the pipeline's fast path: fixed-shape batches, eager and compiled, and the start-up
     check's verdict;
  3. determinism across batch compositions (the same clips in other company and order);
  4. model-alone throughput, eager, compiled and bf16 autocast, with bf16's token agreement;
  5. one end-to-end `encode.py` run on the demo set with every row verified.
Nothing is asserted: it prints what it measures, for docs/performance.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmark import agreement, encode_grouped  # scripts/ is on sys.path when this file runs

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--codec", default="snac_24khz")
    p.add_argument("--weights", help="a dir with config.json + pytorch_model.bin; default: random")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--seconds", type=float, default=240.0, help="audio for the throughput runs")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible: run this on a GPU machine")

    from snactok.codec.encoder import Reference, prepare_device
    from snactok.codec.weights import calibration_audio, load_model

    arch, weights = codec_weights(args.codec, args.weights)
    device = prepare_device(args.device)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, weights {weights.path}")
    print(
        f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} matmul.allow_tf32="
        f"{torch.backends.cuda.matmul.allow_tf32} (torch's defaults, kept)"
    )
    speech = calibration_audio(arch["sampling_rate"], seconds=20.0, clip_seconds=1.0).reshape(-1)
    rng = np.random.default_rng(0)
    clips = random_clips(speech, arch["sampling_rate"], rng)
    reference = Reference(load_model(weights, arch, fold=False), device)
    first = [reference.tokens(c) for c in clips[:8]]
    again = [reference.tokens(c) for c in clips[:8]]
    print("1. reference, first vs later calls:", _share(again, first))
    want = [reference.tokens(c) for c in clips]
    check_fast_paths(arch, weights, device, reference, clips, want, rng)
    long = [
        speech[: int(5 * arch["sampling_rate"])].clone() for _ in range(max(1, int(args.seconds / 5)))
    ]
    check_speed(arch, weights, device, reference, long, clips, want)
    check_encode_py(args.codec, weights.path, args.device)


def codec_weights(codec: str, weights_dir: str | None):
    """The codec's arch, and the weights to test: `weights_dir`, else random ones (cached)."""
    from omegaconf import OmegaConf

    from snactok.codec.weights import Weights, random_weights_dir

    arch = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "codec" / f"{codec}.yaml").arch)
    wdir = (
        Path(weights_dir)
        if weights_dir
        else random_weights_dir(arch, 0, Path("~/.cache/snactok/random_weights").expanduser())
    )
    return arch, Weights("local", str(wdir), str(wdir))


def random_clips(speech: torch.Tensor, rate: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """40 clips of 0.2-6 s cut from `speech` at random, at random gains."""
    clips = []
    for n in rng.integers(int(0.2 * rate), int(6 * rate), 40):
        start = int(rng.integers(0, len(speech) - n))
        clips.append(speech[start : start + n].clone() * float(rng.uniform(0.3, 2.0)))
    return clips


def check_fast_paths(arch, weights, device, reference, clips, want, rng) -> None:
    """2-3: the fast path's fixed-shape batches against the reference, and against themselves in
    another company and order."""
    from snactok.codec.encoder import BatchEncoder, probe_clips, self_check
    from snactok.codec.weights import load_model
    from snactok.engine.launch import DEFAULT_BATCH_SAMPLES

    for compiled in (False, True):
        enc = BatchEncoder(
            load_model(weights, arch), device, arch, compiled, None, DEFAULT_BATCH_SAMPLES["cuda"]
        )
        enc.warm_up()
        verdict = self_check(enc, reference, probe_clips(arch))
        got = encode_grouped(enc, clips, order=range(len(clips)))
        shuffled = encode_grouped(enc, clips, order=rng.permutation(len(clips)))
        name = "compiled" if compiled else "eager"
        print(
            f"2. {name} fixed-shape batches vs reference: {_share(got, want)}; "
            f"start-up check: {verdict or 'passed'}"
        )
        print(f"3. {name}, other company and order vs first order: {_share(shuffled, got)}")


def check_speed(arch, weights, device, reference, long, clips, want) -> None:
    """4: the reference's and each fast path's throughput; bf16's agreement with fp32."""
    from snactok.codec.encoder import BatchEncoder
    from snactok.codec.weights import load_model
    from snactok.engine.launch import DEFAULT_BATCH_SAMPLES

    ref_rate = throughput(lambda: [reference.tokens(c) for c in long], len(long) * 5.0)
    print(f"4. reference (batch 1, eager): {ref_rate:.0f}x real time")
    for compiled, autocast in ((False, None), (True, None), (True, "bf16")):
        enc = BatchEncoder(
            load_model(weights, arch), device, arch, compiled, autocast, DEFAULT_BATCH_SAMPLES["cuda"]
        )
        enc.warm_up()
        r = throughput(lambda enc=enc: encode_grouped(enc, long, range(len(long))), len(long) * 5.0)
        extra = ""
        if autocast:
            extra = f"; tokens vs fp32 reference: {_share(encode_grouped(enc, clips, range(len(clips))), want)}"
        print(
            f"   fast path {'compiled' if compiled else 'eager'}{' bf16' if autocast else ''}: "
            f"{r:.0f}x real time ({r / ref_rate:.1f}x the reference){extra}"
        )


def check_encode_py(codec: str, weights_dir: str, device: str) -> None:
    """5: encode.py on the demo set on this device, every row verified; its ready/verified lines."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            str(REPO / "encode.py"),
            "dataset=demo",
            f"codec={codec}",
            f"codec.weights={weights_dir}",
            f"runtime.devices=[{device}]",
            "runtime.verify_fraction=1",
            "wandb.mode=disabled",
            f"hydra.run.dir={out}",
        ]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        lines = [
            ln for ln in (proc.stdout + proc.stderr).splitlines() if "verified" in ln or "ready" in ln
        ]
        print(f"5. encode.py on the demo set: rc={proc.returncode} in {time.perf_counter() - t:.0f} s")
        for line in lines:
            print("   " + line.split(" - ", 1)[-1])


def throughput(fn, audio_seconds: float) -> float:
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return audio_seconds / (time.perf_counter() - t)


def _share(got: list[np.ndarray], want: list[np.ndarray]) -> str:
    return f"{100 * agreement(got, want):.3f}% of {sum(w.size for w in want)} tokens equal"


if __name__ == "__main__":
    main()
