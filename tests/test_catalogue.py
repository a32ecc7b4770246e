"""``byzmtl list`` reads a stored catalogue (no torch): it must equal the live registries."""

from __future__ import annotations

import json
from pathlib import Path

from byzmtl import catalogue
from byzmtl.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_stored_catalogue_is_the_live_one() -> None:
    assert catalogue.stored() == catalogue.live(), (
        f"src/byzmtl/catalogue.json is stale: regenerate it with `{catalogue.REGENERATE}`"
    )


def test_list_shows_the_stored_catalogue(capsys) -> None:
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == catalogue.stored()
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "  loss                   nu=0.1, r0=10.0" in text
    assert text.startswith("case studies:\n  digits")


def test_list_with_a_plugin_shows_what_it_registers(capsys, monkeypatch) -> None:
    from byzmtl.attacks import ATTACKS
    from byzmtl.rules import RULES
    from byzmtl.tasks import CASES

    for registry in (RULES, ATTACKS, CASES):  # restored after the test
        monkeypatch.setattr(registry, "_classes", dict(registry._classes))
    plugin = ROOT / "examples" / "custom_rule.py"
    assert main(["list", "--json", "--plugin", str(plugin)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rules"]["softmin"] == {"nu": 0.1, "r0": 10.0, "temperature": 0.05}
    assert set(info["rules"]) - {"softmin"} == set(catalogue.stored()["rules"])
    assert "shifted" in info["attacks"]
