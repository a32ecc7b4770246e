"""Small tensor operations shared by the engine, rules and tasks, written for speed on the
shapes that occur here (many rows of a few coordinates as well as few rows of many)."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor


@functools.lru_cache(maxsize=64)
def _ones(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.ones(size, dtype=dtype, device=device)


def row_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum_j a[..., j] * b[..., j] (broadcasting). A matrix-vector product: torch's reduction
    kernels are an order of magnitude slower on a last dimension of 2."""
    product = a * b
    return product @ _ones(product.shape[-1], product.dtype, product.device)


def squared_norm(a: Tensor) -> Tensor:
    """||a[..., :]||^2 over the last dimension."""
    return row_dot(a, a)


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
