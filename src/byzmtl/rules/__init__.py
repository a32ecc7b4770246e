"""Rules that turn received messages into new models: ``RULES.create(name, params)``.

Add a rule by subclassing :class:`~byzmtl.rules.base.WeightRule` (or ``Rule``) as a dataclass and
decorating it with ``@RULES.register("my-rule")``; see the README.
"""

from byzmtl.names import NO_COOPERATION
from byzmtl.rules import (
    baselines,
    clipping,
    coordinatewise,
    geometric_median,
    hardened,
    krum,
    loss,
    two_stage,
)
from byzmtl.rules.base import (
    RULES,
    Combination,
    Neighbourhoods,
    Rule,
    RuleAssumptionError,
    RuleInputs,
    RuleState,
    WeightRule,
)

__all__ = [
    "NO_COOPERATION",
    "RULES",
    "Combination",
    "Neighbourhoods",
    "Rule",
    "RuleAssumptionError",
    "RuleInputs",
    "RuleState",
    "WeightRule",
    "baselines",
    "clipping",
    "coordinatewise",
    "geometric_median",
    "hardened",
    "krum",
    "loss",
    "two_stage",
]
