"""The dataset card a published run gets (README.md): YAML front matter whose `configs:` make
`load_dataset("<user>/<name>")` read the shards, then what the run is: contents, codec, sources,
schema (snactok.tools.columns), how to decode the tokens, the files and the provenance."""

from __future__ import annotations

import math
from collections import Counter

from huggingface_hub import DatasetCardData

from snactok.codec import orpheus
from snactok.codec.layout import token_rates
from snactok.monitor.progress import format_hours
from snactok.output.rundir import JSONL_SUFFIX, MANIFEST, PARQUET_SUFFIX, REJECTS, SHARDS, Run
from snactok.tools.columns import markdown_table, schema_section

CARD = "README.md"
# The shard suffixes in the order the card's config prefers them: the first one the run wrote.
CARD_FORMATS = (PARQUET_SUFFIX, JSONL_SUFFIX)
UNKNOWN_LICENSE = "other"
SIZE_CATEGORIES = (
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
)


def data_suffix(files: list[str]) -> str | None:
    """The format the card's config points at: Parquet when the run wrote it, else gzip JSONL;
    None when no file has a shard suffix."""
    return next((s for s in CARD_FORMATS if any(f.endswith(s) for f in files)), None)


def licenses(run: Run, override: str | None = None) -> list[str | None]:
    """Each source's licence: `override`, else the source's `license` in the manifest header or
    its config, else None (unknown)."""
    conf_sources = run.conf.get("dataset", {}).get("sources", [])
    found = []
    for i, src in enumerate(run.header.sources):
        conf = conf_sources[min(i, len(conf_sources) - 1)] if conf_sources else {}
        found.append(override or src.get("license") or conf.get("license"))
    return found


