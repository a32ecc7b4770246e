"""Small tensor operations shared by the engine, rules and tasks, written for speed on the
shapes that occur here (many rows of a few coordinates as well as few rows of many)."""

from __future__ import annotations

import warnings
import weakref

import numpy as np
import torch
from torch import Tensor

_FEW_COLUMNS = 4
BLOCK = 1 << 15  # torch's grain size: a reduction of this many values is never split


def row_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum_j a[..., j] * b[..., j] (broadcasting), each row summed in an order fixed by its
    length alone: the same bits whatever the threads, the other rows, or where the operands lie.

    Not a matrix-vector product (``(a * b) @ ones``): BLAS matrix-vector kernels sum in an order
    that depends on the operands' alignment. A few columns are added one by one (torch's
    reductions are several times slower on a last dimension of 2); longer rows by torch's
    reduction in blocks of 2^15 values, then over the blocks, because torch splits a longer
    reduction between threads when a tensor has fewer rows than threads."""
    product = a * b
    columns = product.shape[-1]
    if 0 < columns <= _FEW_COLUMNS:
        first, *rest = product.unbind(-1)
        if not rest:
            return first
        out = first + rest[0]
        for column in rest[1:]:
            out.add_(column)
        return out
    if columns <= BLOCK:
        return product.sum(-1)
    return block_sums(product).sum(-1)


def block_sums(values: Tensor, block: int = BLOCK) -> Tensor:
    """(..., ceil(n / B)): s_b = values[..., bB] + ... + values[..., min((b+1)B, n) - 1] for
    blocks of B = ``block`` of (..., n) ``values``, each by torch's reduction (never split
    between threads when B <= 2^15)."""
    n = values.shape[-1]
    if not n:
        return values.new_zeros((*values.shape[:-1], 0))
    return torch.stack([values[..., j : j + block].sum(-1) for j in range(0, n, block)], -1)


def squared_norm(a: Tensor) -> Tensor:
    """||a[..., :]||^2 over the last dimension."""
    return row_dot(a, a)


def all_squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """(M, N): ||a_i - b_j||^2 for all pairs of rows, a (M, d) and b (N, d), as

        ||a_i||^2 + ||b_j||^2 - 2 a_i . b_j      (one matrix product, in float64).

    For inputs in single precision the products are exact in float64; the cancellation error is
    that of the float64 sums, at worst about d * 1e-16 * (||a_i||^2 + ||b_j||^2) and in practice
    far less (measured: under 1e-14 of it for d = 300), well below the inputs' own rounding. The
    result is returned in the inputs' dtype and never negative. Not meant for float64 inputs,
    whose exact differences the engine computes instead."""
    a64, b64 = a.double(), b.double()
    gram = torch.mm(a64, b64.T).mul_(-2.0)
    gram.add_(torch.linalg.vector_norm(a64, dim=1).square_()[:, None])
    gram.add_(torch.linalg.vector_norm(b64, dim=1).square_()[None, :])
    return gram.clamp_min_(0.0).to(a.dtype)


def segment_sums(offsets: Tensor, columns: Tensor, weights: Tensor, rows: Tensor) -> Tensor:
    """out[s] = sum over e in offsets[s]:offsets[s+1] of weights[e] * rows[columns[e]]: a sparse
    CSR matrix (segments x rows) times a dense matrix, one call for all segments."""
    matrix = torch.sparse_csr_tensor(
        offsets, columns, weights, (len(offsets) - 1, rows.shape[0]), check_invariants=False
    )
    return matrix @ rows


def _quiet_sparse_warning() -> None:
    """torch warns once per process that sparse CSR support is in beta: take that warning here,
    silenced, rather than paying for a warnings filter on every round."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        index = torch.zeros(2, dtype=torch.long)
        segment_sums(index, index[:0], torch.zeros(0), torch.zeros(1, 1))


_quiet_sparse_warning()


def within_range(models: Tensor) -> Tensor:
    """``models`` clamped (in place) to +-finfo.max: a convex combination of finite values is
    finite, but its rounding can carry it past the largest float, to +-inf."""
    largest = torch.finfo(models.dtype).max
    return models.clamp_(-largest, largest)


def branches_freely(tensor: Tensor) -> bool:
    """Whether code may branch on ``tensor``'s values for free: on the CPU its data is in host
    memory; on an accelerator reading a value is a host synchronisation, which stalls the
    device's queue, so the engine takes branch-free paths there instead (same results)."""
    return tensor.device.type == "cpu"


_HOST_COPIES: dict[int, tuple[weakref.ref[Tensor], np.ndarray]] = {}


def host_copy(tensor: Tensor) -> np.ndarray:
    """``tensor``'s values in host memory, read from the device once per tensor (kept while the
    tensor lives): for the index tensors a run keeps for all its rounds (receivers of edges),
    so that code deciding a round's layout from their values reads nothing from the device."""
    key = id(tensor)
    cached = _HOST_COPIES.get(key)
    if cached is not None and cached[0]() is tensor:
        return cached[1]
    values = tensor.detach().cpu().numpy()
    _HOST_COPIES[key] = (weakref.ref(tensor, lambda _: _HOST_COPIES.pop(key, None)), values)
    return values
