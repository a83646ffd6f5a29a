"""snactok: audio datasets in, SNAC codec token shards out."""

from snactok.config import ConfigError, register_configs

__all__ = ["ConfigError", "register_configs"]