def dataset_card(
    run: Run, repo_id: str, files: list[str], suffix: str, license: str | None = None
) -> str:
    """README.md: YAML front matter for the Hub and `datasets`, then a description of the run;
    its config reads the `suffix` files (`data_suffix`)."""
    source_licenses = licenses(run, license)
    known = sorted({x for x in source_licenses if x})
    if not known or None in source_licenses:
        known.append(UNKNOWN_LICENSE)
    tags = ["snac", "audio-tokens", "codec-tokens", "snactok", run.header.codec]
    tags.append("speech" if run.arch["sampling_rate"] == 24000 else "audio")
    if run.header.random_weights:
        tags.append("random-weights")
    meta = DatasetCardData(
        license=known[0] if len(known) == 1 else known,
        pretty_name=f"{run.header.dataset} as {run.header.codec} tokens",
        tags=tags,
        size_categories=_size_category(run.rows),
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{SHARDS}/*{suffix}"}],
            }
        ],
    )
    body = "\n\n".join(
        [
            f"# {repo_id.split('/')[-1]}",
            *_warnings(run),
            _intro(run, repo_id, suffix),
            _contents(run, files, suffix),
            _codec_section(run),
            _sources_section(run, source_licenses),
            schema_section(run, suffix),
            _usage_section(run, repo_id),
            _files_section(run),
            _provenance(run),
        ]
    )
    return f"---\n{meta.to_yaml()}\n---\n\n{body}\n"


def _size_category(rows: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if rows < limit), "n>10B")


def _warnings(run: Run) -> list[str]:
    out = []
    if run.header.random_weights:
        out.append(
            "> [!CAUTION]\n> **RANDOM WEIGHTS: THESE TOKENS ARE MEANINGLESS.** This run encoded "
            "with a seeded random SNAC (`codec.weights=random`), for smoke tests only. Do not "
            "train on it; decoding gives noise."
        )
    if not run.finished:
        out.append(
            f"> [!WARNING]\n> **PARTIAL RUN.** The run had not finished when this was published: "
            f"{len(run.shards)} of {run.planned_units} planned shards are here, and the manifest "
            "has no summary record."
        )
    return out


def _intro(run: Run, repo_id: str, suffix: str) -> str:
    h = run.header
    return (
        f"[SNAC](https://github.com/hubertsiuzdak/snac) codec tokens of the `{h.dataset}` "
        f"dataset, encoded with `{h.codec}` by snactok. {run.rows:,} rows, "
        f"{format_hours(run.audio_seconds)} of audio. Load them with\n\n"
        f'```python\nfrom datasets import load_dataset\n\nrows = load_dataset("{repo_id}", '
        f'split="train")\n```\n\n'
        f"The `default` config reads `{SHARDS}/*{suffix}`; every row keeps its source's `id`, so "
        "it can be joined back to the audio."
    )


def _contents(run: Run, files: list[str], suffix: str) -> str:
    reasons = (run.summary.rejected_by_reason if run.summary else None) or dict(
        sorted(Counter(r["reason"] for r in run.reject_records()).items())
    )
    by_reason = ", ".join(f"{k}: {v}" for k, v in reasons.items())
    tokens = [sum(r.tokens_per_layer[i] for r in run.shards) for i in range(len(run.arch["vq_strides"]))]
    empty = sum(1 for r in run.shards if r.rows == 0)
    data_files = [f for f in files if f.endswith(suffix)]
    rows = [
        ("rows read", f"{sum(r.rows_read for r in run.shards):,}"),
        ("rows written", f"{run.rows:,}"),
        ("rows rejected", f"{run.rejected:,}" + (f" ({by_reason})" if by_reason else "")),
        ("audio", f"{run.audio_seconds / 3600:.2f} h ({run.audio_seconds:,.1f} s)"),
        ("tokens per layer", ", ".join(f"{n:,}" for n in tokens)),
        (
            "shards",
            f"{len(data_files)} `{suffix}` files" + (f", {empty} of them empty" if empty else ""),
        ),
    ]
    others = [s for s in CARD_FORMATS if s != suffix and any(f.endswith(s) for f in files)]
    rows += [("also", f"the same rows as `{s}` files (not in the `default` config)") for s in others]
    table = markdown_table(("", "value"), rows)
    note = (
        f"\n\nAn empty shard is a unit whose every row was rejected; it is kept so that each shard "
        f"record in `{MANIFEST}` has its file."
        if empty
        else ""
    )
    return f"## Contents\n\n{table}{note}"


def _codec_section(run: Run) -> str:
    arch, w = run.arch, run.header.weights
    codec_repo = run.conf.get("codec", {}).get("repo")
    sha = f"`pytorch_model.bin` sha256 `{w.get('sha256')}`"
    if w["kind"] == "hub":
        weights = (
            f"[`{w['name']}`](https://huggingface.co/{w['name']}) at commit `{w.get('commit')}`, {sha}"
        )
    elif w["kind"] == "random":
        weights = (
            f"**RANDOM** (seeded, calibrated; `runtime.seed={run.conf.get('runtime', {}).get('seed')}`),"
            f" {sha}. Not a trained model: the tokens carry no meaning."
        )
    else:
        weights = (
            f"a local copy, `{w['name']}` (not on the Hub; this codec's Hub repo is "
            f"`{codec_repo}`), {sha}: compare it with the Hub's file before decoding with those"
        )
    hop = math.prod(arch["encoder_rates"])
    layers = [
        (
            f"{i + 1}",
            f"`snac_layer_{i + 1}`",
            f"{stride}",
            f"{arch['sampling_rate']} / ({hop} * {stride}) = {rate:.2f}",
        )
        for i, (stride, rate) in enumerate(zip(arch["vq_strides"], token_rates(arch), strict=True))
    ]
    return (
        f"## Codec\n\n- model: `{run.header.codec}` ({arch['sampling_rate']} Hz, "
        f"{len(arch['vq_strides'])} layers, codebook of {arch['codebook_size']} codes, hop "
        f"{hop} samples)\n- weights: {weights}\n\n"
        + markdown_table(("layer", "column", "stride", "tokens per second of audio"), layers)
        + f"\n\nIn all {sum(token_rates(arch)):.2f} tokens per second of audio."
    )


def _sources_section(run: Run, source_licenses: list[str | None]) -> str:
    conf_sources = run.conf.get("dataset", {}).get("sources", [])
    rows = []
    for i, (src, lic) in enumerate(zip(run.header.sources, source_licenses, strict=True)):
        # dataset.languages reads one configured source once per language
        conf = conf_sources[min(i, len(conf_sources) - 1)] if conf_sources else {}
        if conf.get("hub"):
            where = f"[`{conf['hub']}`](https://huggingface.co/datasets/{conf['hub']})"
            where += " " + " / ".join(f"`{conf[k]}`" for k in ("config", "split") if conf.get(k))
        else:
            where = f"local folder `{conf.get('path')}`"
        rows.append(
            (
                f"`{src['label']}`",
                where,
                f"{src['rows']:,}",
                f"`{src.get('revision')}`" if src.get("revision") else "-",
                f"`{src.get('commit')}`" if src.get("commit") else "-",
                lic or "**unknown**",
            )
        )
    note = ""
    if None in source_licenses:
        note = (
            "\n\nThe licence of a source marked unknown was not recorded, so the card says "
            f"`license: {UNKNOWN_LICENSE}`. The tokens derive from that audio: its terms apply. "
            "Check them before using or sharing this dataset."
        )
    return (
        "## Sources\n\n"
        + markdown_table(("source", "from", "rows", "revision", "commit", "licence"), rows)
        + note
    )


def _usage_section(run: Run, repo_id: str) -> str:
    arch, w = run.arch, run.header.weights
    sr, n = arch["sampling_rate"], len(arch["vq_strides"])
    if w["kind"] == "hub":
        model = f'SNAC.from_pretrained("{w["name"]}", revision="{w.get("commit")}")'
    elif w["kind"] == "local":
        model = f'SNAC.from_pretrained("{w["name"]}")  # the local weights this run used'
    else:
        repo = run.conf.get("codec", {}).get("repo")
        model = (
            f'SNAC.from_pretrained("{repo}")  # RANDOM weights made these tokens: no model decodes them'
        )
    code = (
        "import torch\n"
        "from datasets import load_dataset\n"
        "from snac import SNAC\n\n"
        f'rows = load_dataset("{repo_id}", split="train")\n'
        f"model = {model}\n"
        "row = rows[0]\n"
        f'codes = [torch.tensor(row[f"snac_layer_{{i}}"]).unsqueeze(0) for i in range(1, {n + 1})]'
        "  # (1, T_i) each\n"
        "with torch.inference_mode():\n"
        f"    audio = model.decode(codes)  # (1, 1, samples) at {sr} Hz\n"
        f'audio = audio[0, 0, : round(row["duration"] * {sr})]  # drop the codec\'s right padding\n'
    )
    text = (
        "## Decoding tokens back to audio\n\n"
        f"With [`snac`](https://pypi.org/project/snac/) (`pip install snac`); the weights must be "
        f"the ones that made the tokens (see Codec):\n\n```python\n{code}```"
    )
    if run.conf.get("output", {}).get("flatten") == "orpheus":
        offset, size = orpheus.AUDIO_TOKEN_OFFSET, orpheus.CODEBOOK_SIZE
        text += (
            "\n\nFrom the Orpheus `codes` column, undo the offsets and the interleaving first:\n\n"
            "```python\n"
            f'c = torch.tensor(row["codes"]).view(-1, 7) - {offset} - {size} * torch.arange(7)\n'
            "codes = [c[:, [0]].reshape(1, -1), c[:, [1, 4]].reshape(1, -1), "
            "c[:, [2, 3, 5, 6]].reshape(1, -1)]\n"
            "```"
        )
    return text


def _files_section(run: Run) -> str:
    return (
        "## Files\n\n"
        f"- `{SHARDS}/`: the shards exactly as snactok committed them, one per unit of "
        f"{run.conf.get('output', {}).get('lines_per_file', '?')} input rows, named "
        "`<source>-<unit>`.\n"
        f"- `{MANIFEST}`: a header (codec, weights, sources, package versions, git commit, the "
        "settings that decide the output), one record per shard (rows read, written and rejected, bytes, sha256, "
        "tokens per layer, audio seconds), then a summary. Check a download with the records' "
        "`sha256`.\n"
        f"- `{REJECTS}`: one line per row that was not encoded: `source, unit, row, id, reason, "
        "detail`."
    )


def _provenance(run: Run) -> str:
    h = run.header
    versions = ", ".join(
        f"{p} {h.packages[p]}" for p in ("snactok", "snac", "torch") if h.packages.get(p)
    )
    autocast = h.config.get("runtime", {}).get("autocast")
    return (
        "## Provenance\n\n"
        f"Encoded by snactok (git commit `{h.git_commit}`) with {versions} on "
        f"{', '.join(h.devices)}"
        + (f", autocast `{autocast}` (tokens differ from fp32)" if autocast else "")
        + f". `{MANIFEST}` holds the settings that decide the output (the run's local record has"
        " the full config)."
    )
