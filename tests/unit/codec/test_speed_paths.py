"""The code the speed work added, checked for tokens and accounting, never for time.

Exact compiled layers against eager bits, the start-up check and its fall back, compile falling
back to eager, out-of-memory halving and the cache of random weights. Speed is `make bench`'s job.
"""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import torch
from helpers import compose_cfg
from snac.layers import Snake1d
from torch import nn

from snactok.codec.compiled import make_exact_for_compile, remember_isa_probes
from snactok.codec.encoder import BatchEncoder, Reference, probe_clips, self_check
from snactok.codec.weights import Weights, arch_dict, calibration_audio, load_model, random_weights_dir
from snactok.engine.device import DeviceLoop, DevicePlan, startup_check
from snactok.engine.messages import Batch, Reject, Warn
from snactok.engine.reader import Clip
from snactok.engine.state import Budget, Tally


def _arch(codec="snac_24khz"):
    return arch_dict(compose_cfg([f"codec={codec}"]).codec.arch)


def test_compiled_snake_gives_eager_bits():
    """Inductor's own sin differs from eager's in the last bit; the rewritten layers must not."""
    torch.manual_seed(0)
    block = nn.Sequential(
        Snake1d(32), nn.Conv1d(32, 32, 7, padding=9, dilation=3, groups=32), Snake1d(32)
    )
    with torch.no_grad():
        for m in block:
            if isinstance(m, Snake1d):
                m.alpha.uniform_(0.5, 3.0)
    x = 3 * torch.randn(1, 32, 5000)
    with torch.inference_mode():
        expected = block(x)
        assert make_exact_for_compile(block) == 2
        got = torch.compile(block, dynamic=True)(x)
        plain = torch.compile(lambda v: torch.sin(v), dynamic=True)(x)
    assert torch.equal(got, expected)
    assert not torch.equal(plain, torch.sin(x))  # the reason for the rewrite, still true here


def test_compile_failure_falls_back_to_eager_with_the_same_tokens(weights_dir, tmp_path, monkeypatch):
    """A machine whose C++ compiler is unusable: the encoder says why and encodes eagerly."""
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # nothing cached
    torch._dynamo.reset()
    arch = _arch()
    path = str(weights_dir("snac_24khz"))
    eager = BatchEncoder(load_model(Weights("local", path, path), arch), torch.device("cpu"), arch)
    # inductor's own patch, undone on exit (monkeypatch left the option hidden for later tests)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}):
        broken = BatchEncoder(
            load_model(Weights("local", path, path), arch), torch.device("cpu"), arch, compile=True
        )
        broken.warm_up()
    assert broken.compiled is False and broken.fallback
    batch = eager.staging(1, 4 * 2048)
    batch[0] = calibration_audio(24000, seconds=2.0).reshape(-1)[: 4 * 2048]
    np.testing.assert_array_equal(broken.encode(batch.clone()), eager.encode(batch))
    torch._dynamo.reset()


class _SmallDevice(BatchEncoder):
    """A device that runs out of memory above `fits` clips per batch.

    A stand-in at a boundary this machine cannot reach (GPU memory); the batching and retry code
    around it is the real one."""

    fits = 2

    def latents(self, batch):
        if len(batch) > self.fits:
            raise torch.OutOfMemoryError(f"CUDA out of memory: {len(batch)} clips")
        return super().latents(batch)


class _Sink(list):
    """A stand-in for the worker's Outbox: the messages it would send, in order."""

    def send(self, item):
        self.append(item)


