"""A template's text side (`template=orpheus`): its tokenizer, loaded and checked in the main
process before anything starts, and the text's token ids, made by the readers row by row.

`transformers` is an extra (`pip install 'snactok[orpheus]'`), imported only when a template is set.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import string
from pathlib import Path
from typing import Any

from snactok.codec import orpheus
from snactok.config.schema import TemplateConfig
from snactok.errors import ConfigError
from snactok.inputs.audio import Rejected

TEXT_FIELDS = ("text", "speaker")
INSTALL = "pip install 'snactok[orpheus]'   # or: pip install 'transformers>=4.50'"


def load_tokenizer(template: TemplateConfig) -> Any:
    """`AutoTokenizer.from_pretrained(template.tokenizer)`, refused with the fix when it cannot
    load or its vocabulary does not reach every id the template writes."""
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise ConfigError(f"template={template.name} needs transformers: {INSTALL}") from err
    where = template.tokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, revision=template.revision)
    except Exception as err:  # offline, missing repo or dir, no tokenizer files: the same fix
        raise ConfigError(
            f"cannot load template.tokenizer={where!r} ({type(err).__name__}: {err}). A Hub id needs "
            "the Hub or the HF cache (offline: HF_HUB_OFFLINE=1 uses the cache only); or give a "
            "local dir written by tokenizer.save_pretrained(dir)"
        ) from err
    needed = orpheus.max_id(template) + 1
    if len(tokenizer) < needed:
        raise ConfigError(
            f"template.tokenizer={where!r} has {len(tokenizer):,} tokens, but template={template.name} "
            f"writes ids up to {needed - 1:,}, so it needs at least {needed:,}. Use the model's own "
            f"tokenizer (canopylabs/orpheus-3b-0.1-pretrained), or add the custom tokens and save it: "
            f'tokenizer.add_tokens([f"<custom_token_{{i}}>" for i in range({needed - len(tokenizer)})]); '
            "tokenizer.save_pretrained(dir)"
        )
    return tokenizer


def tokenizer_identity(tokenizer: Any, template: TemplateConfig) -> dict[str, Any]:
    """What names a tokenizer's ids, for the header and the resume fingerprint: its name, revision
    and Hub commit, its size, and a hash of its whole definition (vocabulary, merges, added
    tokens, normalizer, post-processor) as `tokenizer.json` serializes it."""
    definition = tokenizer.backend_tokenizer.to_str().encode()
    local = Path(template.tokenizer).expanduser()
    return {
        "name": str(local.resolve()) if local.is_dir() else template.tokenizer,
        "revision": template.revision,
        "commit": None if local.is_dir() else _hub_commit(template.tokenizer, template.revision),
        "class": type(tokenizer).__name__,
        "size": len(tokenizer),
        "sha256": hashlib.sha256(definition).hexdigest(),
    }


def _hub_commit(repo: str, revision: str | None) -> str | None:
    """The Hub commit the tokenizer was loaded from: its snapshot dir in the HF cache."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo, "tokenizer_config.json", revision=revision)
    return Path(path).parent.name if isinstance(path, str) else None


def check_text_format(text_format: str, with_speaker: list[bool]) -> None:
    """`template.text_format` may use {text} and {speaker}, and {speaker} only where every
    source has a speaker column."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(text_format) if name is not None}
    except ValueError as err:
        raise ConfigError(f"template.text_format={text_format!r} is not a format string: {err}") from err
    unknown = sorted(fields - set(TEXT_FIELDS))
    if unknown:
        raise ConfigError(
            f"template.text_format={text_format!r} uses {unknown}; it can use {list(TEXT_FIELDS)}"
        )
    missing = [i for i, has in enumerate(with_speaker) if not has]
    if "speaker" in fields and missing:
        raise ConfigError(
            f"template.text_format={text_format!r} uses {{speaker}}, but dataset.sources{missing} "
            "have no speaker column; set dataset.sources.N.speaker_column, or text_format='{text}'"
        )


class TextIds:
    """A row's text (through `template.text_format`) as the tokenizer's ids, its own BOS
    included. Picklable: each reader gets one. `identity` names the tokenizer (header and
    fingerprint)."""

    def __init__(self, tokenizer: Any, template: TemplateConfig):
        self.tokenizer = tokenizer
        self.text_format = template.text_format
        self.special = set(tokenizer.all_special_ids)
        self.identity = tokenizer_identity(tokenizer, template)

    def save(self, directory: Path, pad: int) -> None:
        """The tokenizer the sequences were made with, its pad token the template's `pad`, so
        `AutoTokenizer.from_pretrained(directory)` and `DataCollatorForSeq2Seq` pad as the
        template says. Written once; a resumed run keeps the first (the fingerprint matched)."""
        if (directory / "tokenizer_config.json").is_file():
            return
        tokenizer = copy.deepcopy(self.tokenizer)
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)
        staging = directory.with_name(f".{directory.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)  # a save that died half-way
        tokenizer.save_pretrained(staging)
        staging.rename(directory)

    def __call__(self, text: str, speaker: str | None) -> list[int]:
        ids = self.tokenizer(self.text_format.format(text=text, speaker=speaker)).input_ids
        if all(i in self.special for i in ids):
            raise Rejected("no_text_tokens", f"text {text[:40]!r} gives no tokens but special ones")
        return ids


def open_template(template: TemplateConfig | None, sources: list[Any]) -> TextIds | None:
    """The readers' TextIds for `template` (None without one), its text format checked against
    the sources and its tokenizer loaded and checked, before any process starts."""
    if template is None:
        return None
    check_text_format(template.text_format, [bool(s.speaker_column) for s in sources])
    return TextIds(load_tokenizer(template), template)
