"""Every Python block of README.md runs, so that the documented API cannot drift from the code.

Each ```python block runs in a fresh interpreter in a temporary folder. A block that registers
rules or attacks (a definition, not a run) is then used: every rule it adds runs the paper's
network with the attacks it adds (or the case study's default) for a few rounds, and its models
must stay finite.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)

EXERCISE = textwrap.dedent(
    """
    import math
    import byzmtl
    from byzmtl.attacks import ATTACKS
    from byzmtl.rules import RULES
    new_rules = sorted(set(RULES.names()) - BUILTIN_RULES)
    new_attacks = sorted(set(ATTACKS.names()) - BUILTIN_ATTACKS)
    for attack in new_attacks or [None]:
        for rule in new_rules:
            config = {"case": "target-localization", "rules": [rule, "loss"],
                      "attackers": 20, "task": {"iterations": 30}}
            if attack is not None:
                config["attack"] = attack
            result = byzmtl.run(config)
            value = result.final(rule, "loss")
            assert math.isfinite(value), (rule, attack, value)
            print("exercised", rule, attack, value)
    """
)


def blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_has_python_blocks() -> None:
    assert len(blocks()) >= 3


@pytest.mark.parametrize("index", range(len(blocks())))
def test_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    code = blocks()[index]
    prologue = (
        "from byzmtl.attacks import ATTACKS as _A\nfrom byzmtl.rules import RULES as _R\n"
        "BUILTIN_RULES, BUILTIN_ATTACKS = set(_R.names()), set(_A.names())\n"
    )
    registers = "RULES.register" in code or "ATTACKS.register" in code
    future = [line for line in code.splitlines(True) if line.startswith("from __future__")]
    body = [line for line in code.splitlines(True) if not line.startswith("from __future__")]
    script = "".join(future) + prologue + "".join(body) + (EXERCISE if registers else "")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"README python block {index}:\n{code}\n{done.stderr[-3000:]}"
    if registers:
        assert "exercised" in done.stdout
