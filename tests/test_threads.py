"""The default thread policy (byzmtl.threads): --threads and OMP_NUM_THREADS win; one thread
below SMALL_PROBLEM; one per idle core above."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from byzmtl import threads
from byzmtl.experiment import prepare
from byzmtl.threads import SMALL_PROBLEM, chosen_threads, default_threads, idle_cores


def test_small_problems_take_one_thread_whatever_the_cores() -> None:
    assert default_threads(SMALL_PROBLEM - 1, cores=64, load=0.0) == 1
    assert default_threads(200, cores=2, load=0.0) == 1  # the paper's 100 agents x 2


def test_large_problems_take_the_idle_cores() -> None:
    assert default_threads(SMALL_PROBLEM, cores=2, load=0.0) == 2
    assert default_threads(10**7, cores=8, load=3.2) == 6  # 8 - 3 busy + this process's own
    assert default_threads(10**7, cores=2, load=5.0) == 1  # never fewer than one
    assert default_threads(10**7, cores=4, load=float("nan")) == 1  # unknown load: busy


@given(st.integers(1, 256), st.floats(0, 1000))
def test_idle_cores_lie_between_one_and_the_cores(cores: int, load: float) -> None:
    assert 1 <= idle_cores(cores, load) <= cores


def test_the_flag_and_the_environment_win() -> None:
    assert chosen_threads(3, 200, environ={}) == 3
    assert chosen_threads(3, 10**9, environ={"OMP_NUM_THREADS": "1"}) == 3
    assert chosen_threads(None, 10**9, environ={"OMP_NUM_THREADS": "1"}) is None
    assert chosen_threads(None, 200, environ={"OMP_NUM_THREADS": "4"}) is None
    assert chosen_threads(None, 200, environ={}) == 1
    assert chosen_threads(None, 10**9, environ={"OMP_NUM_THREADS": " "}, cores=2, load=0) == 2
    with pytest.raises(ValueError, match="threads"):
        chosen_threads(0, 200, environ={})


def test_problem_size_is_agents_times_parameters(har_sample) -> None:
    paper = prepare({"case": "target-localization", "task": {"iterations": 5}})
    assert threads.problem_size(paper.simulation) == 100 * 2
    har = prepare({"case": "har", "task": {"data_dir": str(har_sample), "epochs": 1}})
    assert threads.problem_size(har.simulation) == 30 * (561 * 6 + 6)


def test_apply_sets_torch_threads(monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert threads.apply(None, 200) == 1 == torch.get_num_threads()
        assert threads.apply(2, 200) == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
