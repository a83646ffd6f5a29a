"""Tracking: metrics.jsonl always, a real offline W&B run read back with wandb's own CLI, the mode
chosen from the config or the API key, and a W&B that cannot start never stopping the encoding."""

from __future__ import annotations

import pytest
from helpers import compose_cfg

from snactok.monitor.tracking import scrub, wandb_mode


def test_the_mode_follows_the_config_then_the_environment_then_the_api_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) == "disabled"
    assert wandb_mode("offline") == "offline"


def test_credential_like_keys_never_reach_the_wandb_config():
    conf = {"wandb": {"api_key": "k", "project": "p"}, "save": {"hf_token": "t"}, "x": [{"secret": 1}]}
    assert scrub(conf) == {"wandb": {"project": "p"}, "save": {}, "x": [{}]}


def test_publishing_without_a_hub_token_fails_before_encoding(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from snactok.engine.run import run
    from snactok.errors import ConfigError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    cfg = compose_cfg(["runtime=debug", "codec.weights=random", "save.hub_repo=me/demo-snac"])
    with pytest.raises(
        ConfigError, match=r"save.hub_repo='me/demo-snac' needs a Hub token: set HF_TOKEN"
    ):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
