"""Config schemas, one per Hydra group, registered in the ConfigStore.

The YAML files under `conf/` hold values only; these dataclasses give every key its type, so a
typo, a wrong type or a value outside a choice (the `StrEnum`s below) fails at composition with
Hydra's message, which names the key, the value and the choices. Checks across keys, and of
values a type cannot express, are in `config/checks.py`.

After composition the run reads the config as these dataclasses (`typed`): attribute access with
the types declared here, and it pickles to spawned children as it is. The choices are `StrEnum`s,
so a value equals its plain string (`OutputFormat.jsonl == "jsonl"`); what a run writes and hashes
(manifest, fingerprint, W&B) is `plain(...)` of it: dicts, lists and plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


class OutputFormat(StrEnum):
    """`output.format`: jsonl (gzip JSON lines), parquet, or both (one file per format per unit)."""

    jsonl = "jsonl"
    parquet = "parquet"
    both = "both"


class Flatten(StrEnum):
    """`output.flatten` (or null): orpheus adds Orpheus TTS's flat `codes` column."""

    orpheus = "orpheus"


class Autocast(StrEnum):
    """`runtime.autocast` (or null): bf16 runs the convolutions in bfloat16."""

    bf16 = "bf16"


class WandbMode(StrEnum):
    """`wandb.mode` (or null: online with an API key, else offline)."""

    online = "online"
    offline = "offline"
    disabled = "disabled"


class Dedup(StrEnum):
    """`template.dedup`: none keeps every frame; first_token drops a frame whose layer-1 token
    equals the last kept frame's, as Orpheus's reference notebook does (it loses real frames)."""

    none = "none"
    first_token = "first_token"


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
    """A SNAC model: where its weights come from, and its architecture."""

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
    # cores left). What a reader costs per input kind: docs/performance.md (make ceiling); the
    # cores per GPU that implies: docs/scale.md.
    num_readers: int | None = None
    # Samples (at the codec rate) decoded but not yet encoded, across all queues and batches.
    queue_samples: int = 64 * 2**20
    # Samples (at the codec rate, padded) in one encoder batch; null = by device: one clip on CPU
    # (batching measured slower there), 2**21 on CUDA.
    batch_samples: int | None = None
    # torch.compile the encoder (same tokens, checked at start). The first run compiles in each
    # process, later runs load the kernels from cache_dir: docs/performance.md has both times.
    compile: bool = True
    # Kept across runs: compiled kernels (inductor/) and built random weights (random_weights/).
    cache_dir: str = "~/.cache/snactok"
    # null or bf16: convolutions in bfloat16 on the device. CHANGES TOKENS; quantizer stays fp32.
    autocast: Autocast | None = None
    # CUDA TF32. null = torch's defaults, which the reference (single-clip SNAC.encode) runs:
    # TF32 in cuDNN convolutions, none in matmuls. true/false set both, and CHANGE TOKENS.
    tf32: bool | None = None
    # null (a new run; its dir must not hold one), a run dir to continue, or `auto`: continue the
    # run in this job's own dir if there is one with the same fingerprint (Slurm requeues).
    resume: str | None = None
    # Split one dataset across jobs (Slurm nodes): job `job_index` of `num_jobs` encodes every
    # num_jobs-th unit from unit `job_index` on; snactok-merge checks and joins the jobs' output.
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
    # snactok.codec.encoder.CPU_THREADS (2) torch threads, since oneDNN rounds differently at other
    # counts. For more cores, add CPU workers: devices=[cpu,cpu,...].
    cpu_threads: int | None = None
    seed: int = 0


@dataclass
class TemplateConfig:
    """A training-sequence layout (conf/template/): the text tokenized, then the audio tokens,
    between special ids. The ids are data; conf/template/orpheus.yaml says where they come from."""

    name: str = MISSING
    # Hub id or local dir, loaded with transformers.AutoTokenizer.from_pretrained.
    tokenizer: str = MISSING
    # Hub revision (branch, tag or commit) when `tokenizer` is a Hub id.
    revision: str | None = None
    # Python format string over the row's {text} and {speaker}: "{speaker}: {text}" for
    # multi-speaker fine-tunes.
    text_format: str = "{text}"
    dedup: Dedup = Dedup.none
    # Also write `labels` (= input_ids) and `attention_mask` (all ones).
    with_labels: bool = True
    # The special ids, in the order a sequence holds them (snactok.codec.orpheus.sequence).
    start_of_human: int = MISSING
    end_of_text: int = MISSING
    end_of_human: int = MISSING
    start_of_ai: int = MISSING
    start_of_speech: int = MISSING
    # The id of code 0 at frame position 0; position k's codes start at audio_offset + k * 4096.
    audio_offset: int = MISSING
    end_of_speech: int = MISSING
    end_of_ai: int = MISSING
    # What a batch is padded with: the pad token of the run's saved tokenizer/.
    pad: int = MISSING


@dataclass
class OutputConfig:
    # jsonl (gzip JSON lines, the original schema), parquet (same columns, layers list<int16>), or
    # both: one file per format per unit.
    format: OutputFormat = OutputFormat.jsonl
    lines_per_file: int = 50000
    gzip_level: int = 1
    # Bytes of write buffer per shard file.
    buffer_size: int = 16 * 2**20
    # null, or orpheus: add `codes`, Orpheus TTS's 7 tokens per frame (int32; snac_24khz only).
    flatten: Flatten | None = None
    # Processes that format, compress and write committed units (snactok.engine.writers); 0 = the main
    # process does it. Same bytes either way. For many GPUs a node: gzip alone caps the main
    # process (docs/performance.md, "Main-process capacity").
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
    mode: WandbMode | None = None
    project: str = "snactok"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    """What conf/config.yaml composes: one node per group and section."""

    codec: CodecConfig = MISSING
    dataset: DatasetConfig = MISSING
    runtime: RuntimeConfig = MISSING
    output: OutputConfig = field(default_factory=OutputConfig)
    save: SaveConfig = field(default_factory=SaveConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # null, or a training-sequence layout (template=orpheus): `input_ids` etc. per row.
    template: TemplateConfig | None = None
    # At the end of a run, write report/ (plots, decoded audio) as snactok-inspect does.
    report: bool = False


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; call before composing."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="codec", name="base_codec", node=CodecConfig)
    cs.store(group="dataset", name="base_dataset", node=DatasetConfig)
    cs.store(group="runtime", name="base_runtime", node=RuntimeConfig)
    cs.store(group="template", name="base_template", node=TemplateConfig)


def typed(cfg: DictConfig) -> Config:
    """The composed config as the schema's dataclasses, interpolations resolved."""
    return OmegaConf.to_object(cfg)


def plain(node: Any) -> Any:
    """A config, or any part of it (typed or not), as plain dicts, lists and strings."""
    if not isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.create(node)
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
