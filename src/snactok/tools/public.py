"""What of a run's records may leave the machine: an allow-list, applied when a run is published.

The local run dir keeps the full record: host name, pids, the attempt dirs of each resume,
absolute dataset, weights and cache paths, the fingerprint. A dataset user needs none of that,
and a path often carries a user name or a scratch layout. Kept: the codec, the weights' id, commit
and sha256, the sources, the settings that decide the output, and every shard record and count.
Anything not named here is dropped, so a field added later stays private until someone adds it.
Paths that remain (a local dataset's folder, a local weights dir) become their last component;
paths inside a reject's text become relative to the dataset folder, or their file name.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

HEADER_KEYS = (
    "type",
    "schema_version",
    "codec",
    "arch",
    "weights",
    "random_weights",
    "dataset",
    "sources",
    "devices",
    "chunking",
    "units",
    "packages",
    "git_commit",
    "config",
    "merged",
)
WEIGHTS_KEYS = ("kind", "name", "commit", "sha256")
SOURCE_KEYS = ("label", "rows", "revision", "commit", "streaming", "license", "columns", "constants")
SHARD_KEYS = (
    "type",
    "unit",
    "source",
    "start",
    "stop",
    "file",
    "rows_read",
    "rows",
    "rejected",
    "bytes",
    "sha256",
    "files",
    "tokens_per_layer",
    "audio_seconds",
    "verify",
)
FILE_KEYS = ("file", "bytes", "sha256")
SUMMARY_KEYS = (
    "type",
    "merged",
    "units",
    "units_planned",
    "units_resumed",
    "rows_read",
    "rows_written",
    "rows_rejected",
    "rejected_by_reason",
    "audio_seconds",
    "tokens",
    "bytes_by_format",
    "random_weights",
    "verify",
)
REJECT_KEYS = ("source", "unit", "row", "id", "reason", "detail")
# The config: what decides the output and how it was made; not where things were on this machine.
CONFIG_KEYS = {
    "codec": ("name", "repo", "revision", "arch", "weights"),
    "dataset": ("name", "streaming", "reshard", "path", "sources"),
    "runtime": (
        "devices",
        "batch_samples",
        "compile",
        "autocast",
        "tf32",
        "num_jobs",
        "job_index",
        "max_chunk_seconds",
        "verify_fraction",
        "max_duration",
        "min_samples",
        "max_rows",
        "seed",
    ),
    "output": ("format", "lines_per_file", "gzip_level", "flatten"),
}
CONFIG_SOURCE_KEYS = (
    "hub",
    "path",
    "config",
    "split",
    "revision",
    "text_column",
    "audio_column",
    "speaker_column",
    "id_column",
    "add_constant",
    "keep_columns",
    "data_files",  # Hub sources only: a local one's may hold absolute paths
    "license",
)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/[^\s'\"`:,;()\[\]{}<>|]+)+")


def public_records(lines: bytes) -> bytes:
    """A manifest's JSON lines, each cut to what may be published; other record types (a resume's
    host and attempt dir) are left out."""
    out = []
    for line in lines.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        kept = public_record(record)
        if kept is not None:
            out.append(json.dumps(kept) + "\n")
    return "".join(out).encode()


def public_record(record: dict[str, Any]) -> dict[str, Any] | None:
    kind = record.get("type")
    if kind == "header":
        return public_header(record)
    if kind == "shard":
        shard = _pick(record, SHARD_KEYS)
        if "files" in shard:
            shard["files"] = [_pick(f, FILE_KEYS) for f in shard["files"]]
        return shard
    if kind == "summary":
        return _pick(record, SUMMARY_KEYS)
    return None


def public_header(header: dict[str, Any]) -> dict[str, Any]:
    out = _pick(header, HEADER_KEYS)
    if "weights" in out:
        out["weights"] = public_weights(header["weights"])
    out["sources"] = [_pick(s, SOURCE_KEYS) for s in header.get("sources", [])]
    if "config" in out:
        out["config"] = public_config(header["config"], out.get("weights", {}))
    if "merged" in out:
        merged = header["merged"]
        out["merged"] = {
            "num_jobs": merged.get("num_jobs"),
            "jobs": [{"job_index": j.get("job_index")} for j in merged.get("jobs", [])],
        }
    return out


def public_weights(weights: dict[str, Any]) -> dict[str, Any]:
    """A Hub id stays as it is; local weights are named by their folder."""
    out = _pick(weights, WEIGHTS_KEYS)
    if out.get("kind") == "local" and out.get("name"):
        out["name"] = _last(out["name"])
    return out


def public_config(conf: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, keys in CONFIG_KEYS.items():
        if isinstance(conf.get(group), dict):
            out[group] = _pick(conf[group], keys)
    if "weights" in out.get("codec", {}):
        out["codec"]["weights"] = weights.get("name", "?")
    dataset = out.get("dataset", {})
    if dataset.get("path"):
        dataset["path"] = _last(dataset["path"])
    if "sources" in dataset:
        dataset["sources"] = [_pick(s, CONFIG_SOURCE_KEYS) for s in dataset["sources"]]
        for source in dataset["sources"]:
            if source.get("path"):
                source["path"] = _last(source["path"])
                source.pop("data_files", None)
    if "report" in conf:
        out["report"] = conf["report"]
    return out


def public_rejects(lines: bytes, roots: list[str]) -> bytes:
    """Rejects cut to their fields, with paths in `detail` (and a path-like `id`) made relative
    to the dataset folder in `roots` they are under, else reduced to their file name."""
    out = []
    for line in lines.splitlines():
        if not line.strip():
            continue
        reject = _pick(json.loads(line), REJECT_KEYS)
        if isinstance(reject.get("detail"), str):
            reject["detail"] = scrub_paths(reject["detail"], roots)
        if isinstance(reject.get("id"), str):
            reject["id"] = scrub_paths(reject["id"], roots)
        out.append(json.dumps(reject) + "\n")
    return "".join(out).encode()


def scrub_paths(text: str, roots: list[str]) -> str:
    """Every absolute path in `text`: relative to the first of `roots` it is under, else its
    file name."""
    ordered = sorted((r.rstrip("/") for r in roots if r), key=len, reverse=True)

    def relative(match: re.Match) -> str:
        path = match.group(0)
        for root in ordered:
            if path == root:
                return _last(root)
            if path.startswith(root + "/"):
                return path[len(root) + 1 :]
        return _last(path)

    return _ABSOLUTE_PATH.sub(relative, text)


def dataset_roots(header: dict[str, Any]) -> list[str]:
    """The local folders a run read, as configured and as resolved (the fingerprint records the
    resolved path), from its full header."""
    dataset = header.get("config", {}).get("dataset", {})
    resolved = header.get("fingerprint", {}).get("dataset.sources", [])
    roots = [dataset.get("path")] + [s.get("path") for s in dataset.get("sources", []) + resolved]
    return [str(r) for r in roots if r]


def _pick(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: record[k] for k in keys if k in record}


def _last(path: str) -> str:
    return PurePosixPath(str(path).rstrip("/")).name or str(path)
