"""Output formats: Parquet beside or instead of JSONL, and Orpheus's flat token order.

The unit tests write shards straight from `snactok.output.formats`; one slow test runs the real
`python encode.py ... output.format=both output.flatten=orpheus` and compares its two files.
"""

from __future__ import annotations

from dataclasses import replace

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import compose_cfg
from hydra.errors import ConfigCompositionException

from snactok.codec import orpheus
from snactok.config.checks import check_config
from snactok.config.schema import OutputConfig, OutputFormat
from snactok.errors import ConfigError
from snactok.output import formats as shards
from snactok.output.files import sha256_file
from snactok.output.formats import (
    Columns,
    Row,
    format_row,
    parquet_schema,
    read_shard,
    row_groups,
    save_local,
    write_parquet,
    write_shard,
    write_unit,
)
from snactok.output.resume import _check_shard

ORPHEUS = Columns(
    num_layers=3,
    constants={"corpus": "test"},
    with_speaker=True,
    id_is_int=False,
    flatten="orpheus",
)
BOTH = OutputConfig(format=OutputFormat.both, gzip_level=1, buffer_size=1 << 16)


def _rows(count: int = 5, seed: int = 0) -> list[Row]:
    """snac_24khz-shaped rows (n, 2n, 4n tokens) of random codes, of varied lengths."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        n = int(rng.integers(1, 12))
        meta = {"id": f"{i}.wav", "text": f"clip {i} é", "speaker": f"s{i % 2}", "duration": 0.1 * n}
        rows.append(Row(meta, rng.integers(0, 4096, 7 * n).astype(np.int16), (n, 2 * n, 4 * n)))
    return rows


def test_orpheus_order_offsets_and_inverse_on_random_codes():
    n = 50
    rng = np.random.default_rng(1)
    l1, l2, l3 = layers = [rng.integers(0, 4096, k * n).astype(np.int16) for k in (1, 2, 4)]
    codes = orpheus.flatten(layers)
    assert codes.dtype == np.int32 and codes.shape == (7 * n,)
    for i in (0, 1, n - 1):
        frame = [l1[i], l2[2 * i], l3[4 * i], l3[4 * i + 1], l2[2 * i + 1], l3[4 * i + 2], l3[4 * i + 3]]
        expected = [int(c) + 128266 + k * 4096 for k, c in enumerate(frame)]
        assert codes[7 * i : 7 * i + 7].tolist() == expected
    frames = codes.reshape(n, 7)
    for k in range(7):  # each position keeps to its own 4096 ids
        low = 128266 + k * 4096
        assert low <= frames[:, k].min() and frames[:, k].max() < low + 4096
    back = orpheus.unflatten(codes)
    assert [b.dtype for b in back] == [np.int16] * 3
    for got, want in zip(back, layers, strict=True):
        np.testing.assert_array_equal(got, want)
    top = orpheus.flatten([np.full(k, 4095, np.int16) for k in (1, 2, 4)])
    bottom = orpheus.flatten([np.zeros(k, np.int16) for k in (1, 2, 4)])
    assert top.max() == orpheus.MAX_TOKEN == 156937 and bottom.min() == 128266


def test_orpheus_refuses_what_is_not_its_layout():
    with pytest.raises(ValueError, match=r"n, 2n and 4n codes; got \[2, 4, 7\]"):
        orpheus.flatten([np.zeros(2), np.zeros(4), np.zeros(7)])
    with pytest.raises(ValueError, match="7-token frames"):
        orpheus.unflatten(np.zeros(8, np.int32) + 128266)
    codes = orpheus.flatten([np.zeros(k, np.int16) for k in (1, 2, 4)])
    codes[1] = codes[0]  # a layer-1 id where a layer-2 token belongs
    with pytest.raises(ValueError, match="outside the id range of its position"):
        orpheus.unflatten(codes)


def test_both_formats_hold_the_same_rows_in_the_same_columns(tmp_path):
    rows = _rows()
    files = write_unit(tmp_path, "u-00000", rows, ORPHEUS, BOTH)
    names = ["u-00000.jsonl.gz", "u-00000.parquet"]
    assert [f["file"] for f in files] == [f"{tmp_path.name}/{n}" for n in names]
    for f, name in zip(files, names, strict=True):
        assert (f["bytes"], f["sha256"]) == (
            (tmp_path / name).stat().st_size,
            sha256_file(tmp_path / name),
        )
    jsonl = read_shard(tmp_path / names[0])
    table = pq.read_table(tmp_path / names[1])
    assert table.column_names == list(jsonl[0]) and list(jsonl[0])[-1] == "codes"
    assert table.to_pylist() == jsonl
    types = {f.name: f.type for f in table.schema}
    assert [types[f"snac_layer_{i}"] for i in (1, 2, 3)] == [pa.list_(pa.int16())] * 3
    assert types["codes"] == pa.list_(pa.int32()) and types["token_lengths"] == pa.list_(pa.int64())
    assert (types["id"], types["duration"], types["corpus"]) == (pa.string(), pa.float64(), pa.string())
    for row in jsonl:
        layers = orpheus.unflatten(row["codes"])
        assert [x.tolist() for x in layers] == [row[f"snac_layer_{i}"] for i in (1, 2, 3)]


def test_jsonl_without_flatten_keeps_the_original_bytes(tmp_path):
    """write_unit's JSONL is what format_row + write_shard always wrote, and no `codes` key."""
    rows = _rows()
    plain = Columns(num_layers=3, constants={"corpus": "test"}, with_speaker=True)
    (f,) = write_unit(tmp_path, "u", rows, plain, replace(BOTH, format=OutputFormat.jsonl))
    lines = [format_row(r.meta, r.codes, list(r.lengths), {"corpus": "test"}, True) for r in rows]
    write_shard(tmp_path / "ref.jsonl.gz", lines, gzip_level=1, buffer_size=1 << 16)
    assert (tmp_path / "u.jsonl.gz").read_bytes() == (tmp_path / "ref.jsonl.gz").read_bytes()
    assert f["file"] == f"{tmp_path.name}/u.jsonl.gz" and not (tmp_path / "u.parquet").exists()
    assert "codes" not in read_shard(tmp_path / "u.jsonl.gz")[0]


