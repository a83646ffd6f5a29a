"""Composition of every codec x dataset pair, and the config errors raised before any process starts."""

from __future__ import annotations

import json
import pickle

import pytest
from helpers import CODECS, ROOT, compose_cfg
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from snactok.config.checks import check_config, refuse_secret_overrides
from snactok.config.schema import Config, OutputFormat, RuntimeConfig, SourceConfig, plain, typed
from snactok.engine.devices import default_readers, resolve_devices
from snactok.engine.run import run
from snactok.errors import ConfigError

DATASETS = sorted(p.stem for p in (ROOT / "conf" / "dataset").glob("*.yaml"))


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_dataset_pair_composes(codec, dataset):
    overrides = [f"codec={codec}", f"dataset={dataset}"]
    if dataset in ("local_folder", "common_voice"):  # a local folder or release: path is ???
        overrides.append("dataset.path=/data/wavs")
    cfg = compose_cfg(overrides)
    check_config(cfg)
    assert cfg.codec.name == codec
    assert cfg.codec.weights == f"hubertsiuzdak/{codec}"
    assert cfg.dataset.name == dataset
    assert cfg.dataset.sources and all(s.hub or s.path for s in cfg.dataset.sources)


def test_sample_rates_come_from_the_model():
    rates = {c: compose_cfg([f"codec={c}"]).codec.arch.sampling_rate for c in CODECS}
    assert rates == {"snac_24khz": 24000, "snac_32khz": 32000, "snac_44khz": 44100}


def test_defaults_are_demo_24khz_auto():
    cfg = compose_cfg()
    assert (cfg.codec.name, cfg.dataset.name, list(cfg.runtime.devices)) == (
        "snac_24khz",
        "demo",
        ["auto"],
    )


def test_local_folder_path_is_interpolated_into_its_source():
    cfg = compose_cfg(["dataset=local_folder", "dataset.path=/data/wavs"])
    assert cfg.dataset.sources[0].path == "/data/wavs"


def test_common_voice_reads_a_downloaded_release():
    """The Hub's common_voice repos are empty since late 2025: the source is a local release."""
    cfg = compose_cfg(["dataset=common_voice", "dataset.path=/data/cv/en"]).dataset
    src = cfg.sources[0]
    assert (src.hub, src.path, src.id_column) == (None, "/data/cv/en", "path")
    assert (src.text_column, src.speaker_column) == ("sentence", "client_id")
    assert list(cfg.languages) == [] and dict(src.add_constant) == {"locale": "{lang}"}


def test_any_key_can_be_overridden():
    cfg = compose_cfg(["runtime.num_readers=7", "output.lines_per_file=10", "codec.weights=random"])
    assert (cfg.runtime.num_readers, cfg.output.lines_per_file, cfg.codec.weights) == (7, 10, "random")


@pytest.mark.parametrize(
    "override, error",
    [
        ("runtime.num_readrs=2", ConfigKeyError),  # unknown key
        ("runtime.num_readers=two", ValidationError),  # wrong type
        ("output.gzip_level=[1]", ValidationError),
        ("codec=snac_48khz", ConfigCompositionException),  # unknown group option
    ],
)
def test_unknown_key_or_wrong_type_fails_at_composition(override, error):
    with pytest.raises((error, ConfigCompositionException)) as info:
        compose_cfg([override])
    assert override.split("=")[0].split(".")[-1] in str(info.value) or "snac_48khz" in str(info.value)


def test_missing_required_value_fails_before_any_process(tmp_path):
    cfg = compose_cfg(["dataset=local_folder"])
    with pytest.raises(ConfigError, match=r"dataset\.path"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written, nothing started


@pytest.mark.parametrize(
    ("override", "choices"),
    [
        ("output.format=csv", "[jsonl, parquet, both]"),
        ("output.flatten=snac", "[orpheus]"),
        ("runtime.autocast=fp16", "[bf16]"),
        ("wandb.mode=on", "[online, offline, disabled]"),
    ],
)
def test_a_choice_outside_its_enum_fails_at_composition_naming_key_value_and_choices(override, choices):
    key, value = override.split("=")
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg([override])
    message = str(info.value.__cause__)
    assert f"full_key: {key}" in message and f"'{value}'" in message and choices in message, message


def test_choices_stay_plain_strings_in_the_resolved_config():
    """The manifest, the fingerprint and W&B get the strings the YAML and command line hold."""
    cfg = compose_cfg(["output.format=both", "output.flatten=orpheus", "runtime.autocast=bf16"])
    conf = plain(typed(cfg))
    values = (conf["output"]["format"], conf["output"]["flatten"], conf["runtime"]["autocast"])
    assert values == ("both", "orpheus", "bf16")
    assert all(type(v) is str for v in values)
    assert "format: both" in OmegaConf.to_yaml(cfg)  # what Hydra saves in .hydra/config.yaml


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["dataset=common_voice", "dataset.path=/data/cv", "dataset.languages=[en,de]"],
        ["dataset=librispeech", "codec=snac_44khz", "runtime=cpu", "output.format=parquet"],
        ["codec.weights=random", "dataset.streaming=true", "dataset.sources.0.keep_columns=[a]"],
    ],
    ids=["defaults", "common_voice", "hub_44khz", "streaming"],
)
def test_the_run_reads_typed_dataclasses_that_pickle_and_flatten_to_the_resolved_dict(overrides):
    """What the run reads (`typed`) is the schema's dataclasses, interpolations resolved; it
    survives pickling (spawned children get it so); `plain` of it is exactly the resolved dict
    that manifests and fingerprints were made of before, so runs still resume."""
    cfg = compose_cfg(overrides)
    conf = typed(cfg)
    assert isinstance(conf, Config) and isinstance(conf.runtime, RuntimeConfig)
    assert all(isinstance(s, SourceConfig) for s in conf.dataset.sources)
    assert isinstance(conf.output.format, OutputFormat) and "${" not in conf.codec.weights
    assert pickle.loads(pickle.dumps(conf)) == conf
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert plain(conf) == resolved
    assert json.dumps(plain(conf)) == json.dumps(resolved)  # the same keys in the same order


