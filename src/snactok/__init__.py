"""snactok: audio datasets in, SNAC codec token shards out."""

from snactok.config.schema import register_configs
from snactok.errors import ConfigError

__all__ = ["ConfigError", "register_configs"]
