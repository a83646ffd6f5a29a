"""The checks that run before any process starts: values a schema type cannot refuse, keys
that must agree with each other, and credentials, which never belong in a config.

Each error names the key, the bad value and what would work.
"""

from __future__ import annotations

import copy
import re
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snactok.codec import orpheus
from snactok.config.schema import Flatten
from snactok.errors import ConfigError

# Keys that look like credentials. Hydra saves every override (.hydra/overrides.yaml) and the
# composed config, and both end up in logs and W&B; secrets come from the environment instead.
# Key names that look like credentials: hf_token, api_key, apikey, password, secret. `token`
# followed by `iz` is a tokenizer (template.tokenizer), which names a vocabulary, not a secret.
SECRET_KEY = re.compile(r"token(?!iz)|api_?key|password|secret")
SECRET_HINT = (
    "Secrets never go in the config: set HF_TOKEN (or run `hf auth login`) for the Hub, "
    "WANDB_API_KEY (or run `wandb login`) for W&B and MDC_API_KEY for the Mozilla Data Collective."
)


def looks_secret(key: Any) -> bool:
    """Whether a config key's name looks like a credential's."""
    return SECRET_KEY.search(str(key).lower()) is not None


def refuse_secret_overrides(args: list[str]) -> None:
    """Exit (code 2) before Hydra saves anything when an override looks like a credential."""
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" in arg and looks_secret(key.lstrip("+~")):
            print(f"config error: refusing the override `{key}=...`. {SECRET_HINT}", file=sys.stderr)
            raise SystemExit(2)


def _secret_keys(cfg: Any, prefix: str = "") -> list[str]:
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    found = []
    for key in keys:
        full = f"{prefix}.{key}".lstrip(".") if isinstance(cfg, DictConfig) else f"{prefix}[{key}]"
        if isinstance(key, str) and looks_secret(key):
            found.append(full)
        node = cfg._get_node(key)
        if OmegaConf.is_config(node):
            found += _secret_keys(node, full)
    return found


def is_repo_id(repo: str) -> bool:
    """`namespace/name`: a Hub dataset id must name its namespace (upload_folder won't add it)."""
    return repo.count("/") == 1 and all(repo.split("/"))


def check_config(cfg: DictConfig) -> None:
    """Fail with a message naming the key when the config cannot work. No I/O here.

    Choices (`output.format`, ...) are not checked here: the schema's enums refuse a bad one at
    composition."""
    cfg = _with_mdc_placeholder(cfg)
    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(
            f"missing required config value(s): {', '.join(missing)}; "
            f"set them on the command line, e.g. {missing[0]}=..."
        )
    _check_runtime(cfg.runtime)
    _check_output(cfg.output)
    rt = cfg.runtime
    _require(len(rt.devices) >= 1, "runtime.devices", list(rt.devices), "e.g. [auto], [cpu], [cuda:0]")
    _check_save(cfg.save, rt.dry_run)
    secrets = _secret_keys(cfg)
    if secrets:
        raise ConfigError(f"config keys {secrets} look like credentials. {SECRET_HINT}")
    _check_flatten(cfg)
    _check_template(cfg)
    _check_sources(cfg.dataset)
    _require(
        cfg.dataset.streaming or not cfg.dataset.reshard,
        "dataset.reshard",
        cfg.dataset.reshard,
        "false unless dataset.streaming=true (it splits streamed Parquet files by row group)",
    )


def _check_runtime(rt: DictConfig) -> None:
    _require(
        rt.num_readers is None or rt.num_readers >= 1,
        "runtime.num_readers",
        rt.num_readers,
        "null or an integer >= 1",
    )
    _require(
        rt.batch_samples is None or rt.batch_samples >= 1,
        "runtime.batch_samples",
        rt.batch_samples,
        "null or an integer >= 1",
    )
    _require(rt.queue_samples >= 1, "runtime.queue_samples", rt.queue_samples, "an integer >= 1")
    _require(
        0 <= rt.verify_fraction <= 1, "runtime.verify_fraction", rt.verify_fraction, "a share in 0..1"
    )
    _require(
        rt.stall_seconds is None or rt.stall_seconds > 0,
        "runtime.stall_seconds",
        rt.stall_seconds,
        "null or seconds > 0",
    )
    _require(rt.min_samples >= 1, "runtime.min_samples", rt.min_samples, "an integer >= 1")
    _require(rt.read_block_rows >= 1, "runtime.read_block_rows", rt.read_block_rows, "an integer >= 1")
    _require(rt.num_jobs >= 1, "runtime.num_jobs", rt.num_jobs, "an integer >= 1")
    _require(0 <= rt.job_index < rt.num_jobs, "runtime.job_index", rt.job_index, f"0..{rt.num_jobs - 1}")


def _check_output(out: DictConfig) -> None:
    _require(out.lines_per_file >= 1, "output.lines_per_file", out.lines_per_file, "an integer >= 1")
    _require(0 <= out.gzip_level <= 9, "output.gzip_level", out.gzip_level, "0..9")
    _require(out.writers >= 0, "output.writers", out.writers, "0 (the main process) or more")