def test_out_of_memory_halves_the_batch_and_loses_no_clip(weights_dir):
    arch = _arch()
    path = str(weights_dir("snac_24khz"))
    weights = Weights("local", path, path)
    encoder = _SmallDevice(load_model(weights, arch), torch.device("cpu"), arch)
    speech = calibration_audio(24000, seconds=8.0).reshape(-1)
    clips = [
        Clip(0, i, {"id": i, "duration": 0.1}, speech[3000 * i : 3000 * i + 2000]) for i in range(7)
    ]
    ctx = mp.get_context("spawn")
    budget = Budget(ctx, 10**9, readers=1, devices=1)
    budget.take(0, sum(c.samples for c in clips))
    plan = DevicePlan(0, "cpu", weights, arch, 0, 8 * 2048, 10**9)
    results = _Sink()
    loop = DeviceLoop(plan, encoder, results, budget, Tally(mp.get_context("spawn"), 1))
    loop.buckets[2048] = list(clips)
    loop.flush(2048)
    loop.drain()
    batches = [m for m in results if isinstance(m, Batch)]
    assert [len(m.keys) for m in batches] == [2, 2, 2, 1]  # 7 clips: OOM at 7, then at 4, 2 fit
    assert sorted(k[1] for m in batches for k in m.keys) == list(range(7))
    assert loop.batch_samples == 2 * 2048 and budget.held == 0
    warnings = [m.text for m in results if isinstance(m, Warn)]
    assert len(warnings) == 2 and "out of memory at 7 clips" in warnings[0]
    reference = BatchEncoder(load_model(weights, arch), torch.device("cpu"), arch)
    for m in batches:
        for (_, row, _), codes in zip(m.keys, m.codes, strict=True):
            one = reference.staging(1, 2048)
            one[0, :2000] = clips[row].wave
            np.testing.assert_array_equal(codes, reference.encode(one)[0])


def test_a_clip_too_big_for_the_device_alone_is_rejected_not_lost(weights_dir):
    arch = _arch()
    path = str(weights_dir("snac_24khz"))
    weights = Weights("local", path, path)
    encoder = _SmallDevice(load_model(weights, arch), torch.device("cpu"), arch)
    encoder.fits = 0
    clip = Clip(3, 17, {"id": "long.wav", "duration": 0.1}, torch.zeros(2000))
    ctx = mp.get_context("spawn")
    budget = Budget(ctx, 10**9, readers=1, devices=1)
    budget.take(0, clip.samples)
    results = _Sink()
    loop = DeviceLoop(
        DevicePlan(0, "cpu", weights, arch, 0, 2048, 10**9),
        encoder,
        results,
        budget,
        Tally(mp.get_context("spawn"), 1),
    )
    loop.buckets[2048] = [clip]
    loop.flush(2048)
    (reject,) = results
    assert (reject.unit, reject.row, reject.id, reject.reason) == (3, 17, "long.wav", "out_of_memory")
    assert budget.held == 0