def _varied_rows(rng, count: int, strides: tuple[int, ...], big: int = 0) -> list[Row]:
    """Rows as shards meet them: any text (quotes, newlines, emoji), speakers or None, kept
    fields of several types, ids of both kinds, the codebook's edges, one-frame and long clips."""
    texts = ["plain", 'with "quotes" and \\ slash', "line\nbreak\ttab", "émoji 🎙 中文", ""]
    rows = []
    for i in range(count):
        frames = int(rng.choice([1, 2, 37, 120, big or 120]))
        lengths = tuple(frames * strides[0] // s for s in strides)  # coarse frames
        codes = rng.integers(0, 4096, sum(lengths)).astype(np.int16)
        codes[: min(3, codes.size)] = [0, 4095, 10][: min(3, codes.size)]
        meta = {
            "id": i if i % 2 else f"clip/{i}.flac",
            "text": texts[i % len(texts)],
            "speaker": None if i % 3 == 0 else f"spk {i}",
            "duration": round(float(rng.random()) * 10, 6),
            "keep": {"dnsmos": float(rng.random()), "language": None if i % 4 else "en"},
        }
        rows.append(Row(meta, codes, lengths))
    return rows


@pytest.mark.parametrize(
    ("strides", "flatten"), [((4, 2, 1), None), ((4, 2, 1), "orpheus"), ((8, 4, 2, 1), None)]
)
def test_the_vectorised_lines_are_format_rows_bytes(strides, flatten):
    """format_lines (numpy-formatted token lists) must give exactly format_row's lines, which
    are json.dumps of the row: on varied rows, past its 2**20-token groups, and with a
    constant that takes a leading key's name (then format_row itself is used)."""
    rng = np.random.default_rng(len(strides))
    rows = _varied_rows(rng, 40, strides) + _varied_rows(rng, 3, strides, big=60000)
    for constants in ({"corpus": "x", "n": 3, "w": 0.5}, {}, {"text": "replaced"}):
        columns = Columns(
            num_layers=len(strides),
            constants=constants,
            with_speaker=True,
            flatten=flatten,
            kept={"dnsmos": None, "language": None},
        )
        want = [format_row(r.meta, r.codes, list(r.lengths), constants, True, flatten) for r in rows]
        assert shards.format_lines(rows, columns) == want


def test_parquet_bytes_are_the_same_for_the_same_rows(tmp_path):
    """No time in the file; the writer's only varying field is its version (`created_by`)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_unit(tmp_path / "a", "u", _rows(), ORPHEUS, BOTH)
    b = write_unit(tmp_path / "b", "u", _rows(), ORPHEUS, replace(BOTH, buffer_size=1 << 20))
    assert [(f["bytes"], f["sha256"]) for f in a] == [(f["bytes"], f["sha256"]) for f in b]
    for name in ("u.jsonl.gz", "u.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = pq.ParquetFile(tmp_path / "a" / "u.parquet").metadata
    assert meta.created_by == f"parquet-cpp-arrow version {pa.__version__}"
    assert set(meta.metadata) == {b"ARROW:schema"}


def test_a_failed_parquet_write_leaves_nothing(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards.pq.ParquetWriter, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_parquet(tmp_path / "u.parquet", _rows(), ORPHEUS, buffer_size=1 << 16)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_row_groups_are_bounded_by_bytes_and_have_a_page_index(tmp_path):
    rows = _rows(20)
    limit = 2000  # bytes; ~6 bytes a token with `codes`, so a few rows a group
    groups = row_groups(rows, ORPHEUS, limit)
    assert groups[0][0] == 0 and groups[-1][1] == 20 and len(groups) > 2
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))  # contiguous
    write_parquet(tmp_path / "u.parquet", rows, ORPHEUS, 1 << 16, row_group_bytes=limit)
    meta = pq.ParquetFile(tmp_path / "u.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [b - a for a, b in groups]
    for i in range(meta.num_row_groups):
        layer_1 = meta.row_group(i).column(1)
        assert layer_1.has_offset_index and layer_1.has_column_index
        assert "RLE_DICTIONARY" in layer_1.encodings
    assert (
        pq.read_table(tmp_path / "u.parquet").to_pylist()
        == shards.parquet_table(rows, ORPHEUS).to_pylist()
    )
    assert row_groups(rows, ORPHEUS, limit=1) == [(i, i + 1) for i in range(20)]  # a big row alone
    assert row_groups(rows, ORPHEUS) == [(0, 20)]  # 100 MB by default


def test_an_empty_unit_writes_files_with_no_rows(tmp_path):
    write_unit(tmp_path, "u", [], ORPHEUS, BOTH)
    table = pq.read_table(tmp_path / "u.parquet")
    assert table.num_rows == 0 and table.schema.remove_metadata() == parquet_schema(ORPHEUS)
    assert read_shard(tmp_path / "u.jsonl.gz") == []


def test_save_local_reads_parquet_when_there_is_no_jsonl(tmp_path):
    rows = _rows(6)
    out = replace(BOTH, format=OutputFormat.parquet)
    (tmp_path / "shards").mkdir()
    write_unit(tmp_path / "shards", "u-00000", rows[:4], ORPHEUS, out)
    write_unit(tmp_path / "shards", "u-00001", rows[4:], ORPHEUS, out)
    paths = sorted((tmp_path / "shards").iterdir())
    save_local(paths, tmp_path / "saved")
    saved = datasets.load_from_disk(str(tmp_path / "saved"))
    assert saved.to_list() == shards.parquet_table(rows, ORPHEUS).to_pylist()
    assert saved.features["snac_layer_3"] == datasets.List(datasets.Value("int16"))


def test_resume_checks_every_file_of_a_unit(tmp_path):
    (tmp_path / "shards").mkdir()
    files = write_unit(tmp_path / "shards", "u-00000", _rows(), ORPHEUS, BOTH)
    record = {"unit": 0, **files[0], "files": files}
    _check_shard(tmp_path, record, "u-00000")  # both whole
    parquet = tmp_path / "shards" / "u-00000.parquet"
    data = parquet.read_bytes()
    parquet.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(ConfigError, match=r"shard shards/u-00000.parquet has changed since"):
        _check_shard(tmp_path, record, "u-00000")
    parquet.unlink()
    with pytest.raises(ConfigError, match=r"shard shards/u-00000.parquet is missing"):
        _check_shard(tmp_path, record, "u-00000")
    _check_shard(tmp_path, {"unit": 0, **files[0]}, "u-00000")  # a record from before `files`


@pytest.mark.parametrize("codec", ["snac_32khz", "snac_44khz"])
def test_orpheus_flatten_is_refused_for_other_codecs_naming_both(codec):
    cfg = compose_cfg([f"codec={codec}", "output.flatten=orpheus"])
    with pytest.raises(ConfigError, match=rf"output\.flatten=orpheus .*snac_24khz.*codec '{codec}'"):
        check_config(cfg)


def test_output_format_and_flatten_choices():
    for overrides in (["output.format=parquet"], ["output.format=both", "output.flatten=orpheus"]):
        check_config(compose_cfg(overrides))
    for override, choices in (
        ("output.format=csv", "[jsonl, parquet, both]"),
        ("output.flatten=snac", "[orpheus]"),
    ):
        with pytest.raises(ConfigCompositionException) as info:  # the schema's enums refuse them
            compose_cfg([override])
        assert choices in str(info.value.__cause__)


@pytest.mark.parametrize("with_labels", [True, False])
def test_template_columns_are_the_same_in_both_formats_and_both_jsonl_paths(tmp_path, with_labels):
    """input_ids (int32) and num_tokens, and with labels the labels and attention_mask: the
    same values from Parquet, the vectorised JSONL lines and format_row."""
    from helpers import typed_cfg

    template = typed_cfg(
        ["template=orpheus", "template.tokenizer=/nowhere", f"template.with_labels={with_labels}"]
    ).template
    rows = [
        Row(r.meta | {"text_ids": [128000, 7 + i]}, r.codes, r.lengths) for i, r in enumerate(_rows())
    ]
    columns = replace(ORPHEUS, template=template)
    want = [
        format_row(r.meta, r.codes, list(r.lengths), {"corpus": "test"}, True, "orpheus", template)
        for r in rows
    ]
    assert shards.format_lines(rows, columns) == want
    write_unit(tmp_path, "u", rows, columns, BOTH)
    jsonl, table = read_shard(tmp_path / "u.jsonl.gz"), pq.read_table(tmp_path / "u.parquet")
    assert table.to_pylist() == jsonl
    extra = ["input_ids", "num_tokens"] + (["labels", "attention_mask"] if with_labels else [])
    assert table.column_names[-len(extra) :] == extra
    types = {f.name: f.type for f in table.schema}
    assert types["input_ids"] == pa.list_(pa.int32()) and types["num_tokens"] == pa.int64()
    for r, row in zip(rows, jsonl, strict=True):
        assert row["input_ids"] == orpheus.sequence(r.meta["text_ids"], r.layers(), template).tolist()
        assert row["num_tokens"] == len(row["input_ids"]) == 9 + 7 * r.lengths[0]
        if with_labels:
            assert row["labels"] == row["input_ids"] and row["attention_mask"] == [1] * row["num_tokens"]
