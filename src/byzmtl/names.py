"""Names with a meaning of their own in every table and figure (no dependencies, so that any
layer can use them).

- ``NO_COOPERATION``: the rule of learning alone, the reference that regret and the matrix's
  ratios are measured against;
- ``NO_ATTACK``: in ``byzmtl matrix``, the cells without Byzantine agents.
"""

NO_COOPERATION = "none"
NO_ATTACK = "none"
