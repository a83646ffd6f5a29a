"""Columns of a source: values and features at a column or a dotted path into a JSON/struct column
(`json.text`), `auto` columns found by name or type, `keep_columns` named for the output, and the
checks that name a missing column or field with the ones the source has."""

from __future__ import annotations

import re
from typing import Any

import datasets
import pyarrow as pa

from snactok.errors import ConfigError

AUTO = "auto"


SPEAKER_COLUMNS = ("speaker", "speaker_id")


ID_COLUMNS = ("id", "__key__")  # __key__: a WebDataset sample's key


# Output columns a kept source column may not take the name of (snac_layer_N is checked apart).
OUTPUT_COLUMNS = ("text", "num_layers", "token_lengths", "speaker", "id", "duration", "codes")


# A streamed audio column as plain bytes and path: a stream of Python rows (WebDataset) is
# encoded feature by feature, and datasets encodes Audio values through torchcodec (and system
# FFmpeg) even when they are never decoded.
RAW_AUDIO = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}


def lookup(row: dict, path: str) -> Any:
    """A column's value, or with a dotted path a field inside a JSON/struct column (`json.text`);
    None where a row lacks the field."""
    if path in row:
        return row[path]
    top, *keys = path.split(".")
    value = row[top]
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def top_column(path: str, names: list[str]) -> str:
    """The column a path reads: itself when a column has that name (`audio.flac`), else the part
    before the first dot."""
    return path if path in names else path.split(".")[0]


def feature_at(features: Any, path: str) -> Any:
    """The feature at a column or dotted path, or None when there is none."""
    if path in features:
        return features[path]
    top, *keys = path.split(".")
    feature = features.get(top)
    for key in keys:
        if not isinstance(feature, dict) or key not in feature:
            return None
        feature = feature[key]
    return feature


def arrow_type(feature: Any) -> pa.DataType | None:
    """The Parquet type a datasets feature is stored as; None for an unknown one."""
    if feature is None:
        return None
    return datasets.Features({"x": feature}).arrow_schema.field("x").type


def column_names(data: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    """Column names; a stream without declared features shows its first row's keys."""
    if data.column_names is not None:
        return list(data.column_names)
    return list(next(iter(data.take(1)), {}).keys())


def auto_column(chosen: str | None, names: list[str], candidates: tuple[str, ...]) -> str | None:
    """A column setting: as given, or with `auto` the first candidate the data has (else none)."""
    if chosen != AUTO:
        return chosen
    return next((c for c in candidates if c in names), None)


def audio_columns(chosen: str, names: list[str], features: Any, index: int) -> tuple[str, ...]:
    """`auto`: the `audio` column, else every column typed as audio (a WebDataset's `mp3`, `flac`,
    ... members), of which each row gives its first non-null."""
    if chosen != AUTO:
        return (chosen,)
    if "audio" in names:
        return ("audio",)
    typed = tuple(c for c, f in (features or {}).items() if isinstance(f, datasets.Audio))
    if not typed:
        raise ConfigError(
            f"dataset.sources[{index}] has no audio column: none is named `audio` or holds audio "
            f"files; columns are {names}. Set dataset.sources.{index}.audio_column"
        )
    return typed


def kept_columns(setting: Any, constants: dict[str, Any], index: int) -> dict[str, str]:
    """`keep_columns` by output name: a list names each by its path's last part (`json.dnsmos`
    -> `dnsmos`), a mapping gives the names (`{emilia_duration: json.duration}`)."""
    named = dict(setting) if isinstance(setting, dict) else {p.rsplit(".", 1)[-1]: p for p in setting}
    if not isinstance(setting, dict) and len(named) < len(setting):
        raise ConfigError(
            f"dataset.sources[{index}].keep_columns {list(setting)} end in the same name twice; "
            "name them with a mapping, e.g. keep_columns={a_text: a.text, b_text: b.text}"
        )
    for name, path in named.items():
        if name in OUTPUT_COLUMNS or name in constants or re.fullmatch(r"snac_layer_\d+", name):
            raise ConfigError(
                f"dataset.sources[{index}].keep_columns: {path!r} would be written as column "
                f"{name!r}, which the output already has; name it with a mapping, e.g. "
                f"keep_columns={{source_{name}: {path}}}"
            )
    return named


def check_columns(data: Any, names: list[str], paths: dict[str, str | None], index: int) -> None:
    for key, path in paths.items():
        if not path:
            continue
        top = top_column(path, names)
        if top not in names:
            nested = [c for c in names if isinstance((data.features or {}).get(c), dict)]
            hint = (
                f"; a field inside {nested[0]!r} is a dotted path, e.g. {nested[0]}.text"
                if nested
                else ""
            )
            raise ConfigError(
                f"unknown dataset column {path!r} (dataset.sources[{index}].{key}); "
                f"columns are {names}{hint}"
            )
        if path != top and data.features is not None and feature_at(data.features, path) is None:
            fields = list(data.features[top]) if isinstance(data.features[top], dict) else []
            raise ConfigError(
                f"dataset column {top!r} has no field {path[len(top) + 1 :]!r} "
                f"(dataset.sources[{index}].{key}); its fields are "
                + (
                    f"{fields}: e.g. dataset.sources.{index}.{key}={top}.{fields[0]}"
                    if fields
                    else f"none (it is not a JSON/struct column): e.g. dataset.sources.{index}.{key}={top}"
                )
            )


def undecoded(data: Any, audio: tuple[str, ...]) -> Any:
    """Audio columns as undecoded {bytes, path}: Audio(decode=False) on a Dataset; plain bytes
    and path on a stream, whose rows datasets would otherwise encode through torchcodec."""
    for column in audio:
        if data.features is None or not isinstance(data.features.get(column), datasets.Audio):
            continue
        if isinstance(data, datasets.IterableDataset):
            data = data.cast_column(column, RAW_AUDIO)
        else:
            data = data.cast_column(column, datasets.Audio(decode=False))
    return data
