"""Case studies: ``CASES.get(name)``. Importing this package registers the built-in ones."""

from byzmtl.tasks import digits, har, neural, target_localization
from byzmtl.tasks.base import CASES, CaseDefaults, CaseStudy, Settings

__all__ = [
    "CASES",
    "CaseDefaults",
    "CaseStudy",
    "Settings",
    "digits",
    "har",
    "neural",
    "target_localization",
]