def test_random_weights_are_built_once_and_reused(tmp_path):
    arch = _arch()
    first = random_weights_dir(arch, 0, tmp_path)
    stamp = (first / "pytorch_model.bin").stat().st_mtime_ns
    assert random_weights_dir(arch, 0, tmp_path) == first
    assert (first / "pytorch_model.bin").stat().st_mtime_ns == stamp  # not rebuilt
    other = random_weights_dir(arch, 1, tmp_path)
    assert other != first and (other / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging dirs left


def test_isa_probe_verdicts_are_kept_on_disk(tmp_path, monkeypatch):
    """Each verdict is probed once per machine, then read back by later processes.

    The probe itself is a stand-in (the real one starts `python -c "import torch"`); the caching
    layer around it is the real one."""
    from torch._inductor.cpu_vec_isa import VecAVX2, VecISA

    probed = []

    def probe(self, code):
        probed.append(code)
        return True

    monkeypatch.setattr(VecISA, "check_build", probe)
    assert remember_isa_probes(tmp_path)
    isa = VecAVX2()
    assert isa.check_build("int main() {}") is True
    assert isa.check_build("int main() {}") is True
    assert len(probed) == 1
    (store,) = tmp_path.glob("isa_probes-*.json")
    monkeypatch.setattr(VecISA, "check_build", probe)  # as a new process starts: unwrapped
    assert remember_isa_probes(tmp_path)
    assert isa.check_build("int main() {}") is True and len(probed) == 1  # read from disk
    assert isa.check_build("int other() {}") is True and len(probed) == 2
    assert len(json.loads(store.read_text())) == 2


def test_bf16_autocast_changes_some_tokens_but_keeps_the_shape(weights_dir):
    """`runtime.autocast=bf16` is documented as changing tokens: the quantizer still gets float32
    and the codes keep their layout. With these random weights only ~19% of codes agree (chance is
    1/4096): bf16 is an opt-in for speed, never the default."""
    arch = _arch()
    path = str(weights_dir("snac_24khz"))
    weights = Weights("local", path, path)
    fp32 = BatchEncoder(load_model(weights, arch), torch.device("cpu"), arch)
    bf16 = BatchEncoder(load_model(weights, arch), torch.device("cpu"), arch, autocast="bf16")
    batch = fp32.staging(2, 8 * 2048)
    batch[:] = calibration_audio(24000, seconds=4.0).reshape(2, -1)[:, : 8 * 2048]
    want, got = fp32.encode(batch), bf16.encode(batch.clone())
    assert got.shape == want.shape and got.dtype == want.dtype
    assert 0.05 < (got == want).mean() < 1.0


def test_a_long_clip_out_of_memory_goes_part_by_part_then_is_rejected(weights_dir):
    """Parts batched 3 at a time do not fit; one at a time they do, with the tokens the same parts
    get on a device with room. With no room at all the clip is rejected and its budget released."""
    from snactok.codec.long_clips import encode_in_parts, plan_parts

    arch = _arch()
    path = str(weights_dir("snac_24khz"))
    weights = Weights("local", path, path)
    speech = calibration_audio(24000, seconds=8.0).reshape(-1)[:60000]
    roomy = BatchEncoder(load_model(weights, arch), torch.device("cpu"), arch)
    expected = encode_in_parts(roomy, speech, plan_parts(60000, 2048, 22528, 6144), max_batch=3)
    for fits, outcome in ((1, Batch), (0, Reject)):
        encoder = _SmallDevice(load_model(weights, arch), torch.device("cpu"), arch)
        encoder.fits = fits
        clip = Clip(1, 5, {"id": "long.wav", "duration": 2.5}, speech)
        ctx = mp.get_context("spawn")
        budget = Budget(ctx, 10**9, readers=1, devices=1)
        budget.take(0, clip.samples)
        plan = DevicePlan(
            0, "cpu", weights, arch, 0, 3 * 22528, 10**9, chunk_samples=22528, overlap_samples=6144
        )
        results = _Sink()
        loop = DeviceLoop(plan, encoder, results, budget, Tally(mp.get_context("spawn"), 1))
        loop.encode_long(clip)
        (message,) = results
        assert isinstance(message, outcome) and budget.held == 0
        if outcome is Batch:
            assert message.keys[0][:2] == (1, 5) and message.length == 61440
            np.testing.assert_array_equal(message.codes[0], expected)
        else:
            assert (message.unit, message.row, message.id, message.reason) == (
                1,
                5,
                "long.wav",
                "out_of_memory",
            )


class _OffByOneUlp(BatchEncoder):
    """A fast path that rounds differently from the reference: its frames are nudged by one ulp.

    A stand-in for a kernel that rounds its own way (another cuDNN algorithm, a fused op); the
    check and the step down to the exact path around it are the real ones."""

    def latents(self, batch):
        z = super().latents(batch)
        return z if self.exact else torch.nextafter(z, torch.full_like(z, float("inf")))


def _reference(weights, arch):
    return Reference(load_model(weights, arch, fold=False), torch.device("cpu"))


def test_startup_check_passes_the_real_fast_path(weights_dir):
    arch = _arch()
    path = str(weights_dir("snac_24khz"))
    weights = Weights("local", path, path)
    encoder = BatchEncoder(load_model(weights, arch), torch.device("cpu"), arch)
    assert self_check(encoder, _reference(weights, arch), probe_clips(arch)) is None
    assert startup_check(encoder, _reference(weights, arch)) == {
        "passed": True,
        "path": "eager",
        "failed": [],
    }


def test_a_fast_path_that_rounds_differently_falls_back_to_the_exact_path(weights_dir):
    """The probe compares frames bit for bit, so a 1-ulp difference is caught even where no token
    flips; the worker then encodes with the reference model, whose tokens are the reference's."""
    arch = _arch()
    path = str(weights_dir("snac_24khz"))
    weights = Weights("local", path, path)
    reference = _reference(weights, arch)
    encoder = _OffByOneUlp(load_model(weights, arch), torch.device("cpu"), arch)
    check = startup_check(encoder, reference)
    assert check["passed"] is False and check["path"] == "exact" == encoder.path
    assert len(check["failed"]) == 1 and "encoder frames of a" in check["failed"][0]
    wave = calibration_audio(24000, seconds=12.0).reshape(-1)[-30000:]
    batch = encoder.staging(1, 30720)
    batch[0, :30000] = wave
    np.testing.assert_array_equal(encoder.encode(batch)[0], reference.tokens(wave))


def test_verify_sample_is_about_the_fraction_and_depends_only_on_the_row():
    from snactok.engine.reader import chosen_for_verify

    picks = [r for r in range(100_000) if chosen_for_verify(0, r, 0.01)]
    assert 800 < len(picks) < 1200
    assert picks == [r for r in range(100_000) if chosen_for_verify(0, r, 0.01)]  # no state
    assert not any(chosen_for_verify(0, r, 0.0) for r in range(1000))
    assert all(chosen_for_verify(3, r, 1.0) for r in range(1000))
    other = {r for r in range(100_000) if chosen_for_verify(1, r, 0.01)}
    assert len(other & set(picks)) < 100  # another source, another sample
    assert max(b - a for a, b in zip(picks, picks[1:], strict=False)) < 2000  # spread, not bunched


def test_verify_reports_what_differs_and_the_last_log_line_names_the_rows(weights_dir, caplog):
    """The worker's check against a reference of other weights (a stand-in for a device that
    rounds its own way) counts the differing tokens; the run's last word is then a warning."""
    from snactok.engine.summary import log_verification

    arch = _arch()
    path = str(weights_dir("snac_24khz"))
    weights = Weights("local", path, path)
    encoder = BatchEncoder(load_model(weights, arch), torch.device("cpu"), arch)
    other = Reference(
        load_model(Weights("random", "random", None), arch, seed=5, fold=False), torch.device("cpu")
    )
    wave = calibration_audio(24000, seconds=12.0).reshape(-1)[-20000:]
    clips = [Clip(0, 7, {"id": "a.wav", "duration": 0.8}, wave, verify=True)]
    batch = encoder.staging(1, 20480)
    batch[0, :20000] = wave
    codes = encoder.encode(batch)
    plan = DevicePlan(0, "cpu", weights, arch, 0, 2048, 10**9)
    loop = DeviceLoop(
        plan, encoder, _Sink(), None, Tally(mp.get_context("spawn"), 1), _reference(weights, arch)
    )
    assert loop.verify(clips, codes) == [(0, codes[0].size, codes[0].size)]
    loop.reference = other
    ((pos, tokens, equal),) = loop.verify(clips, codes)
    assert pos == 0 and tokens == codes[0].size and equal < tokens
    mismatch = {"unit": 0, "row": 7, "id": "a.wav", "tokens": tokens, "differ": tokens - equal}
    report = {"clips": 1, "tokens": tokens, "tokens_equal": equal, "mismatched_rows": [mismatch]}
    with caplog.at_level("INFO", logger="snactok.engine.run"):
        log_verification(report)
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert f"verified 1 clips: {100 * equal / tokens:.3f}% of tokens equal" in record.message
    assert "unit 0 row 7 (id 'a.wav')" in record.message
