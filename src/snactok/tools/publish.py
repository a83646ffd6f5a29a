"""Publish a finished run to the HF Hub as a dataset: its shards as they are, its manifest and
rejects, and a generated card whose `configs:` make `load_dataset("<user>/<name>")` work.

    python scripts/publish.py outputs/2026-11-24/02-01-44 --repo me/demo-snac   # private
    publish(Path("outputs/2026-11-24/02-01-44"), "me/demo-snac", private=False)

The repo mirrors the run dir, so every path the manifest names is valid in the repo too:

    README.md          the card: YAML front matter (configs, license, tags), then what the run is
    manifest.jsonl     header, one record per shard (rows, bytes, sha256), summary
    rejects.jsonl      one line per rejected row, with its reason
    shards/*.jsonl.gz  the committed shards, byte for byte (and shards/*.parquet when written)

Every shard the manifest records is uploaded, empty ones included (units whose rows were all
rejected): they load (zero rows), and then each shard record's `file`, `bytes` and `sha256` can be
checked against the repo. `shards/` on the Hub is made to hold exactly this run's shards: files
there from an earlier upload that this run does not have are deleted in the same commit, so the
card and the data never disagree. Re-running an interrupted publish resumes it (the Hub skips
files it already has). The token comes from the environment (HF_TOKEN or `hf auth login`), never
from the config or the command line.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import DatasetCardData, HfApi

from snactok.codec import orpheus
from snactok.codec.layout import token_rates
from snactok.config.schema import is_repo_id
from snactok.monitor.progress import format_hours
from snactok.output.resume import MANIFEST, REJECTS, SHARDS
from snactok.tools.public import dataset_roots, public_record, public_records, public_rejects

log = logging.getLogger(__name__)

CARD = "README.md"
# Shard file suffixes (output.format); the card's config reads the first one the run wrote.
SHARD_FORMATS = (".parquet", ".jsonl.gz")
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


class PublishError(ValueError):
    """A run that cannot be published as it is; the message says why and what to do."""


@dataclass
class Run:
    """What a run dir's manifest says, read once: the snapshot that gets uploaded."""

    dir: Path
    header: dict[str, Any]
    shards: list[dict[str, Any]]  # one shard record per unit, by unit index
    summary: dict[str, Any] | None  # None while the run is unfinished
    manifest: bytes  # the manifest's complete lines
    rejects: bytes  # the complete lines of rejects.jsonl that belong to committed units

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def conf(self) -> dict[str, Any]:
        return self.header.get("config", {})

    @property
    def arch(self) -> dict[str, Any]:
        return self.header["arch"]

    @property
    def rows(self) -> int:
        return sum(r["rows"] for r in self.shards)

    @property
    def rejected(self) -> int:
        return sum(r["rejected"] for r in self.shards)

    @property
    def audio_seconds(self) -> float:
        return sum(r["audio_seconds"] for r in self.shards)

    @property
    def planned_units(self) -> int | None:
        """Units this run was to commit: all the dataset's, or a job's share of them."""
        units = self.header.get("units")
        if units:
            rt = self.conf.get("runtime", {})
            jobs = 1 if "merged" in self.header else rt.get("num_jobs", 1)
            return len(range(rt.get("job_index", 0) if jobs > 1 else 0, units["total"], jobs))
        per_file = self.conf.get("output", {}).get("lines_per_file")
        if not per_file:
            return None
        return sum(math.ceil(s["rows"] / per_file) for s in self.header.get("sources", []))


