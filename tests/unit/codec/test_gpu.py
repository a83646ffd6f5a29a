"""The contract on CUDA. Skipped where no GPU is visible (CI, this machine); `scripts/gpu_check.py`
runs the same checks and reports speed on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compose_cfg

from snactok.codec.encoder import BatchEncoder, Reference, prepare_device, probe_clips, self_check
from snactok.codec.weights import Weights, arch_dict, calibration_audio, load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible"),
]


def test_fixed_shape_cuda_batches_give_single_clip_tokens_in_any_company(weights_dir):
    """torch's defaults (TF32 in cuDNN convolutions, as the reference runs); each padded length
    always runs as a batch of the same shape, so changing a clip's neighbours changes nothing."""
    arch = arch_dict(compose_cfg(["codec=snac_44khz"]).codec.arch)
    path = str(weights_dir("snac_44khz"))
    device = prepare_device("cuda:0")
    assert torch.backends.cudnn.allow_tf32 is True  # torch's default, kept
    weights = Weights("local", path, path)
    encoder = BatchEncoder(load_model(weights, arch), device, arch, batch_samples=8 * 12288)
    reference = Reference(load_model(weights, arch, fold=False), device)
    speech = calibration_audio(arch["sampling_rate"], seconds=20.0).reshape(-1)
    lengths = [12288 - 7, 12288, 5000, 1]
    clips = [speech[20000 * i : 20000 * i + n] for i, n in enumerate(lengths)]
    results = []
    for order in (clips, clips[::-1][:3]):
        batch = encoder.staging(len(order), 12288)
        assert batch.shape == (8, 12288)
        for i, clip in enumerate(order):
            batch[i, : len(clip)] = clip
        results.append(encoder.encode(batch, len(order)))
    for i, clip in enumerate(clips):
        np.testing.assert_array_equal(results[0][i], reference.tokens(clip))
    np.testing.assert_array_equal(results[1], results[0][::-1][:3])
    assert self_check(encoder, reference, probe_clips(arch)) is None
