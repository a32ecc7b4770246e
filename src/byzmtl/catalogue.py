"""What ``byzmtl list`` shows: every registered case study, rule and attack with its parameters
and defaults, stored in ``catalogue.json`` so that listing them needs neither torch nor the
plug-ins' modules.

- :func:`stored` reads ``catalogue.json`` (standard library only);
- :func:`live` builds the same from the registries (importing every built-in plug-in, and any
  plug-in already imported, e.g. with ``--plugin``);
- ``python -m byzmtl.catalogue`` rewrites ``catalogue.json`` from :func:`live`.

``tests/test_catalogue.py`` checks that the stored catalogue equals the live one, so it cannot
go stale. Values are as JSON holds them (tuples become lists; other non-JSON values, their
``str``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STORED = Path(__file__).with_name("catalogue.json")
REGENERATE = "python -m byzmtl.catalogue"


def live() -> dict[str, Any]:
    """The catalogue of the registries as they are now."""
    from byzmtl.attacks import ATTACKS
    from byzmtl.rules import RULES
    from byzmtl.tasks import CASES

    cases = {}
    for name in CASES.names():
        case = CASES.get(name)
        cases[name] = {
            "description": case.description,
            "settings": {
                key: field.default for key, field in case.settings_model.model_fields.items()
            },
            "defaults": {
                "attack": case.defaults.attack,
                "nu": case.defaults.nu,
                "r0": case.defaults.r0,
            },
        }
    info = {
        "cases": cases,
        "rules": {name: RULES.parameters(name) for name in RULES.names()},
        "attacks": {name: ATTACKS.parameters(name) for name in ATTACKS.names()},
    }
    return json.loads(json.dumps(info, default=str))


def stored() -> dict[str, Any]:
    """The catalogue written by :func:`write` (the built-in plug-ins only)."""
    return json.loads(STORED.read_text())


def write(path: Path = STORED) -> None:
    """Write the live catalogue to ``path`` (default: the package's ``catalogue.json``)."""
    path.write_text(json.dumps(live(), indent=2) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {STORED}")