def read_run(run_dir: Path) -> Run:
    """Read `run_dir`'s manifest and rejects; raise PublishError when it holds no run."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise PublishError(
            f"{path} does not exist; give the dir encode.py wrote (it holds {MANIFEST} and "
            f"{SHARDS}/, e.g. outputs/<date>/<time>)"
        )
    manifest = _complete_lines(path)
    records = [json.loads(line) for line in manifest.splitlines() if line.strip()]
    headers = [r for r in records if r.get("type") == "header"]
    if not headers:
        raise PublishError(f"{path} has no header record; the run never started writing")
    shards = {r["unit"]: r for r in records if r.get("type") == "shard"}
    last_shard = max((i for i, r in enumerate(records) if r.get("type") == "shard"), default=-1)
    summaries = [r for r in records[last_shard + 1 :] if r.get("type") == "summary"]
    rejects_path = run_dir / REJECTS
    lines = _complete_lines(rejects_path).splitlines(keepends=True) if rejects_path.is_file() else []
    rejects = b"".join(line for line in lines if line.strip() and json.loads(line)["unit"] in shards)
    return Run(
        dir=run_dir,
        header=headers[0],
        shards=[shards[u] for u in sorted(shards)],
        summary=summaries[-1] if summaries else None,
        manifest=manifest,
        rejects=rejects,
    )


def _complete_lines(path: Path) -> bytes:
    """The file up to its last newline: a record torn by a crash mid-append is left out."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def check_publishable(run: Run, allow_partial: bool = False) -> None:
    """Refuse a run that did not finish (unless `allow_partial`), wrote no rows, or whose shard
    files are missing or changed size since they were committed."""
    if run.header.get("dry_run"):
        raise PublishError(
            f"{run.dir} is a dry run (runtime.dry_run=true): its tokens are a stand-in pattern, "
            "not the audio's. Encode it for real (without runtime.dry_run) to publish it"
        )
    if not run.finished and not allow_partial:
        raise PublishError(
            f"{run.dir} holds an unfinished run ({len(run.shards)} of {run.planned_units} units "
            f"committed, no summary in {MANIFEST}). Finish it first: run the same encode.py command "
            f"with runtime.resume={run.dir}; or publish what is there with --allow-partial "
            "(the card then says it is partial)"
        )
    if run.rows == 0:
        raise PublishError(
            f"{run.dir} has no rows to publish: {run.rejected} rejected of "
            f"{sum(r['rows_read'] for r in run.shards)} read (see {REJECTS})"
        )
    problems = []
    for record in run.shards:
        for entry in recorded_files(record):
            path = run.dir / entry["file"]
            if not path.is_file():
                problems.append(f"{entry['file']} is missing")
            elif path.stat().st_size != entry["bytes"]:
                problems.append(
                    f"{entry['file']} has {path.stat().st_size} bytes, the manifest {entry['bytes']}"
                )
    if problems:
        raise PublishError(
            f"{run.dir}: shard files do not match {MANIFEST}: {'; '.join(problems[:5])}"
            f"{f' (+{len(problems) - 5} more)' if len(problems) > 5 else ''}. Shards are never "
            "rewritten after commit; restore them, or encode again into a new dir"
        )


def recorded_files(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A shard record's files as [{file, bytes, sha256}], one per format (output.format=both
    writes two); records from before `files` existed name their one file themselves."""
    return record.get("files") or [record]


def shard_files(run: Run) -> list[str]:
    """Run-dir-relative paths of every file the committed units' records name, sorted."""
    return sorted({entry["file"] for r in run.shards for entry in recorded_files(r)})


def data_suffix(files: list[str]) -> str:
    """The format the card's config points at: Parquet when the run wrote it, else gzip JSONL."""
    found = next((s for s in SHARD_FORMATS if any(f.endswith(s) for f in files)), None)
    if found is None:
        raise PublishError(f"no shard in {files[:3]} has a known suffix {list(SHARD_FORMATS)}")
    return found


def licenses(run: Run, override: str | None = None) -> list[str | None]:
    """Each source's licence: `override`, else the source's `license` in the manifest header or
    its config, else None (unknown)."""
    conf_sources = run.conf.get("dataset", {}).get("sources", [])
    found = []
    for i, src in enumerate(run.header.get("sources", [])):
        conf = conf_sources[min(i, len(conf_sources) - 1)] if conf_sources else {}
        found.append(override or src.get("license") or conf.get("license"))
    return found


def stage(
    run_dir: Path,
    dest: Path,
    repo_id: str,
    allow_partial: bool = False,
    license: str | None = None,
) -> list[str]:
    """Lay out in `dest` exactly what `publish` uploads; return its repo paths. Raises
    PublishError for a run that cannot be published."""
    check_repo_id(repo_id)
    run = read_run(Path(run_dir))
    check_publishable(run, allow_partial)
    return _stage(run, dest, repo_id, license)


