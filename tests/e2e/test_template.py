"""template=orpheus end to end: a `-m` sweep over dedup writes training sequences that match the
layout built here from each row's text and layers, and a real client trains on them.

The tokenizer is a real one the tests build (tests/orpheus_tokenizer.py) and load through
`template.tokenizer=<dir>`; the client is what Orpheus-style trainers use: `datasets` Parquet
loading, `transformers.DataCollatorForSeq2Seq` and a tiny randomly initialised `LlamaForCausalLM`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ROOT, demo_rows, run_cli, run_rows
from snac import SNAC

from snactok.codec import orpheus
from snactok.codec.layout import padded_length
from snactok.config.schema import TemplateConfig
from snactok.inputs.audio import Resampler, decode
from snactok.output.files import read_jsonl

pytestmark = pytest.mark.slow

SPECIALS = {
    "soh": 128259,
    "eot": 128009,
    "eoh": 128260,
    "soa": 128261,
    "sos": 128257,
    "eos": 128258,
    "eoa": 128262,
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """12 demo clips with half a second of silence before and after: silence gives the same
    layer-1 code frame after frame, which is what first_token dedup drops."""
    out = tmp_path_factory.mktemp("template_folder")
    rows = demo_rows()[:12]
    for r in rows:
        audio, rate = sf.read(ROOT / "data" / "demo" / r["file_name"], dtype="float32", always_2d=True)
        quiet = np.zeros((rate // 2, audio.shape[1]), np.float32)
        sf.write(
            out / Path(r["file_name"]).with_suffix(".wav").name,
            np.concatenate([quiet, audio, quiet]),
            rate,
        )
    with open(out / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text", "speaker"])
        writer.writerows(
            [Path(r["file_name"]).with_suffix(".wav").name, r["text"], r["speaker"]] for r in rows
        )
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, weights_dir, orpheus_tokenizer, folder):
    """`-m template.dedup=none,first_token` on those 12 rows in 2 units, both formats, with the
    speaker before the text: job 0 keeps every frame, job 1 drops repeats."""
    root = tmp_path_factory.mktemp("template_sweep")
    proc = run_cli(
        [
            "-m",
            "dataset=local_folder",
            f"dataset.path={folder}",
            f"codec.weights={weights_dir('snac_24khz')}",
            "runtime=debug",
            "runtime.max_rows=null",
            "output.lines_per_file=6",
            "output.format=both",
            "template=orpheus",
            f"template.tokenizer={orpheus_tokenizer}",
            "template.text_format='{speaker}: {text}'",
            "template.dedup=none,first_token",
            f"hydra.sweep.dir={root}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"none": root / "0", "first_token": root / "1"}


def _frames_by_hand(row: dict) -> list[list[int]]:
    """Orpheus's 7-token frames of a row's layers, written out as its notebook writes them."""
    l1, l2, l3 = row["snac_layer_1"], row["snac_layer_2"], row["snac_layer_3"]
    base = 128266
    return [
        [
            l1[i] + base,
            l2[2 * i] + base + 4096,
            l3[4 * i] + base + 2 * 4096,
            l3[4 * i + 1] + base + 3 * 4096,
            l2[2 * i + 1] + base + 4 * 4096,
            l3[4 * i + 2] + base + 5 * 4096,
            l3[4 * i + 3] + base + 6 * 4096,
        ]
        for i in range(len(l1))
    ]


def _notebook_dedup(frames: list[list[int]]) -> list[list[int]]:
    kept = frames[:1]
    for frame in frames[1:]:
        if frame[0] != kept[-1][0]:
            kept.append(frame)
    return kept


def _expected(row: dict, tokenizer, dedup: str) -> list[int]:
    frames = _frames_by_hand(row)
    if dedup == "first_token":
        frames = _notebook_dedup(frames)
    text = tokenizer(f"{row['speaker']}: {row['text']}").input_ids
    s = SPECIALS
    audio = [t for frame in frames for t in frame]
    return [s["soh"], *text, s["eot"], s["eoh"], s["soa"], s["sos"], *audio, s["eos"], s["eoa"]]


def _parquet(run_dir: Path):
    import datasets

    files = sorted(str(p) for p in (run_dir / "shards").glob("*.parquet"))
    return datasets.load_dataset("parquet", data_files=files, split="train")


@pytest.mark.parametrize("dedup", ["none", "first_token"])
def test_every_row_is_the_orpheus_layout_in_both_formats(sweep, orpheus_tokenizer, dedup):
    from transformers import AutoTokenizer

    run_dir = sweep[dedup]
    tokenizer = AutoTokenizer.from_pretrained(str(orpheus_tokenizer))
    rows = run_rows(run_dir)
    assert len(rows) == 12
    for row in rows:
        want = _expected(row, tokenizer, dedup)
        assert row["input_ids"] == want, row["id"]
        assert row["num_tokens"] == len(want)
        assert row["labels"] == want and row["attention_mask"] == [1] * len(want)
    table = _parquet(run_dir)
    assert table.features["input_ids"].feature.dtype == "int32"
    assert [r["input_ids"] for r in table] == [r["input_ids"] for r in rows]  # one unit order
    records = [r for r in read_jsonl(run_dir / "manifest.jsonl") if r["type"] == "shard"]
    dropped = sum(len(_frames_by_hand(r)) - len(_notebook_dedup(_frames_by_hand(r))) for r in rows)
    assert sum(r["dropped_frames"] for r in records) == (dropped if dedup == "first_token" else 0)
    if dedup == "first_token":
        assert dropped > 0  # the random codebooks repeat layer-1 codes: the rule had work to do


def test_the_tokenizer_is_named_in_the_header_and_fingerprint_and_saved_with_its_pad(sweep):
    from transformers import AutoTokenizer

    header = read_jsonl(sweep["none"] / "manifest.jsonl")[0]
    identity = header["template"]["tokenizer"]
    assert identity["size"] == 156_938 and len(identity["sha256"]) == 64
    assert header["fingerprint"]["template"]["tokenizer"] == identity
    assert header["fingerprint"]["template"]["dedup"] == "none"
    assert {"transformers", "tokenizers"} <= set(header["fingerprint"]["packages"])
    saved = AutoTokenizer.from_pretrained(str(sweep["none"] / "tokenizer"))
    assert saved.pad_token_id == 128263


def test_a_real_client_batches_the_parquet_shards_and_takes_a_training_step(sweep):
    """datasets -> DataCollatorForSeq2Seq (padding 128263, mask 0, labels -100) -> one AdamW step
    of a tiny random LlamaForCausalLM whose vocabulary covers every id: a finite loss, and the
    step moved the weights."""
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, LlamaConfig, LlamaForCausalLM

    run_dir = sweep["none"]
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    data = _parquet(run_dir).select_columns(["input_ids", "attention_mask", "labels"])
    collator = DataCollatorForSeq2Seq(tokenizer)
    batch = collator([data[i] for i in range(4)])
    lengths = [len(data[i]["input_ids"]) for i in range(4)]
    longest, shortest = int(np.argmax(lengths)), int(np.argmin(lengths))
    assert batch["input_ids"].shape == (4, max(lengths)) and min(lengths) < max(lengths)
    pad = slice(lengths[shortest], None)
    assert (batch["input_ids"][shortest, pad] == 128263).all()
    assert (batch["attention_mask"][shortest, pad] == 0).all()
    assert (batch["labels"][shortest, pad] == -100).all()
    assert batch["input_ids"][longest].tolist() == data[longest]["input_ids"]

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=128263,
    )
    model = LlamaForCausalLM(config)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and loss.item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_input_ids_decode_back_to_audio_of_the_rows_padded_length(sweep, weights_dir, folder):
    """input_ids -> layers (split_sequence) -> SNAC.decode, with dedup off: the row's own layers,
    and audio of the padded length the tokens stand for."""
    run_dir = sweep["none"]
    header = read_jsonl(run_dir / "manifest.jsonl")[0]
    template = TemplateConfig(**header["config"]["template"])
    model = SNAC.from_pretrained(str(weights_dir("snac_24khz"))).eval()
    for row in run_rows(run_dir)[:3]:
        _, layers = orpheus.split_sequence(row["input_ids"], template)
        assert [x.tolist() for x in layers] == [row[f"snac_layer_{i}"] for i in (1, 2, 3)]
        with torch.inference_mode():
            audio = model.decode([torch.tensor(x, dtype=torch.long)[None] for x in layers])
        wave = Resampler(24000)(*decode(str(folder / row["id"])))  # as a reader does
        assert audio.shape[-1] == padded_length(len(wave), 2048)


def test_snactok_inspect_decodes_its_samples_from_input_ids(sweep):
    """With dedup=first_token the inspect samples are what a trainer sees: the kept frames only."""
    from snactok.tools.report import write_report

    run_dir = sweep["first_token"]
    write_report(run_dir, num_audio=2)
    clips = json.loads((run_dir / "report" / "summary.json").read_text())["audio"]
    rows = {r["id"]: r for r in run_rows(run_dir)}
    assert len(clips) == 2
    for clip in clips:
        kept = len(_notebook_dedup(_frames_by_hand(rows[clip["id"]])))
        assert sf.info(clip["reconstructed"]).frames == kept * 2048
