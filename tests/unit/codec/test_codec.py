"""Token parity with single-clip `SNAC.encode`, weight loading and the Hub-unreachable error."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch
from helpers import CODECS, compose_cfg, populate_hf_cache
from huggingface_hub import constants as hf_constants
from snac import SNAC

from snactok.codec.encoder import BatchEncoder
from snactok.codec.layout import pad_multiple, padded_length, token_lengths
from snactok.codec.weights import arch_dict, calibration_audio, load_model, resolve_weights
from snactok.errors import ConfigError

PAD = {"snac_24khz": 2048, "snac_32khz": 12288, "snac_44khz": 12288}
ONE_SECOND_TOKENS = {
    "snac_24khz": [12, 24, 48],
    "snac_32khz": [12, 24, 48, 96],
    "snac_44khz": [16, 32, 64, 128],
}
PARAMS_M = {"snac_24khz": 19.8, "snac_32khz": 54.5, "snac_44khz": 54.5}


def _arch(codec):
    return compose_cfg([f"codec={codec}"]).codec.arch


@pytest.mark.parametrize("codec", CODECS)
def test_pad_multiple_and_token_lengths(codec):
    arch = _arch(codec)
    assert pad_multiple(arch) == PAD[codec]
    rate = arch.sampling_rate
    assert token_lengths(padded_length(rate, PAD[codec]), arch) == ONE_SECOND_TOKENS[codec]
    assert padded_length(1, PAD[codec]) == PAD[codec]
    assert padded_length(PAD[codec] + 1, PAD[codec]) == 2 * PAD[codec]


@pytest.mark.parametrize("codec", CODECS)
def test_declared_architecture_has_the_published_size(codec, weights_dir):
    model = SNAC.from_pretrained(str(weights_dir(codec)))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == PARAMS_M[codec]


@pytest.mark.parametrize(
    "compile", [False, pytest.param(True, marks=pytest.mark.slow, id="compiled")], ids=["eager", None]
)
@pytest.mark.parametrize("codec", CODECS)
def test_batched_tokens_equal_single_clip_encode(codec, compile, weights_dir):
    """Clips that cross padding boundaries, batched by padded length, against SNAC.encode alone,
    with the encoder eager and compiled (batch sizes 1 and >1 compile apart)."""
    arch = arch_dict(_arch(codec))
    path = str(weights_dir(codec))
    reference = SNAC.from_pretrained(path)  # weight norm as published, not folded
    model = load_model(resolve_weights(_codec_cfg(codec, path)), arch)
    encoder = BatchEncoder(model, torch.device("cpu"), arch, compile=compile)
    pad = PAD[codec]
    lengths = [1, pad - 1, pad, pad + 1, 2 * pad - 1, 2 * pad, 2 * pad + 1, pad + 17, 3 * pad - 5]
    speech = calibration_audio(arch["sampling_rate"], seconds=30.0).reshape(-1)
    clips = [speech[3000 * i : 3000 * i + n].clone() for i, n in enumerate(lengths)]
    by_length = defaultdict(list)
    for i, clip in enumerate(clips):
        by_length[padded_length(len(clip), pad)].append(i)
    assert max(len(v) for v in by_length.values()) >= 3  # real batches, not batch size 1
    compared = 0
    for length, members in by_length.items():
        batch = encoder.staging(len(members), length)
        for row, i in enumerate(members):
            batch[row, : len(clips[i])] = clips[i]
        codes = encoder.encode(batch)
        for row, i in enumerate(members):
            with torch.inference_mode():
                expected = torch.cat(reference.encode(clips[i].view(1, 1, -1)), dim=1)[0].numpy()
            np.testing.assert_array_equal(codes[row], expected, err_msg=f"{codec} clip of {lengths[i]}")
            compared += expected.size
    assert compared > 0
    assert (encoder.compiled, encoder.fallback) == (compile, None)


def _codec_cfg(codec, weights):
    return compose_cfg([f"codec={codec}", f"codec.weights={weights}"]).codec


def test_local_weights_dir_loads_through_snac(weights_dir):
    w = resolve_weights(_codec_cfg("snac_24khz", weights_dir("snac_24khz")))
    assert (w.kind, w.path) == ("local", str(weights_dir("snac_24khz")))


@pytest.mark.parametrize("codec, weights", [("snac_44khz", "snac_24khz"), ("snac_24khz", "snac_32khz")])
def test_weights_that_do_not_fit_the_codec_are_refused_naming_the_codec_they_are(
    weights_dir, codec, weights
):
    with pytest.raises(ConfigError) as info:
        resolve_weights(_codec_cfg(codec, weights_dir(weights)))
    message = str(info.value)
    assert f"do not fit codec={codec}; they are {weights} weights: use codec={weights}" in message
    assert "sampling_rate: weights have" in message and "\n" not in message


def test_hub_unreachable_and_not_cached_names_the_overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_home" / "hub"))
    cfg = compose_cfg(["codec=snac_24khz"]).codec
    with pytest.raises(ConfigError) as info:
        resolve_weights(cfg)
    message = str(info.value)
    assert "hubertsiuzdak/snac_24khz" in message
    assert "codec.weights=/path/to/dir" in message and "codec.weights=random" in message


def test_hub_weights_in_the_local_cache_are_used_offline(tmp_path, monkeypatch, weights_dir):
    populate_hf_cache(tmp_path / "hf", "hubertsiuzdak/snac_24khz", weights_dir("snac_24khz"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    w = resolve_weights(compose_cfg(["codec=snac_24khz"]).codec)
    assert w.kind == "hub" and w.sha == "0123456789abcdef0123456789abcdef01234567"
    assert (
        json.loads(
            (tmp_path / "hf" / "hub")
            .joinpath("models--hubertsiuzdak--snac_24khz", "snapshots", w.sha, "config.json")
            .read_text()
        )["sampling_rate"]
        == 24000
    )


def test_not_a_dir_nor_a_repo_id_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"neither a local directory nor a Hub repo id"):
        resolve_weights(_codec_cfg("snac_24khz", str(tmp_path / "nope")))