def _stage(run: Run, dest: Path, repo_id: str, license: str | None) -> list[str]:
    """Shards are symlinked, not copied; the manifest and rejects are written from what was read,
    so a partial run that is still writing cannot change them under the upload. They and the
    card carry only what `snactok.tools.public` allows: no host, pid, attempt dir or absolute path."""
    files = shard_files(run)
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((run.dir / rel).resolve(), dest / rel)
    public = public_view(run)
    (dest / MANIFEST).write_bytes(public.manifest)
    (dest / REJECTS).write_bytes(public.rejects)
    (dest / CARD).write_text(dataset_card(public, repo_id, files, license), encoding="utf-8")
    return sorted([CARD, MANIFEST, REJECTS, *files])


def public_view(run: Run) -> Run:
    """The run as it may be published (`snactok.tools.public`): the local run dir is not touched."""
    return dataclasses.replace(
        run,
        header=public_record(run.header),
        shards=[public_record(r) for r in run.shards],
        summary=public_record(run.summary) if run.summary else None,
        manifest=public_records(run.manifest),
        rejects=public_rejects(run.rejects, dataset_roots(run.header)),
    )


def publish(
    run_dir: Path,
    repo_id: str,
    private: bool = True,
    api: HfApi | None = None,
    allow_partial: bool = False,
    license: str | None = None,
) -> str:
    """Upload the run in `run_dir` to the Hub dataset `repo_id` (created if needed); return its
    URL. Everything is checked locally before the Hub is asked anything. `license` overrides the
    sources' licences on the card."""
    check_repo_id(repo_id)
    run = read_run(Path(run_dir))
    check_publishable(run, allow_partial)
    api = api or HfApi()  # the token: HF_TOKEN, else the `hf auth login` file
    with tempfile.TemporaryDirectory(prefix="snactok-publish-") as tmp:
        staged = Path(tmp)
        files = _stage(run, staged, repo_id, license)
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        _check_visibility(api, repo_id, private)
        size = sum((staged / f).stat().st_size for f in files)
        log.info("uploading %d files (%.1f MB) to %s", len(files), size / 1e6, url)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=staged,
            allow_patterns=[CARD, MANIFEST, REJECTS, f"{SHARDS}/*"],
            delete_patterns=[f"{SHARDS}/*"],  # files being uploaded are kept, never deleted
            commit_message=(
                f"snactok: {run.header['dataset']} as {run.header['codec']} tokens, {run.rows} rows, "
                f"{format_hours(run.audio_seconds)} of audio{'' if run.finished else ' (PARTIAL run)'}"
            ),
        )
    log.info("published %s (%s)", url, getattr(commit, "commit_url", commit))
    return str(url)


def check_repo_id(repo_id: str) -> None:
    """A Hub dataset id names its namespace: upload_folder does not fill it in."""
    if not is_repo_id(repo_id):
        raise PublishError(f"repo id {repo_id!r} is not `namespace/name`, e.g. me/librispeech-snac")


def _check_visibility(api: HfApi, repo_id: str, private: bool) -> None:
    """`create_repo(exist_ok=True)` leaves an existing repo's visibility as it is: never upload
    a run meant to be private into a public repo."""
    info = api.repo_info(repo_id, repo_type="dataset")
    if private and not info.private:
        raise PublishError(
            f"the dataset repo {repo_id} already exists and is PUBLIC; publishing would make this "
            "run public. Pass --public (private=False) if that is meant, or make the repo private "
            "on the Hub first"
        )
    if not private and info.private:
        log.warning("the dataset repo %s already exists and is private; it stays private", repo_id)


# ----------------------------------------------------------------------------------- the card


