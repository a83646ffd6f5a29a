"""What a run's manifest header records about where its shards came from: the config, weights,
sources, devices, package versions, git commit and host, and the fingerprint a resume checks."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from snactok.codec.weights import RANDOM, Weights
from snactok.config.schema import Config, plain
from snactok.inputs.layouts import REPO_ROOT
from snactok.inputs.sources import Source
from snactok.inputs.units import Unit
from snactok.output.files import sha256_file
from snactok.output.formats import SCHEMA_VERSION
from snactok.output.resume import fingerprint

DRY_RUN_NOTE = (
    "DRY RUN (runtime.dry_run=true): no model; the tokens are a fixed stand-in pattern, not the "
    "audio's (snactok.codec.dryrun). It measures the pipeline around the model"
)
PACKAGES = (
    "snactok",
    "torch",
    "torchaudio",
    "snac",
    "datasets",
    "numpy",
    "hydra-core",
    "soundfile",
    "av",
    "pyarrow",
    "transformers",
    "tokenizers",
)
# Versions that can change tokens (kernels, the model code): part of the fingerprint.
TOKEN_PACKAGES = ("torch", "snac")


def byte_packages(output_format: str, template: bool = False) -> tuple[str, ...]:
    """Packages whose version changes the shards' bytes: pyarrow writes the Parquet files, and
    with a template transformers and tokenizers make the text's ids."""
    parquet = ("pyarrow",) if output_format != "jsonl" else ()
    return TOKEN_PACKAGES + parquet + (("transformers", "tokenizers") if template else ())


def header(
    conf: Config,
    weights: Weights,
    sources: list[Source],
    devices: list[str],
    chunking: dict,
    units: list[Unit],
    text_ids: Any = None,
) -> dict[str, Any]:
    """The manifest's first record for a new run; its `fingerprint` is what a resume must match.
    With a template, `text_ids` (inputs.text.TextIds) names its tokenizer."""
    packages = {p: version(p) for p in PACKAGES}
    # the layout as configured, its tokenizer named by what it is (inputs.text.tokenizer_identity)
    template = plain(conf.template) | {"tokenizer": text_ids.identity} if text_ids else None
    model_file = Path(weights.path) / "pytorch_model.bin" if weights.path else None
    weights_info = weights.describe() | {"sha256": sha256_file(model_file) if model_file else None}
    return {
        "type": "header",
        "schema_version": SCHEMA_VERSION,
        **({"dry_run": DRY_RUN_NOTE} if conf.runtime.dry_run else {}),
        "codec": conf.codec.name,
        "arch": plain(conf.codec.arch),
        "weights": weights_info,
        "random_weights": weights.kind == RANDOM,
        "dataset": conf.dataset.name,
        "sources": [s.describe() for s in sources],
        "devices": devices,
        "chunking": chunking,
        # every unit of the dataset, for scripts/merge.py to check the jobs against
        "units": {"total": len(units), "names": [u.name for u in units]},
        "packages": packages,
        "git_commit": git_commit(),
        "config": plain(conf),
        **({"template": template} if template else {}),
        "fingerprint": fingerprint(
            conf,
            {k: weights_info[k] for k in ("kind", "commit", "sha256")},
            [s.identity() for s in sources],
            sorted({d.split(":")[0] for d in devices}),
            chunking,
            {p: packages[p] for p in byte_packages(conf.output.format, template is not None)},
            template,
        ),
    } | host()


def host() -> dict[str, Any]:
    """Which machine and process wrote a record."""
    return {"host": platform.node(), "pid": os.getpid(), "python": platform.python_version()}


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
