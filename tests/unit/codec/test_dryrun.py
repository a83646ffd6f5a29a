"""The dry run's stand-in tokens, and the outputs a dry run refuses (no processes)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import compose_cfg

from snactok.codec.dryrun import pattern
from snactok.codec.layout import padded_length, token_lengths
from snactok.codec.weights import checked_in_codecs
from snactok.config.checks import check_config
from snactok.errors import ConfigError


@pytest.mark.parametrize("codec", sorted(checked_in_codecs()))
def test_the_pattern_has_the_codecs_token_lengths_and_codes(codec):
    arch = checked_in_codecs()[codec]
    padded = padded_length(3 * arch["sampling_rate"], 2048 if codec == "snac_24khz" else 12288)
    tokens = pattern(padded, arch)
    lengths = token_lengths(padded, arch)
    assert tokens.dtype == np.int16 and len(tokens) == sum(lengths)
    assert tokens.min() >= 0 and tokens.max() < arch["codebook_size"]
    first = tokens[: lengths[0]]
    assert len(np.unique(first)) > len(first) // 2  # compresses like tokens, not like zeros
    assert first[1] == 2654435761 % arch["codebook_size"]


def test_a_dry_run_cannot_be_saved():
    for key, value in (("save.local", "/tmp/out"), ("save.hub_repo", "me/set")):
        cfg = compose_cfg(["dataset=demo", "runtime=debug", "runtime.dry_run=true", f"{key}={value}"])
        with pytest.raises(ConfigError, match=rf"{key}=.* null with runtime.dry_run=true"):
            check_config(cfg)
