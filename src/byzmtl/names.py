"""Names with a meaning of their own in every table and figure (no dependencies, so that any
layer can use them).

- ``NO_COOPERATION``: the rule of learning alone, the reference that regret and the matrix's
  ratios are measured against;
- ``NO_ATTACK``: in ``byzmtl matrix``, the cells without Byzantine agents;
- :func:`run_title`: the title of a run's figures, from its summary.
"""

from collections.abc import Mapping
from typing import Any

NO_COOPERATION = "none"
NO_ATTACK = "none"


def run_title(summary: Mapping[str, Any]) -> str:
    """'case: k Byzantine (attack), seed s', or 'case: no attack, seed s' ('' for no summary)."""
    if not summary:
        return ""
    byzantine = len(summary.get("byzantine") or [])
    attack = f"{byzantine} Byzantine ({summary.get('attack')})" if byzantine else "no attack"
    return f"{summary.get('case', '?')}: {attack}, seed {summary.get('seed', '?')}"
