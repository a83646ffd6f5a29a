"""The card's schema section (snactok.tools.card): each shard column, its type as the shard holds
it, and what it means for this run's codec and sources."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from snactok.codec import orpheus
from snactok.codec.layout import token_rates
from snactok.output.rundir import PARQUET_SUFFIX, Run


def markdown_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def schema_section(run: Run, suffix: str) -> str:
    first = next(e.file for r in run.shards if r.rows for e in r.files if e.file.endswith(suffix))
    columns = _columns(run.dir / first)
    described = _column_meanings(run)
    rows = [(f"`{name}`", kind, described(name)) for name, kind in columns]
    return (
        "## Schema\n\nOne row per encoded clip, in input order within each shard.\n\n"
        + markdown_table(("column", "type", "meaning"), rows)
    )


def _columns(path: Path) -> list[tuple[str, str]]:
    """(name, type) of a shard's columns: Parquet's schema, or the first JSON line's values."""
    if path.name.endswith(PARQUET_SUFFIX):
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
    read = run.header.sources  # as read; runs before `columns` have only the config
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
