"""Shared fixtures: composed configs, random-weight SNACs in the Hub layout, a real HF cache, CLI runs.

Nothing here reaches the network: HF_HUB_OFFLINE=1 for this process and every child.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from fake_hub import REPO, URL
from helpers import SPLIT_ARGS, assert_codes_spread, compose_cfg, run_cli
from huggingface_hub import HfApi, RepoUrl
from huggingface_hub.hf_api import DatasetInfo
from huggingface_hub.utils import filter_repo_objects

from snactok.codec.encoder import set_cpu_numerics
from snactok.codec.weights import arch_dict, random_snac, save_pretrained

os.environ["HF_HUB_OFFLINE"] = "1"


os.environ.setdefault("WANDB_MODE", "disabled")


# References computed here run as users run SNAC.encode: torch's default backends, at the thread
# count CPU tokens are defined at (snactok.codec.encoder.CPU_THREADS; torch's default on 2 cores).
set_cpu_numerics()


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """codec name -> a dir with a calibrated random SNAC as config.json + pytorch_model.bin.

    It asserts the calibration's point: codes spread over the codebook, so token comparisons mean
    something (plain random init puts ~98% of layer-1 tokens on one code).
    """
    built: dict[str, Path] = {}

    def get(codec: str) -> Path:
        if codec not in built:
            arch = arch_dict(compose_cfg([f"codec={codec}"]).codec.arch)
            model = random_snac(arch, seed=0)
            assert_codes_spread(model, arch)
            built[codec] = save_pretrained(model, arch, tmp_path_factory.mktemp(codec))
        return built[codec]

    return get


@pytest.fixture(scope="session")
def orpheus_tokenizer(tmp_path_factory):
    """A real tokenizer in the Orpheus id layout, saved with save_pretrained (tests/orpheus_tokenizer.py)."""
    from orpheus_tokenizer import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("orpheus_tokenizer"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, weights_dir):
    """The demo set with 2 readers and 2 CPU device workers, compiled, one clip per batch (the CPU
    default), 16 rows per unit (3 shards). Other tests compare their shards with its bytes."""
    run_dir = tmp_path_factory.mktemp("demo_2x2")
    proc = run_cli(
        [
            "dataset=demo",
            f"codec.weights={weights_dir('snac_24khz')}",
            "runtime.devices=[cpu,cpu]",
            "runtime.num_readers=2",
            "runtime.compile=true",
            "output.lines_per_file=16",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def split_reference(tmp_path_factory, weights_dir):
    """SPLIT_ARGS as one job on one node: what every split run must reproduce row for row."""
    run_dir = tmp_path_factory.mktemp("split_reference")
    proc = run_cli(
        [*SPLIT_ARGS, f"codec.weights={weights_dir('snac_24khz')}", f"hydra.run.dir={run_dir}"]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


@pytest.fixture
def hub(tmp_path):
    """The Hub stand-in (tests/fake_hub.py): an autospec HfApi whose upload_folder copies the
    files it would send into `uploaded`."""
    api = mock.create_autospec(HfApi, instance=True)
    api.create_repo.return_value = RepoUrl(URL)
    api.repo_info.return_value = DatasetInfo(id=REPO, private=True)
    uploaded = tmp_path / "uploaded"
    seen: dict = {}

    def upload_folder(*, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = [p.relative_to(folder).as_posix() for p in sorted(folder.glob("**/*")) if p.is_file()]
        seen["links"] = {f for f in files if (folder / f).is_symlink()}
        for rel in filter_repo_objects(
            files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns
        ):
            (uploaded / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / rel, uploaded / rel)
        return mock.DEFAULT

    api.upload_folder.side_effect = upload_folder
    return SimpleNamespace(api=api, uploaded=uploaded, seen=seen)
