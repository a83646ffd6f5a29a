"""Config schemas (one per Hydra group) and the checks that run before any process starts.

The YAML files under `conf/` hold values only; these dataclasses give every key its type, so a
typo or a wrong type fails at composition with Hydra's own message.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from snactok.codec import orpheus
from snactok.errors import ConfigError


@dataclass
class ArchConfig:
    """The fields of a SNAC `config.json`."""

    sampling_rate: int = MISSING
    encoder_dim: int = MISSING
    encoder_rates: list[int] = MISSING
    decoder_dim: int = MISSING
    decoder_rates: list[int] = MISSING
    attn_window_size: int | None = None
    codebook_size: int = 4096
    codebook_dim: int = 8
    vq_strides: list[int] = MISSING
    noise: bool = True
    depthwise: bool = True


@dataclass
class CodecConfig:
    name: str = MISSING
    repo: str = MISSING
    # Hub repo id, a local dir with config.json + pytorch_model.bin, or `random`.
    weights: str = "${codec.repo}"
    # Hub revision (branch, tag or commit) used when `weights` is a repo id.
    revision: str | None = None
    arch: ArchConfig = field(default_factory=ArchConfig)


@dataclass
class SourceConfig:
    hub: str | None = None
    path: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    # Hub or local data files to read, as datasets' `data_files` (a glob, a list, or split ->
    # globs): e.g. Emilia/EN/*.tar for one language of a WebDataset repo. null: all of them.
    data_files: Any = None
    # Column names, or dotted paths into a JSON column (WebDataset: json.text, json.speaker).
    text_column: str | None = "text"
    # `auto`: the `audio` column, else the columns that hold audio files (WebDataset: mp3, flac).
    audio_column: str = "auto"
    # `auto`: a column named `speaker` or `speaker_id` if there is one; null: no speaker.
    speaker_column: str | None = "auto"
    # `auto`: a column named `id` if there is one, else a local folder's file path, else the row
    # index; null: the row index.
    id_column: str | None = "auto"
    add_constant: dict[str, Any] = field(default_factory=dict)
    # More source columns or dotted paths to write, so rows can be filtered later: a list names
    # each by its last part (json.dnsmos -> dnsmos), a mapping names them ({src_duration: json.duration}).
    keep_columns: Any = field(default_factory=list)


@dataclass
class DatasetConfig:
    name: str = MISSING
    sources: list[SourceConfig] = field(default_factory=list)
    # Read sources as IterableDatasets (no full download); the units become their input shards.
    streaming: bool = False
    # With streaming: split Parquet files into one input shard (unit) per row group.
    reshard: bool = False
    # A folder for sources to interpolate (`local_folder` leaves it ???); the others set null.
    # MISSING here, because Hydra's merge lets a YAML `???` keep a schema default.
    path: str | None = MISSING
    # One source per language: a local source's path gets /<lang>, and an add_constant value
    # `{lang}` becomes the language (dataset=common_voice: dataset.languages=[en,de]).
    languages: list[str] = field(default_factory=list)
    # A Mozilla Data Collective dataset id or slug (dataset=common_voice): downloaded and unpacked
    # into <runtime.cache_dir>/mdc/ before the run, and dataset.path set to it (leave path ???).
    # The API key comes from MDC_API_KEY in the environment only (snactok.inputs.mdc).
    mdc_id: str | None = None


@dataclass
class RuntimeConfig:
    # `auto` = every visible CUDA GPU, else one CPU worker. Or e.g. [cuda:0, cuda:1] / [cpu, cpu].
    devices: list[str] = field(default_factory=lambda: ["auto"])
    # Decode + resample processes; null = by device: 1 per CPU worker, 4 per GPU (at most the
    # cores left). What a reader costs per input kind: docs/performance.md (make ceiling).
    num_readers: int | None = None
    # Samples (at the codec rate) decoded but not yet encoded, across all queues and batches.
    queue_samples: int = 64 * 2**20
    # Samples (at the codec rate, padded) in one encoder batch; null = by device: one clip on CPU
    # (batching measured slower there), 2**21 on CUDA.
    batch_samples: int | None = None
    # torch.compile the encoder (same tokens; ~20-60 s per process on first use, then cached).
    compile: bool = False
    # Kept across runs: compiled kernels (inductor/) and built random weights (random_weights/).
    cache_dir: str = "~/.cache/snactok"
    # null or bf16: convolutions in bfloat16 on the device. CHANGES TOKENS; quantizer stays fp32.
    autocast: str | None = None
    # CUDA TF32. null = torch's defaults, which the reference (single-clip SNAC.encode) runs:
    # TF32 in cuDNN convolutions, none in matmuls. true/false set both, and CHANGE TOKENS.
    tf32: bool | None = None
    # null (a new run; its dir must not hold one), a run dir to continue, or `auto`: continue the
    # run in this job's own dir if there is one with the same fingerprint (Slurm requeues).
    resume: str | None = None
    # Split one dataset across jobs (Slurm nodes): job `job_index` of `num_jobs` encodes every
    # num_jobs-th unit from unit `job_index` on; scripts/merge.py checks and joins the jobs' output.
    num_jobs: int = 1
    job_index: int = 0
    # Print the plan (units, rows, hours, output bytes, ETA) from metadata and a sample of rows;
    # encode nothing.
    plan: bool = False
    # Everything but the model: readers, queues, collector, writers, manifest and resume run for
    # real, and a zero-cost stand-in returns tokens of the codec's lengths in a fixed pattern
    # (snactok.codec.dryrun), batching as on CUDA. Measures what the pipeline can feed; its shards are
    # not data.
    dry_run: bool = False
    # One device, no child processes: the readers run in threads of the main process and the
    # device loop runs in it too, so a breakpoint (pdb, an IDE) stops in it. Same shards, slower.
    inprocess: bool = False
    # Seconds of audio per encoder call, overlaps included; longer clips are encoded in overlapping
    # chunks, to bound memory. Exact only where the kernels' rounding does not depend on the
    # length (docs/reliability.md); the verifier reports it. null = never chunk.
    max_chunk_seconds: float | None = 120.0
    # Share of rows (0..1) encoded again by single-clip SNAC.encode and compared token by token;
    # picked by row index, so a resume checks the same rows. 0 = none.
    verify_fraction: float = 0.01
    # Seconds without a committed unit or a step by any child (a row read, a batch or chunk
    # encoded) after which the run stops as stuck, naming the process (a GPU wedged in a driver
    # call, a filesystem that stopped answering). Keep it above the longest single encoder call
    # and the first compile. null = wait forever.
    stall_seconds: float | None = 600.0
    # Seconds; longer clips are rejected as too_long. null = no limit.
    max_duration: float | None = None
    # Samples at the source rate; shorter clips are rejected as too_short.
    min_samples: int = 1
    # Rows per source to read; null = all. For smoke runs.
    max_rows: int | None = None
    # Rows a reader takes at a time from a unit.
    read_block_rows: int = 32
    # Seconds between progress lines when stdout is not a terminal.
    progress_interval: float = 5.0
    # Kept for old command lines; it does not change encoding. CPU tokens are always computed with
    # codec.CPU_THREADS (2) torch threads, since oneDNN rounds differently at other counts. For
    # more cores, add CPU workers: devices=[cpu,cpu,...].
    cpu_threads: int | None = None
    seed: int = 0


@dataclass
class OutputConfig:
    # jsonl (gzip JSON lines, the original schema), parquet (same columns, layers list<int16>), or
    # both: one file per format per unit.
    format: str = "jsonl"
    lines_per_file: int = 50000
    gzip_level: int = 1
    # Bytes of write buffer per shard file.
    buffer_size: int = 16 * 2**20
    # null, or orpheus: add `codes`, Orpheus TTS's 7 tokens per frame (int32; snac_24khz only).
    flatten: str | None = None
    # Processes that format, compress and write committed units (snactok.engine.writers); 0 = the main
    # process does it. Same bytes either way. For many GPUs a node: gzip alone caps the main
    # process near 14M tokens/s (docs/performance.md).
    writers: int = 0


@dataclass
class SaveConfig:
    # Directory for datasets' save_to_disk of the whole result.
    local: str | None = None
    hub_repo: str | None = None
    private: bool = True


@dataclass
class WandbConfig:
    # null: online with an API key (WANDB_API_KEY or `wandb login`), else offline. Or online,
    # offline, disabled. metrics.jsonl in the run dir is written either way.
    mode: str | None = None
    project: str = "snactok"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    codec: CodecConfig = MISSING
    dataset: DatasetConfig = MISSING
    runtime: RuntimeConfig = MISSING
    output: OutputConfig = field(default_factory=OutputConfig)
    save: SaveConfig = field(default_factory=SaveConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # At the end of a run, write report/ (plots, decoded audio) as scripts/inspect_run.py does.
    report: bool = False


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; call before composing."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="codec", name="base_codec", node=CodecConfig)
    cs.store(group="dataset", name="base_dataset", node=DatasetConfig)
    cs.store(group="runtime", name="base_runtime", node=RuntimeConfig)


OUTPUT_FORMATS = ("jsonl", "parquet", "both")
FLATTEN_CHOICES = (None, "orpheus")
AUTOCAST_CHOICES = (None, "bf16")
WANDB_MODES = (None, "online", "offline", "disabled")


# Keys that look like credentials. Hydra saves every override (.hydra/overrides.yaml) and the
# composed config, and both end up in logs and W&B; secrets come from the environment instead.
SECRET_KEY_WORDS = ("token", "api_key", "apikey", "password", "secret")
SECRET_HINT = (
    "Secrets never go in the config: set HF_TOKEN (or run `hf auth login`) for the Hub, "
    "WANDB_API_KEY (or run `wandb login`) for W&B and MDC_API_KEY for the Mozilla Data Collective."
)


def refuse_secret_overrides(args: list[str]) -> None:
    """Exit (code 2) before Hydra saves anything when an override looks like a credential."""
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" in arg and any(word in key.lstrip("+~").lower() for word in SECRET_KEY_WORDS):
            print(f"config error: refusing the override `{key}=...`. {SECRET_HINT}", file=sys.stderr)
            raise SystemExit(2)


def _secret_keys(cfg: Any, prefix: str = "") -> list[str]:
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    found = []
    for key in keys:
        full = f"{prefix}.{key}".lstrip(".") if isinstance(cfg, DictConfig) else f"{prefix}[{key}]"
        if isinstance(key, str) and any(word in key.lower() for word in SECRET_KEY_WORDS):
            found.append(full)
        node = cfg._get_node(key)
        if OmegaConf.is_config(node):
            found += _secret_keys(node, full)
    return found


def is_repo_id(repo: str) -> bool:
    """`namespace/name`: a Hub dataset id must name its namespace (upload_folder won't add it)."""
    return repo.count("/") == 1 and all(repo.split("/"))


def check_config(cfg: DictConfig) -> None:
    """Fail with a message naming the key when the config cannot work. No I/O here."""
    cfg = _with_mdc_placeholder(cfg)
    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(
            f"missing required config value(s): {', '.join(missing)}; "
            f"set them on the command line, e.g. {missing[0]}=..."
        )
    rt, out = cfg.runtime, cfg.output
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
    _require(rt.autocast in AUTOCAST_CHOICES, "runtime.autocast", rt.autocast, list(AUTOCAST_CHOICES))
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
    _require(out.format in OUTPUT_FORMATS, "output.format", out.format, list(OUTPUT_FORMATS))
    _require(out.flatten in FLATTEN_CHOICES, "output.flatten", out.flatten, list(FLATTEN_CHOICES))
    _require(out.lines_per_file >= 1, "output.lines_per_file", out.lines_per_file, "an integer >= 1")
    _require(0 <= out.gzip_level <= 9, "output.gzip_level", out.gzip_level, "0..9")
    _require(out.writers >= 0, "output.writers", out.writers, "0 (the main process) or more")
    _require(len(rt.devices) >= 1, "runtime.devices", list(rt.devices), "e.g. [auto], [cpu], [cuda:0]")
    _require(cfg.wandb.mode in WANDB_MODES, "wandb.mode", cfg.wandb.mode, list(WANDB_MODES))
    repo = cfg.save.hub_repo
    _require(
        repo is None or is_repo_id(repo),
        "save.hub_repo",
        repo,
        "null or a Hub dataset id `namespace/name`",
    )
    for key in ("local", "hub_repo"):
        _require(
            not (rt.dry_run and cfg.save[key]),
            f"save.{key}",
            cfg.save[key],
            "null with runtime.dry_run=true (a dry run's tokens are a stand-in pattern, not data)",
        )
    secrets = _secret_keys(cfg)
    if secrets:
        raise ConfigError(f"config keys {secrets} look like credentials. {SECRET_HINT}")
    _check_flatten(cfg)
    _check_sources(cfg.dataset)
    _require(
        cfg.dataset.streaming or not cfg.dataset.reshard,
        "dataset.reshard",
        cfg.dataset.reshard,
        "false unless dataset.streaming=true (it splits streamed Parquet files by row group)",
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
    if cfg.output.flatten == "orpheus" and layout != (orpheus.VQ_STRIDES, orpheus.CODEBOOK_SIZE):
        raise ConfigError(
            f"output.flatten=orpheus works with snac_24khz only (3 layers, vq_strides "
            f"{list(orpheus.VQ_STRIDES)}, codebook_size {orpheus.CODEBOOK_SIZE}); codec "
            f"{cfg.codec.name!r} has vq_strides {list(arch.vq_strides)} and codebook_size "
            f"{arch.codebook_size}. Use codec=snac_24khz, or output.flatten=null"
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
