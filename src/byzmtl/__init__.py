"""byzmtl: Byzantine-resilient decentralised multi-task learning."""

__version__ = "0.1.0"

from byzmtl.config import ConfigError, RunConfig
from byzmtl.experiment import Result, prepare, run

__all__ = ["ConfigError", "Result", "RunConfig", "__version__", "prepare", "run"]
