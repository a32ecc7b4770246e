"""byzmtl: Byzantine-resilient decentralised multi-task learning."""

from byzmtl.config import ConfigError, RunConfig
from byzmtl.experiment import Result, prepare, run
from byzmtl.version import __version__

__all__ = ["ConfigError", "Result", "RunConfig", "__version__", "prepare", "run"]
