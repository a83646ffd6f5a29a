"""The pieces behind resume and clean stops, without starting a run: torn logs, fingerprint
differences, Hub commits from the local cache, and who decides on SIGTERM / SIGUSR2."""

from __future__ import annotations

import pytest

from snactok.errors import ConfigError
from snactok.inputs.layouts import hub_dataset_commit
from snactok.output.resume import differences, repair_jsonl

SHA = "89abcdef0123456789abcdef0123456789abcdef"


def test_a_torn_last_line_is_cut_and_the_file_rewritten(tmp_path):
    log = tmp_path / "manifest.jsonl"
    log.write_text('{"type": "header"}\n{"type": "shard", "unit": 0}\n{"type": "shard", "un')
    records = repair_jsonl(log)
    assert records == [{"type": "header"}, {"type": "shard", "unit": 0}]
    assert log.read_text() == '{"type": "header"}\n{"type": "shard", "unit": 0}\n'


def test_damage_before_the_last_line_is_refused(tmp_path):
    log = tmp_path / "manifest.jsonl"
    log.write_text('{"type": "header"}\nnot json\n{"type": "shard", "unit": 0}\n')
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        repair_jsonl(log)


def test_rejects_of_units_not_done_are_dropped(tmp_path):
    log = tmp_path / "rejects.jsonl"
    log.write_text('{"unit": 0, "row": 1}\n{"unit": 3, "row": 40}\n{"unit": 0, "row": 2}\n')
    kept = repair_jsonl(log, keep=lambda r: r["unit"] in {0})
    assert [r["row"] for r in kept] == [1, 2]
    assert '"unit": 3' not in log.read_text()


def test_differences_name_each_key_with_both_values():
    old = {"output.lines_per_file": 16, "runtime.tf32": False, "codec.arch": {"a": [1, 2]}}
    new = {"output.lines_per_file": 8, "runtime.tf32": False, "codec.arch": {"a": [1, 2]}}
    assert differences(old, new) == ["output.lines_per_file: the run has 16, this command has 8"]
    assert differences(old, old) == []


def test_a_hub_dataset_revision_resolves_to_its_commit_from_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "datasets--me--speech" / "refs"
    (refs / "refs" / "convert").mkdir(parents=True)
    (refs / "main").write_text(SHA)
    (refs / "refs" / "convert" / "parquet").write_text(SHA[::-1])
    assert hub_dataset_commit("me/speech", None) == SHA
    assert hub_dataset_commit("me/speech", "refs/convert/parquet") == SHA[::-1]
    assert hub_dataset_commit("me/speech", SHA) == SHA  # already a commit
    assert hub_dataset_commit("me/other", None) is None  # unknown: the name stays in the fingerprint
