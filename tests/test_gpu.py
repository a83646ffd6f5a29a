"""The same parity on CUDA, with TF32 off. Skipped where no GPU is visible (CI, this machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from snac import SNAC

from snactok.codec import BatchEncoder, Weights, arch_dict, calibration_audio, load_model, prepare_device

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible"),
]


def test_cuda_batch_equals_single_clip_encode_on_cuda(weights_dir):
    arch = arch_dict(compose_cfg(["codec=snac_44khz"]).codec.arch)
    path = str(weights_dir("snac_44khz"))
    device = prepare_device("cuda:0", None)
    assert torch.backends.cudnn.allow_tf32 is False and torch.get_float32_matmul_precision() == "highest"
    encoder = BatchEncoder(load_model(Weights("local", path, path), arch), device, arch)
    reference = SNAC.from_pretrained(path).to(device)
    speech = calibration_audio(arch["sampling_rate"], seconds=20.0).reshape(-1)
    lengths = [12288 - 7, 12288, 5000, 1]
    batch = encoder.staging(len(lengths), 12288)
    for i, n in enumerate(lengths):
        batch[i, :n] = speech[20000 * i : 20000 * i + n]
    codes = encoder.encode(batch)
    for i, n in enumerate(lengths):
        with torch.inference_mode():
            clip = speech[20000 * i : 20000 * i + n].to(device).view(1, 1, -1)
            expected = torch.cat(reference.encode(clip), dim=1)[0].cpu().numpy()
        np.testing.assert_array_equal(codes[i], expected)
