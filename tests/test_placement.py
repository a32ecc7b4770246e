"""Kernels whose bits depend on nothing but their operands' values: not on where they lie in
memory (two processes place the same tensors at different addresses: a long-lived process
serves them from its heap, a fresh one from new pages), nor on the threads or the other rows of
a batch (a shard holds other rows than one process's whole tensor). BLAS
matrix-vector kernels (torch's mv, and a matrix product with one row or column) do not qualify:
measured with torch 2.13.0's MKL on this project's machine, (12, 1000) rows times a vector give
other bits once the rows start off a 64-byte boundary, and a test process once got other bits
than a fresh one from the same bytes at aligned addresses. No run calls one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from byzmtl.attacks import ATTACKS
from byzmtl.experiment import prepare, run
from byzmtl.ops import row_dot, squared_norm
from byzmtl.rules import RULES

SAMPLES = Path(__file__).resolve().parent / "data"


def _placed(tensor: Tensor, offset: int) -> Tensor:
    """A copy of ``tensor`` that starts ``offset`` elements into a fresh buffer."""
    buffer = torch.empty(tensor.numel() + offset, dtype=tensor.dtype)
    return buffer[offset:].view(tensor.shape).copy_(tensor)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 20),
    columns=st.sampled_from([0, 1, 2, 3, 4, 5, 17, 64, 300, 1000, 4099]),
    offset=st.integers(1, 31),
    seed=st.integers(0, 2**31),
)
def test_row_dot_has_the_same_bits_wherever_its_operands_lie(
    rows: int, columns: int, offset: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, columns, generator=generator)
    b = torch.randn(rows, columns, generator=generator)
    reference = row_dot(a, b)
    assert torch.equal(row_dot(_placed(a, offset), b), reference)
    assert torch.equal(row_dot(a, _placed(b, offset)), reference)
    assert torch.equal(squared_norm(_placed(a, offset)), squared_norm(a))
    exact = (a.double() * b.double()).sum(-1)
    scale = (a.double() * b.double()).abs().sum(-1)
    assert bool(((reference.double() - exact).abs() <= 1e-6 * scale + 1e-30).all())


@settings(max_examples=40, deadline=None)
@given(
    columns=st.sampled_from([3, 300, 32768, 32769, 70000]),
    rows=st.tuples(st.integers(0, 11), st.integers(1, 12)),
    threads=st.sampled_from([1, 2, 3, 8]),
)
def test_a_rows_sum_depends_on_that_row_alone(
    columns: int, rows: tuple[int, int], threads: int
) -> None:
    """Whatever the threads and the other rows: a shard's distances are those of one process
    (torch splits one long reduction between threads when there are fewer rows than threads)."""
    a = torch.randn(12, columns, generator=torch.Generator().manual_seed(columns))
    first, count = rows
    reference = squared_norm(a)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        part = squared_norm(a[first : first + count].clone())
    finally:
        torch.set_num_threads(before)
    assert torch.equal(part, reference[first : first + count])


_ATEN = torch.ops.aten
_VECTOR_PRODUCTS = {_ATEN.mv, _ATEN.addmv, _ATEN.dot, _ATEN.vdot}
_WITH_BIAS = {_ATEN.addmm, _ATEN.baddbmm}  # (bias, first, second)


def _is_matrix_vector(packet: Any, args: tuple[Any, ...]) -> bool:
    """Whether a call runs a BLAS matrix-vector kernel: mv, dot, or a dense matrix product that
    torch hands to one because one side (its batch folded in) has a single row or column.
    Under inference mode torch dispatches matmul and linear whole: their operands decide."""
    if packet in _VECTOR_PRODUCTS:
        return True
    if packet is _ATEN.linear:
        first, second = args[0], args[1].T
    elif packet in (_ATEN.matmul, _ATEN.mm, _ATEN.bmm):
        first, second = args[0], args[1]
    elif packet in _WITH_BIAS:
        first, second = args[1], args[2]
    else:
        return False
    if first.layout != torch.strided or second.layout != torch.strided:
        return False  # a sparse product (the combine): a sparse kernel
    if first.dim() == 1 or second.dim() == 1:
        return True
    if second.dim() == 2:  # first's batch folds into its rows: one matrix product
        return first.numel() == first.shape[-1] or second.shape[-1] == 1
    batch = torch.broadcast_shapes(first.shape[:-2], second.shape[:-2]).numel()
    return batch == 1 and (first.shape[-2] == 1 or second.shape[-1] == 1)


class _MatrixVectorCalls(TorchDispatchMode):
    """Records every matrix-vector kernel called (with its operands' shapes) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if _is_matrix_vector(func.overloadpacket, args):
            shapes = [tuple(a.shape) for a in args if isinstance(a, Tensor)]
            self.calls.append(f"{func}: {shapes}")
        return func(*args, **(kwargs or {}))


def _short_runs() -> dict[str, dict[str, Any]]:
    """Every rule under every attack on target localization, and the two neural samples."""
    located = {
        f"target-localization/{attack}": {
            "case": "target-localization",
            "attack": attack,
            "attackers": 3,
            "rules": RULES.names(),
            "task": {"agents": 12, "iterations": 2},
        }
        for attack in ATTACKS.names()
    }
    har = {"data_dir": str(SAMPLES / "har-recreated" / "UCI HAR Dataset"), "epochs": 1}
    digits = {
        "data_dir": str(SAMPLES / "mnist"),
        "mnist_agents": 3,
        "synthetic_agents": 3,
        "train_per_agent": 16,
        "test_per_agent": 8,
        "mnist_batch": 8,
        "synthetic_batch": 8,
        "epochs": 1,
    }
    return {
        **located,
        "har": {"case": "har", "attackers": 2, "rules": RULES.names(), "task": har},
        "har/one-example-batches": {
            "case": "har",
            "attackers": 1,
            "task": {**har, "agents": 6, "batch_size": 1},
        },
        "digits": {"case": "digits", "attackers": 1, "rules": RULES.names(), "task": digits},
    }


@pytest.mark.parametrize("name", sorted(_short_runs()))
def test_no_run_calls_a_matrix_vector_kernel(name: str, tmp_path: Path) -> None:
    config = _short_runs()[name]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BYZMTL_CACHE", str(tmp_path))
        experiment = prepare(config)
        with _MatrixVectorCalls() as recorder:
            run(experiment)
    assert recorder.calls == []
