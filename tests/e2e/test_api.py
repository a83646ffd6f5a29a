"""The Python API (`snactok.encode`) runs what `python encode.py` runs: the same shards, byte for
byte, the run's summary, and the shards as a `datasets.Dataset`. Real Hydra composition, real
reader and device processes, no stand-ins."""

from __future__ import annotations

import pytest
import yaml
from helpers import run_cli, run_rows

import snactok

pytestmark = pytest.mark.slow


def overrides(weights) -> list[str]:
    return ["runtime=debug", "runtime.max_rows=6", f"codec.weights={weights}", "wandb.mode=disabled"]


def test_encode_from_python_writes_what_the_cli_writes(tmp_path, weights_dir):
    args = overrides(weights_dir("snac_24khz"))
    result = snactok.encode([*args, "output.format=both"], run_dir=tmp_path / "api")
    cli = run_cli([*args, "output.format=both", f"hydra.run.dir={tmp_path / 'cli'}"])
    assert cli.returncode == 0, cli.stderr[-3000:]

    assert result.run_dir == tmp_path / "api"
    assert result.summary["rows_written"] == 6
    api_shards = sorted(p.relative_to(result.run_dir) for p in (result.run_dir / "shards").iterdir())
    cli_shards = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli/shards").iterdir())
    assert api_shards == cli_shards and len(api_shards) == 2  # one unit, JSONL and Parquet
    for rel in api_shards:
        assert (result.run_dir / rel).read_bytes() == (tmp_path / "cli" / rel).read_bytes(), rel

    # as Hydra would have: merge reads a job's overrides back from .hydra/
    saved = yaml.safe_load((result.run_dir / ".hydra" / "overrides.yaml").read_text())
    assert saved == [*args, "output.format=both"]
    log = (result.run_dir / "encode.log").read_text()
    assert "| weights " in log and "done: 6 rows written" in log, log[-2000:]


def test_the_result_loads_as_a_dataset_in_the_dataset_order(tmp_path, weights_dir):
    result = snactok.encode(
        [*overrides(weights_dir("snac_24khz")), "output.lines_per_file=4"], run_dir=tmp_path
    )
    rows = run_rows(tmp_path)  # two units, in unit order
    data = result.load_dataset()
    assert len(data) == len(rows) == 6
    assert data["text"] == [r["text"] for r in rows]
    assert data["snac_layer_1"] == [r["snac_layer_1"] for r in rows]
    assert result.load_dataset("jsonl")["id"] == [r["id"] for r in rows]
    with pytest.raises(FileNotFoundError, match="no committed parquet shards"):
        result.load_dataset("parquet")  # this run wrote JSONL only


def test_a_bad_config_raises_before_anything_runs(tmp_path):
    with pytest.raises(snactok.ConfigError, match="output.format"):
        snactok.encode(["runtime=debug", "output.format=xml"], run_dir=tmp_path)
    with pytest.raises(snactok.ConfigError, match="snac_44khz"):  # Hydra lists the choices
        snactok.encode(["codec=snac_99khz"], run_dir=tmp_path)
    assert not (tmp_path / "manifest.jsonl").exists()
