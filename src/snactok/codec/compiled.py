"""SNAC's encoder rewritten so that `torch.compile` fuses it and still gives eager's bits.

Plain `torch.compile(model.encoder)` changes tokens. Inductor inlines its own `sin` (Sleef), which
differs from eager's (MKL VML on CPU) in the last bit for ~21% of inputs; on calibrated speech that
flipped ~4% of tokens. The rewrites keep every rounding step of eager:

- Snake calls `sin` as an opaque op, so the compiled graph runs eager's kernel; the other eager
  passes of the activation fuse into two.
- Every convolution stays an aten call, so it runs the kernel eager runs (oneDNN on CPU, cuDNN on
  CUDA) on the same shapes.
- The local attention of the 32 and 44.1 kHz models runs eagerly: compiled layer norm and softmax
  reduce in other orders. It works at the latent rate, so it costs little.

A worker does not take this on trust: `snactok.codec.encoder.self_check` compares the compiled encoder
with single-clip `SNAC.encode` on probe clips before the first batch, and a mismatch means eager.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch
from snac.attention import LocalMHA
from snac.layers import Snake1d
from torch import nn

log = logging.getLogger(__name__)


@torch.library.custom_op("snactok::eager_sin", mutates_args=())
def eager_sin(x: torch.Tensor) -> torch.Tensor:
    """`torch.sin`, opaque to inductor, so compiled code calls the eager kernel."""
    return torch.sin(x)


@eager_sin.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class ExactSnake(nn.Module):
    """`snac.layers.snake` with the same operations in the same order, `sin` kept opaque."""

    def __init__(self, alpha: torch.Tensor):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(shape[0], shape[1], -1)
        x = x + (self.alpha + 1e-9).reciprocal() * eager_sin(self.alpha * x).pow(2)
        return x.reshape(shape)


class EagerAttention(nn.Module):
    """Runs the wrapped attention outside the compiled graph."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.attention = attention

    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)


def make_exact_for_compile(module: nn.Module) -> int:
    """Swap layers in place for their exact, fusable forms; return how many were swapped."""
    swapped = 0
    for name, child in module.named_children():
        if isinstance(child, Snake1d):
            new: nn.Module | None = ExactSnake(child.alpha)
        elif isinstance(child, LocalMHA):
            new = EagerAttention(child)
        else:
            new = None
            swapped += make_exact_for_compile(child)
        if new is not None:
            setattr(module, name, new)
            swapped += 1
    return swapped


def remember_isa_probes(cache_dir: Path) -> bool:
    """Keep inductor's CPU instruction-set probes on disk, so each process does not redo them.

    To choose AVX2/AVX-512 code, inductor compiles test kernels and loads each in a fresh
    `python -c "import torch ..."`, six times on this machine: 15.7 s of a 21 s warm-cache
    worker start. The verdicts depend only on the CPU, the compiler flags and torch, so they
    are keyed by those and stored next to the inductor cache. Returns False (and changes
    nothing) if this torch has no such probe to wrap. Once per process: the first call's
    `cache_dir` is the one used.
    """
    try:
        from torch._inductor.cpu_vec_isa import VecISA
    except ImportError:
        return False
    probe = getattr(VecISA, "check_build", None)
    if probe is None or getattr(probe, "_snactok_cached", False):
        return probe is not None
    store = cache_dir / f"isa_probes-torch{torch.__version__}-{_cpu_fingerprint()}.json"

    def check_build(self: Any, code: str) -> bool:
        key = hashlib.sha256(f"{self._arch_flags}\n{code}".encode()).hexdigest()
        known = json.loads(store.read_text()) if store.is_file() else {}
        if key not in known:
            known[key] = bool(probe(self, code))
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            tmp.replace(store)
        return known[key]

    check_build._snactok_cached = True  # type: ignore[attr-defined]
    VecISA.check_build = check_build
    return True


def _cpu_fingerprint() -> str:
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        )
    except (OSError, StopIteration):
        flags = platform.processor()
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:16]


def compile_encoder(encoder: nn.Module) -> Any:
    """The encoder rewritten for exact fusion and wrapped in `torch.compile` (lazy: compiles on
    first call). Dynamic shapes, so clip lengths do not each trigger a compile."""
    swapped = make_exact_for_compile(encoder)
    log.debug("rewrote %d encoder layers for exact compilation", swapped)
    return torch.compile(encoder, dynamic=True)
