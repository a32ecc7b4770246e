"""The ``deterministic`` run setting (:mod:`byzmtl.determinism`): the same bits as a default run
on the CPU, torch's deterministic algorithms switched on for the run only, and on CUDA (where
present) repeats that agree bit for bit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import byzmtl
from byzmtl.determinism import CUBLAS_WORKSPACE, DETERMINISTIC_WORKSPACES


def target_localization(**settings: Any) -> dict[str, Any]:
    task = {"agents": 30, "iterations": 40}
    return {"case": "target-localization", "attackers": 5, "task": task, **settings}


def har(data_dir: Path, **settings: Any) -> dict[str, Any]:
    task = {"data_dir": str(data_dir), "epochs": 1, "agents": 6}
    return {"case": "har", "attackers": 1, "task": task, **settings}


def flags() -> tuple[bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )


def assert_same_bits(a: byzmtl.Result, b: byzmtl.Result) -> None:
    assert torch.equal(a.state.models, b.state.models)
    pd.testing.assert_frame_equal(a.metrics, b.metrics, check_exact=True)
    assert a.diagnostics is not None and b.diagnostics is not None
    pd.testing.assert_frame_equal(a.diagnostics, b.diagnostics, check_exact=True)


@pytest.mark.parametrize("case", ["target-localization", "har"])
def test_a_deterministic_run_has_the_bits_of_a_default_run_and_the_flag_for_its_duration(
    case: str, har_sample: Path
) -> None:
    def config(**settings: Any) -> dict[str, Any]:
        if case == "har":
            return har(har_sample, **settings)
        return target_localization(**settings)

    seen: list[tuple[bool, bool]] = []
    default = byzmtl.run(config(), on_round=lambda state, output: seen.append(flags()))
    assert set(seen) == {(False, False)}
    seen.clear()
    chosen = byzmtl.run(
        config(deterministic=True), on_round=lambda state, output: seen.append(flags())
    )
    assert set(seen) == {(True, False)}  # every round under torch's deterministic algorithms
    assert flags() == (False, False)  # and only the run
    assert chosen.config.deterministic and "deterministic = true" in chosen.config.to_toml()
    assert_same_bits(default, chosen)


def test_the_flag_torch_had_before_the_run_is_restored_after_it() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        byzmtl.run(target_localization(deterministic=True))
        assert flags() == (True, True)
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_run_that_fails_restores_the_flag_too() -> None:
    def fail(state: object, output: object) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        byzmtl.run(target_localization(deterministic=True), on_round=fail)
    assert flags() == (False, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deterministic_repeats_on_cuda_agree_bit_for_bit(har_sample: Path) -> None:
    for config in (target_localization, lambda **s: har(har_sample, **s)):
        first = byzmtl.run(config(device="cuda", deterministic=True))
        assert_same_bits(first, byzmtl.run(config(device="cuda", deterministic=True)))
    assert os.environ[CUBLAS_WORKSPACE] in DETERMINISTIC_WORKSPACES
