"""Which devices a run encodes on: `auto`, `cpu`, `cuda`, `cuda:N`."""

from __future__ import annotations

import glob
import os

import torch

from snactok.errors import ConfigError


def visible_nvidia_gpus() -> int:
    """GPUs the driver exposes to this process, whether or not torch can use them."""
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is not None and mask.strip() in ("", "-1"):
        return 0
    nodes = [p for p in glob.glob("/dev/nvidia*") if p[len("/dev/nvidia") :].isdigit()]
    if mask is not None:
        return min(len(nodes), len([m for m in mask.split(",") if m.strip()]))
    return len(nodes)


def resolve_devices(
    requested: list[str], cuda_ok: bool | None = None, visible: int | None = None
) -> list[str]:
    """Expand `auto` and check every device; never fall back silently from a broken CUDA to CPU."""
    cuda_ok = torch.cuda.is_available() if cuda_ok is None else cuda_ok
    visible = visible_nvidia_gpus() if visible is None else visible
    count = torch.cuda.device_count() if cuda_ok else 0
    if list(requested) == ["auto"]:
        if cuda_ok and count:
            return [f"cuda:{i}" for i in range(count)]
        if visible:
            raise ConfigError(
                f"{visible} NVIDIA GPU(s) are visible but CUDA is unusable by torch "
                f"{torch.__version__} (CUDA {torch.version.cuda}): often a driver older than the "
                "build needs. Install a torch build for your driver (see README, 'Older NVIDIA "
                "drivers'), or run on CPU on purpose with runtime.devices=[cpu]."
            )
        return ["cpu"]
    return [_check_device(d, count) for d in requested]


def _check_device(name: str, count: int) -> str:
    name = str(name).strip()
    if name == "cpu":
        return name
    if name == "cuda":
        name = "cuda:0"
    index = name[len("cuda:") :] if name.startswith("cuda:") else None
    if index is None or not index.isdigit():
        raise ConfigError(
            f"runtime.devices has {name!r}; valid entries are auto, cpu, cuda, cuda:0..cuda:N"
        )
    if int(index) >= count:
        valid = [f"cuda:{i}" for i in range(count)] or ["cpu (no usable CUDA device here)"]
        raise ConfigError(f"runtime.devices has {name!r}, but the usable devices are {valid}")
    return name


def usable_cores() -> int:
    """Cores this process may run on: Slurm's (or taskset's) allocation, not the whole node."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_readers(devices: list[str], cores: int) -> int:
    """runtime.num_readers=null: one reader per CPU worker, four per GPU, within the cores left.

    One reader keeps up with a CPU worker with room to spare (docs/performance.md); more only
    compete with the encoder for cores. For a GPU, four readers cover 16 kHz FLAC at the planned
    per-GPU rate, not MP3 or Opus (docs/scale.md gives cores per GPU per input kind, from make
    ceiling); a dry run and `runtime.plan=true` say when the readers bound a run.
    """
    gpus = sum(d != "cpu" for d in devices)
    cpus = len(devices) - gpus
    spare = max(1, cores - cpus)
    return max(1, cpus + min(4 * gpus, spare))