def dataset_card(run: Run, repo_id: str, files: list[str], license: str | None = None) -> str:
    """README.md: YAML front matter for the Hub and `datasets`, then a description of the run."""
    suffix = data_suffix(files)
    source_licenses = licenses(run, license)
    known = sorted({x for x in source_licenses if x})
    if not known or None in source_licenses:
        known.append(UNKNOWN_LICENSE)
    tags = ["snac", "audio-tokens", "codec-tokens", "snactok", run.header["codec"]]
    tags.append("speech" if run.arch["sampling_rate"] == 24000 else "audio")
    if run.header.get("random_weights"):
        tags.append("random-weights")
    meta = DatasetCardData(
        license=known[0] if len(known) == 1 else known,
        pretty_name=f"{run.header['dataset']} as {run.header['codec']} tokens",
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
            _schema_section(run, suffix),
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
    if run.header.get("random_weights"):
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
        f"[SNAC](https://github.com/hubertsiuzdak/snac) codec tokens of the `{h['dataset']}` "
        f"dataset, encoded with `{h['codec']}` by snactok. {run.rows:,} rows, "
        f"{format_hours(run.audio_seconds)} of audio. Load them with\n\n"
        f'```python\nfrom datasets import load_dataset\n\nrows = load_dataset("{repo_id}", '
        f'split="train")\n```\n\n'
        f"The `default` config reads `{SHARDS}/*{suffix}`; every row keeps its source's `id`, so "
        "it can be joined back to the audio."
    )


def _contents(run: Run, files: list[str], suffix: str) -> str:
    reasons = (run.summary or {}).get("rejected_by_reason") or dict(
        sorted(Counter(json.loads(line)["reason"] for line in run.rejects.splitlines()).items())
    )
    by_reason = ", ".join(f"{k}: {v}" for k, v in reasons.items())
    tokens = [
        sum(r["tokens_per_layer"][i] for r in run.shards) for i in range(len(run.arch["vq_strides"]))
    ]
    empty = sum(1 for r in run.shards if r["rows"] == 0)
    data_files = [f for f in files if f.endswith(suffix)]
    rows = [
        ("rows read", f"{sum(r['rows_read'] for r in run.shards):,}"),
        ("rows written", f"{run.rows:,}"),
        ("rows rejected", f"{run.rejected:,}" + (f" ({by_reason})" if by_reason else "")),
        ("audio", f"{run.audio_seconds / 3600:.2f} h ({run.audio_seconds:,.1f} s)"),
        ("tokens per layer", ", ".join(f"{n:,}" for n in tokens)),
        (
            "shards",
            f"{len(data_files)} `{suffix}` files" + (f", {empty} of them empty" if empty else ""),
        ),
    ]
    others = [s for s in SHARD_FORMATS if s != suffix and any(f.endswith(s) for f in files)]
    rows += [("also", f"the same rows as `{s}` files (not in the `default` config)") for s in others]
    table = _table(("", "value"), rows)
    note = (
        f"\n\nAn empty shard is a unit whose every row was rejected; it is kept so that each shard "
        f"record in `{MANIFEST}` has its file."
        if empty
        else ""
    )
    return f"## Contents\n\n{table}{note}"


def _codec_section(run: Run) -> str:
    arch, w = run.arch, run.header["weights"]
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
        f"## Codec\n\n- model: `{run.header['codec']}` ({arch['sampling_rate']} Hz, "
        f"{len(arch['vq_strides'])} layers, codebook of {arch['codebook_size']} codes, hop "
        f"{hop} samples)\n- weights: {weights}\n\n"
        + _table(("layer", "column", "stride", "tokens per second of audio"), layers)
        + f"\n\nIn all {sum(token_rates(arch)):.2f} tokens per second of audio."
    )


def _sources_section(run: Run, source_licenses: list[str | None]) -> str:
    conf_sources = run.conf.get("dataset", {}).get("sources", [])
    rows = []
    for i, (src, lic) in enumerate(zip(run.header.get("sources", []), source_licenses, strict=True)):
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
        + _table(("source", "from", "rows", "revision", "commit", "licence"), rows)
        + note
    )


def _schema_section(run: Run, suffix: str) -> str:
    first = next(
        e["file"]
        for r in run.shards
        if r["rows"]
        for e in recorded_files(r)
        if e["file"].endswith(suffix)
    )
    columns = _columns(run.dir / first)
    described = _column_meanings(run)
    rows = [(f"`{name}`", kind, described(name)) for name, kind in columns]
    return "## Schema\n\nOne row per encoded clip, in input order within each shard.\n\n" + _table(
        ("column", "type", "meaning"), rows
    )


def _columns(path: Path) -> list[tuple[str, str]]:
    """(name, type) of a shard's columns: Parquet's schema, or the first JSON line's values."""
    if path.name.endswith(".parquet"):
        return [(f.name, _arrow_type(f.type)) for f in pq.read_schema(path)]
    with gzip.open(path, "rt", encoding="utf-8") as f:
        row = json.loads(f.readline())
    return [(k, _json_type(v)) for k, v in row.items()]