def test_bad_values_name_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"runtime\.job_index=3.*0\.\.0"):
        check_config(compose_cfg(["runtime.job_index=3"]))
    with pytest.raises(ConfigError, match=r"runtime\.batch_samples=0.*null or an integer >= 1"):
        check_config(compose_cfg(["runtime.batch_samples=0"]))


def test_default_readers_follow_the_devices_and_the_cores():
    assert default_readers(["cpu"], cores=2) == 1
    assert default_readers(["cpu", "cpu"], cores=2) == 2
    assert default_readers([f"cuda:{i}" for i in range(8)], cores=96) == 32
    assert default_readers([f"cuda:{i}" for i in range(8)], cores=16) == 16
    assert default_readers(["cuda:0"], cores=1) == 1


def test_speed_options_compose_and_pass_the_checks():
    cfg = compose_cfg(["runtime.compile=true", "runtime.autocast=bf16", "runtime.tf32=true"])
    check_config(cfg)
    assert cfg.runtime.batch_samples is None  # by device: one clip on CPU, 2**21 on CUDA


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["runtime.num_jobs=0"], r"runtime.num_jobs=0 is not valid; expected an integer >= 1"),
        (["runtime.num_jobs=4", "runtime.job_index=4"], r"runtime.job_index=4 .* expected 0..3"),
        (["runtime.job_index=-1"], r"runtime.job_index=-1 .* expected 0..0"),
        (["dataset.reshard=true"], r"dataset.reshard=True .* unless dataset.streaming=true"),
    ],
)
def test_job_split_and_streaming_keys_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_cfg(overrides))


def test_sources_must_carry_the_same_constant_keys():
    cfg = compose_cfg(["dataset=demo"])
    cfg.dataset.sources.append(SourceConfig(path="data/demo", add_constant={"lang": "en"}))
    with pytest.raises(ConfigError, match=r"same constant keys"):
        check_config(cfg)


def test_auto_devices_fail_loudly_when_cuda_is_visible_but_unusable():
    with pytest.raises(ConfigError, match=r"visible but CUDA is unusable.*runtime\.devices=\[cpu\]"):
        resolve_devices(["auto"], cuda_ok=False, visible=2)
    assert resolve_devices(["auto"], cuda_ok=False, visible=0) == ["cpu"]


def test_devices_are_checked_against_what_exists():
    assert resolve_devices(["cpu", "cpu"], cuda_ok=False, visible=0) == ["cpu", "cpu"]
    with pytest.raises(ConfigError, match=r"'cuda:1'.*usable devices"):
        resolve_devices(["cuda:1"], cuda_ok=False, visible=0)
    with pytest.raises(ConfigError, match=r"'gpu0'.*valid entries are auto, cpu"):
        resolve_devices(["gpu0"], cuda_ok=False, visible=0)


@pytest.mark.parametrize(
    "key",
    [
        "+hf_token",
        "wandb.api_key",
        "++HF_TOKEN",
        "+my_secret",
        "dataset.mdc_api_key",
        "+apikey",
        "+access_tokens",
    ],
)
def test_token_like_overrides_are_refused_with_the_environment_variable(key, capsys):
    with pytest.raises(SystemExit) as exit_:
        refuse_secret_overrides(["dataset=demo", f"{key}=abc123"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "HF_TOKEN" in err and "WANDB_API_KEY" in err and "MDC_API_KEY" in err
    assert "abc123" not in err


def test_ordinary_overrides_pass_the_secret_check():
    refuse_secret_overrides(["dataset=demo", "runtime.max_rows=3", "-m", "codec=snac_24khz,snac_32khz"])
    refuse_secret_overrides(
        ["template=orpheus", "template.tokenizer=canopylabs/orpheus-3b-0.1-pretrained"]
    )


def test_a_credential_in_a_config_file_is_refused():
    cfg = compose_cfg(["+dataset.sources.0.add_constant.api_key=abc"])
    with pytest.raises(ConfigError, match=r"dataset.sources\[0\].add_constant.api_key.*WANDB_API_KEY"):
        check_config(cfg)


def test_an_unknown_codec_lists_the_choices():
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["codec=snac_48khz"])
    message = str(info.value)
    assert "snac_48khz" in message
    assert all(codec in message for codec in CODECS), message


def test_config_errors_stop_the_run_before_anything_is_written(tmp_path):
    """Each names its key; the run dir is never created, so no process can have started."""
    base = ["runtime=debug", "codec.weights=random"]
    cases = {
        "output.lines_per_file=0": r"output\.lines_per_file=0 is not valid; expected an integer >= 1",
        f"dataset.path={tmp_path / 'nowhere'}": r"dataset source path .*nowhere.* does not exist",
        "runtime.max_chunk_seconds=0.5": r"runtime\.max_chunk_seconds=0\.5 is too short for "
        r"snac_24khz.*>= 0\.6",
        "runtime.verify_fraction=1.5": r"runtime\.verify_fraction=1\.5 is not valid; expected a share "
        r"in 0\.\.1",
    }
    for override, message in cases.items():
        cfg = compose_cfg(
            [*base, "dataset=local_folder", f"dataset.path={ROOT / 'data' / 'demo'}", override]
        )
        with pytest.raises(ConfigError, match=message):
            run(cfg, tmp_path / "run")
        assert not (tmp_path / "run").exists()
