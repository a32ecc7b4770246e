"""Byzantine attacks: ``ATTACKS.create(name, params)``.

Add an attack by subclassing :class:`~byzmtl.attacks.base.Attack` as a dataclass (with a
``trains: bool = True`` field) and decorating it with ``@ATTACKS.register("my-attack")``.
"""

from byzmtl.attacks import adaptive, collusion, corrupted, paper, poisoning
from byzmtl.attacks.base import ATTACKS, Attack, AttackAssumptionError, AttackInputs

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackAssumptionError",
    "AttackInputs",
    "adaptive",
    "collusion",
    "corrupted",
    "paper",
    "poisoning",
]