def _arrow_type(kind: Any) -> str:
    """Arrow's type in the names the JSON shards get: list<int64>, float64, string."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"list<{_arrow_type(kind.value_type)}>"
    if pa.types.is_floating(kind):
        return f"float{kind.bit_width}"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    return str(kind)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return f"list<{_json_type(value[0]) if value else 'int64'}>"
    return {bool: "bool", int: "int64", float: "float64", str: "string"}.get(type(value), "null")


def _column_meanings(run: Run) -> Callable[[str], str]:
    arch, conf = run.arch, run.conf
    sources = conf.get("dataset", {}).get("sources", [])
    rates = token_rates(arch)
    read = run.header.get("sources", [])  # as read; runs before `columns` have only the config
    if all("columns" in s for s in read):
        constants = {k: v for s in read for k, v in s.get("constants", {}).items()}
        settings = [{f"{k}_column": v for k, v in s["columns"].items()} for s in read]
    else:
        constants = {k: v for s in sources for k, v in (s.get("add_constant") or {}).items()}
        settings = sources
    kept = {k: v for s in read for k, v in s.get("columns", {}).get("keep", {}).items()}

    def columns_of(key: str) -> str:
        names = sorted({str(s.get(key)) for s in settings if s.get(key)})
        return ", ".join(f"`{n}`" for n in names) or "none"

    def meaning(name: str) -> str:
        if name.startswith("snac_layer_") and name[11:].isdigit():
            i = int(name[11:]) - 1
            return (
                f"layer {i + 1} codes (coarse to fine), in [0, {arch['codebook_size']}); "
                f"{rates[i]:.2f} per second of audio"
            )
        if name == "codes":
            return _orpheus_meaning(arch)
        if name in constants:
            return f"constant `{constants[name]}`, from the source's `add_constant`"
        if name in kept:
            return f"the source's `{kept[name]}`, as it is (`keep_columns`)"
        fixed = {
            "text": f"the transcript or description (source column {columns_of('text_column')}; "
            "empty when a source has none)",
            "num_layers": f"number of SNAC layers, {len(arch['vq_strides'])}",
            "token_lengths": "tokens in each `snac_layer_i` of this row",
            "speaker": f"the source's speaker column ({columns_of('speaker_column')})",
            "id": "the row's id in its source: the file's path in a local folder, else the id "
            "column or the row index",
            "duration": "seconds of the original audio; the tokens cover it right-padded to the "
            "codec's pad multiple",
        }
        return fixed.get(name, "(not described by this card)")

    return meaning


def _orpheus_meaning(arch: dict[str, Any]) -> str:
    """`snactok.codec.orpheus`'s layout (config refuses output.flatten=orpheus for other codecs)."""
    per_second = orpheus.TOKENS_PER_FRAME * token_rates(arch)[0]
    return (
        "Orpheus-style flat codes (`output.flatten=orpheus`): 7 per layer-1 frame t, in the order "
        "l1[t], l2[2t], l3[4t], l3[4t+1], l2[2t+1], l3[4t+2], l3[4t+3], the k-th of the 7 "
        f"(k = 0..6) offset by {orpheus.AUDIO_TOKEN_OFFSET} + k * {orpheus.CODEBOOK_SIZE}; "
        f"{per_second:.2f} per second of audio"
    )


def _usage_section(run: Run, repo_id: str) -> str:
    arch, w = run.arch, run.header["weights"]
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
    packages = h.get("packages", {})
    versions = ", ".join(f"{p} {packages[p]}" for p in ("snactok", "snac", "torch") if packages.get(p))
    autocast = h.get("config", {}).get("runtime", {}).get("autocast")
    return (
        "## Provenance\n\n"
        f"Encoded by snactok (git commit `{h.get('git_commit')}`) with {versions} on "
        f"{', '.join(h.get('devices', []))}"
        + (f", autocast `{autocast}` (tokens differ from fp32)" if autocast else "")
        + f". `{MANIFEST}` holds the settings that decide the output (the run's local record has"
        " the full config)."
    )


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)
