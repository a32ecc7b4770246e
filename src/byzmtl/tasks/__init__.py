"""Case studies: ``CASES.get(name)``. Importing this package registers the built-in ones."""

from byzmtl.tasks import digits, har, neural, target_localization
from byzmtl.tasks.base import CASES, CaseDefaults, CaseError, CaseStudy, PlannedSize, Settings

__all__ = [
    "CASES",
    "CaseDefaults",
    "CaseError",
    "CaseStudy",
    "PlannedSize",
    "Settings",
    "digits",
    "har",
    "neural",
    "target_localization",
]
