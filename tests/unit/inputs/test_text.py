"""The template's tokenizer: loaded through the real AutoTokenizer path from a dir the tests make,
checked before anything starts, and the text's ids made as the readers make them."""

from __future__ import annotations

import pickle
import sys

import pytest
from helpers import FAKE_SHA, compose_cfg, populate_hf_cache, typed_cfg
from orpheus_tokenizer import make_tokenizer

from snactok.config.checks import check_config
from snactok.errors import ConfigError
from snactok.inputs.audio import Rejected
from snactok.inputs.text import TextIds, check_text_format, load_tokenizer, open_template


def _template(tokenizer, *extra):
    return typed_cfg(["template=orpheus", f"template.tokenizer={tokenizer}", *extra]).template


def test_text_ids_start_with_the_tokenizers_bos_and_survive_pickling(orpheus_tokenizer):
    from transformers import AutoTokenizer

    template = _template(orpheus_tokenizer, "template.text_format='{speaker}: {text}'")
    text_ids = pickle.loads(pickle.dumps(open_template(template, [_Source(True)])))  # as readers get it
    ids = text_ids("A quick test.", "en_f1")
    assert ids == AutoTokenizer.from_pretrained(str(orpheus_tokenizer))("en_f1: A quick test.").input_ids
    assert ids[0] == 128000 and len(ids) > 3
    plain = TextIds(text_ids.tokenizer, _template(orpheus_tokenizer))  # text_format "{text}"
    with pytest.raises(Rejected) as info:
        plain("", None)
    assert info.value.reason == "no_text_tokens"


def test_identity_names_the_definition_not_only_the_path(orpheus_tokenizer, tmp_path):
    template = _template(orpheus_tokenizer)
    one = TextIds(load_tokenizer(template), template).identity
    assert one["size"] == 156_938 and one["name"] == str(orpheus_tokenizer.resolve())
    other = make_tokenizer(tmp_path / "tok", size=156_939)  # one token more, same everything else
    two = TextIds(load_tokenizer(_template(other)), _template(other)).identity
    assert one["sha256"] != two["sha256"]


def test_a_hub_tokenizer_in_the_local_cache_loads_offline_and_names_its_commit(
    orpheus_tokenizer, tmp_path, monkeypatch
):
    """The Hub path, offline: the files laid out as the HF cache holds a download."""
    from huggingface_hub import constants as hf_constants

    repo = "canopylabs/orpheus-3b-0.1-pretrained"
    files = tmp_path / "repo"  # a model repo: its config.json (AutoTokenizer reads it) and tokenizer
    files.mkdir()
    (files / "config.json").write_text('{"model_type": "llama"}')
    names = ("config.json", "tokenizer.json", "tokenizer_config.json")
    for name in names[1:]:
        (files / name).symlink_to(orpheus_tokenizer / name)
    populate_hf_cache(tmp_path / "hf", repo, files, names)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    template = _template(repo)
    identity = TextIds(load_tokenizer(template), template).identity
    assert (identity["name"], identity["commit"], identity["size"]) == (repo, FAKE_SHA, 156_938)


def test_a_vocabulary_short_of_the_orpheus_ids_is_refused_with_how_to_grow_it(tmp_path):
    small = make_tokenizer(tmp_path / "small", size=128_264)
    with pytest.raises(ConfigError) as info:
        load_tokenizer(_template(small))
    message = str(info.value)
    assert "128,264 tokens" in message and "156,937" in message and "at least 156,938" in message
    assert "add_tokens" in message and "save_pretrained" in message


def test_a_tokenizer_that_cannot_load_names_the_key_and_the_offline_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_tokenizer(_template(tmp_path / "nothing_here"))
    assert "template.tokenizer=" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):  # a Hub id, offline and not cached
        load_tokenizer(_template("canopylabs/orpheus-3b-0.1-pretrained"))


def test_missing_transformers_gives_the_install_line(monkeypatch, orpheus_tokenizer):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what an install without it raises
    with pytest.raises(ConfigError) as info:
        load_tokenizer(_template(orpheus_tokenizer))
    assert "pip install 'snactok[orpheus]'" in str(info.value)


class _Source:
    def __init__(self, speaker: bool):
        self.speaker_column = "speaker" if speaker else None


def test_text_format_may_use_text_and_speaker_only_where_there_is_one():
    check_text_format("{speaker}: {text}", [True, True])
    with pytest.raises(ConfigError, match=r"uses \['lang'\]; it can use \['text', 'speaker'\]"):
        check_text_format("{lang} {text}", [True])
    with pytest.raises(ConfigError, match=r"dataset.sources\[1\] have no speaker column"):
        check_text_format("{speaker}: {text}", [True, False])


def test_a_template_needs_snac_24khz_and_a_tokenizer():
    cfg = compose_cfg(["template=orpheus", "template.tokenizer=x", "codec=snac_44khz"])
    with pytest.raises(
        ConfigError, match=r"template=orpheus needs codec=snac_24khz.*not codec=snac_44khz"
    ):
        check_config(cfg)
    with pytest.raises(ConfigError, match="template.tokenizer"):
        check_config(compose_cfg(["template=orpheus"]))
    check_config(compose_cfg(["template=orpheus", "template.tokenizer=x"]))