def _check_save(save: DictConfig, dry_run: bool) -> None:
    repo = save.hub_repo
    _require(
        repo is None or is_repo_id(repo),
        "save.hub_repo",
        repo,
        "null or a Hub dataset id `namespace/name`",
    )
    for key in ("local", "hub_repo"):
        _require(
            not (dry_run and save[key]),
            f"save.{key}",
            save[key],
            "null with runtime.dry_run=true (a dry run's tokens are a stand-in pattern, not data)",
        )


def _with_mdc_placeholder(cfg: DictConfig) -> DictConfig:
    """With dataset.mdc_id the download fills dataset.path (snactok.inputs.mdc.fetch) after these checks;
    check a copy with a stand-in path, so the sources' `${dataset.path}` resolves."""
    mdc_id = cfg.dataset.get("mdc_id")
    if not mdc_id:
        return cfg
    if not OmegaConf.is_missing(cfg.dataset, "path"):
        raise ConfigError(
            f"dataset.mdc_id={mdc_id!r} sets dataset.path to the download, but dataset.path is "
            f"{cfg.dataset.path!r}: drop one of the two (dataset=common_voice leaves dataset.path ???)"
        )
    checked = copy.deepcopy(cfg)
    checked.dataset.path = f"<download of dataset.mdc_id={mdc_id}>"
    return checked


def _check_flatten(cfg: DictConfig) -> None:
    """Orpheus's order needs snac_24khz's layout: 3 layers, vq_strides [4, 2, 1], 4096 codes."""
    arch = cfg.codec.arch
    layout = (tuple(arch.vq_strides), arch.codebook_size)
    if cfg.output.flatten == Flatten.orpheus and layout != (orpheus.VQ_STRIDES, orpheus.CODEBOOK_SIZE):
        raise ConfigError(
            f"output.flatten=orpheus works with snac_24khz only (3 layers, vq_strides "
            f"{list(orpheus.VQ_STRIDES)}, codebook_size {orpheus.CODEBOOK_SIZE}); codec "
            f"{cfg.codec.name!r} has vq_strides {list(arch.vq_strides)} and codebook_size "
            f"{arch.codebook_size}. Use codec=snac_24khz, or output.flatten=null"
        )


def _check_template(cfg: DictConfig) -> None:
    """A template's audio tokens are Orpheus's 7-token frames: snac_24khz's layout only."""
    if cfg.get("template") is None:
        return
    arch = cfg.codec.arch
    if (tuple(arch.vq_strides), arch.codebook_size) != (orpheus.VQ_STRIDES, orpheus.CODEBOOK_SIZE):
        raise ConfigError(
            f"template={cfg.template.name} needs codec=snac_24khz (3 layers, vq_strides "
            f"{list(orpheus.VQ_STRIDES)}, codebook_size {orpheus.CODEBOOK_SIZE}), not "
            f"codec={cfg.codec.name} (vq_strides {list(arch.vq_strides)}); use codec=snac_24khz, "
            "or template=null"
        )


def missing_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Full keys whose value is `???`, without resolving interpolations.

    `OmegaConf.missing_keys` resolves them, so `path: ${dataset.path}` would raise instead of
    naming `dataset.path`.
    """
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    found = []
    for key in keys:
        full = f"{prefix}.{key}" if isinstance(cfg, DictConfig) else f"{prefix}[{key}]"
        full = full.lstrip(".")
        node = cfg._get_node(key)
        if OmegaConf.is_config(node):
            found += missing_keys(node, full)
        elif OmegaConf.is_missing(cfg, key):
            found.append(full)
    return sorted(found)


def _require(ok: bool, key: str, value: Any, choices: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not valid; expected {choices}")


def _check_sources(dataset: DictConfig) -> None:
    if not dataset.sources:
        raise ConfigError(
            f"dataset.sources is empty for dataset '{dataset.name}'; add at least one source"
        )
    constant_keys = None
    for i, src in enumerate(dataset.sources):
        if bool(src.hub) == bool(src.path):
            raise ConfigError(
                f"dataset.sources[{i}] must set exactly one of `hub` (a Hub dataset id) or `path` "
                f"(a local folder); got hub={src.hub!r}, path={src.path!r}"
            )
        keep = src.keep_columns
        by_list = OmegaConf.is_list(keep) and all(isinstance(k, str) for k in keep)
        by_name = OmegaConf.is_dict(keep) and all(isinstance(v, str) for v in keep.values())
        if not (by_list or by_name):
            raise ConfigError(
                f"dataset.sources[{i}].keep_columns={keep!r} is not valid; expected a list of "
                "columns or dotted paths, e.g. [json.dnsmos], or a mapping of output names to "
                "them, e.g. {emilia_duration: json.duration}"
            )
        keys = sorted(src.add_constant.keys())
        if constant_keys is None:
            constant_keys = keys
        elif keys != constant_keys:
            raise ConfigError(
                f"dataset.sources[{i}].add_constant has keys {keys} but dataset.sources[0] has "
                f"{constant_keys}; every source of one dataset must carry the same constant keys"
            )
