"""snactok: audio datasets in, SNAC codec token shards out.

`snactok.encode([...overrides])` runs encode.py's job from Python (snactok.api); the package's
stages are config/ -> inputs/ -> codec/ -> engine/ -> output/ -> monitor/, with tools/ for
finished runs (docs/architecture.md).
"""

from snactok.api import Result, encode
from snactok.config.schema import register_configs
from snactok.errors import ConfigError, PipelineError

__all__ = ["ConfigError", "PipelineError", "Result", "encode", "register_configs"]
