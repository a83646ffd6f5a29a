"""The two errors a run ends with: every stage raises these, so they belong to none of them."""


class ConfigError(ValueError):
    """A config value that cannot work; raised before any process starts."""


class PipelineError(RuntimeError):
    """A child process failed, or output could not be written; the run can be resumed."""
