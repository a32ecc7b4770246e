"""Counter-based random numbers: every draw is a pure function of (seed, stream, agent, iteration).

A simulation must not depend on how its agents are batched, ordered or sharded, so no draw comes
from a shared sequential generator. Instead each number is a hash of its coordinates:

    h = mix(mix(mix(seed) ^ stream) + key),   x = mix(h + iteration * H + j * G),
    u = (x >> 11) / 2^53

where ``mix`` is the splitmix64 finaliser (a bijection on 64-bit words with full avalanche), ``key``
is the agent's identity (see :func:`agent_keys`), ``j`` the index of the draw within one
(agent, iteration), and ``G``, ``H`` are odd 64-bit Weyl constants (as in SplitMix64's counter).
Hashing is vectorised in numpy uint64 arithmetic, whose wrap-around is well defined, or, for
draws made every round on the device that uses them (attacks), in torch int64 arithmetic: the
same bits as words of two's complement, with logical right shifts masked
(:func:`uniform_tensor`, bit-identical to :func:`uniform`). Gaussians come from the Box-Muller
transform (in torch, whose vectorised log and cos are several times faster than numpy's).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_WEYL = np.uint64(0xD1B54A32D192ED03)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def agent_keys(n_agents: int) -> np.ndarray:
    """The default identity of agents 0..n-1: their index. Relabelling agents permutes keys."""
    return np.arange(n_agents, dtype=np.uint64)


def _words(seed: int, stream: str, keys: np.ndarray, iteration: int | np.ndarray) -> np.ndarray:
    """h + iteration * H for every (key, iteration), broadcast."""
    base = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    base = _mix(base ^ np.uint64(zlib.crc32(stream.encode())))
    with np.errstate(over="ignore"):
        per_key = _mix(base + np.asarray(keys, dtype=np.uint64))
        it = np.asarray(iteration, dtype=np.int64).astype(np.uint64)
        return per_key + it * _WEYL


def uniform(
    seed: int,
    stream: str,
    keys: np.ndarray,
    iteration: int | np.ndarray = 0,
    size: int = 1,
) -> np.ndarray:
    """Uniform floats in [0, 1), shape ``broadcast(keys, iteration).shape + (size,)``.

    ``keys`` are agent identities (or any integer identities: edges, attackers); ``stream`` names
    the purpose of the draw so that different uses never share numbers.
    """
    words = _words(seed, stream, keys, iteration)[..., None]
    with np.errstate(over="ignore"):
        x = _mix(words + np.arange(size, dtype=np.uint64) * _GOLDEN)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal(
    seed: int,
    stream: str,
    keys: np.ndarray,
    iteration: int | np.ndarray = 0,
    size: int = 1,
) -> np.ndarray:
    """Standard normal floats (Box-Muller), shape ``broadcast(keys, iteration).shape + (size,)``."""
    pairs = (size + 1) // 2
    u = torch.from_numpy(uniform(seed, stream, keys, iteration, 2 * pairs))
    return _box_muller(u, size).numpy()


def _box_muller(u: Tensor, size: int) -> Tensor:
    """``size`` standard normals from ``2 * ceil(size / 2)`` uniforms in the last dimension."""
    pairs = u.shape[-1] // 2
    radius = torch.log1p(-u[..., :pairs]).mul_(-2.0).sqrt_()
    angle = u[..., pairs:].mul(2.0 * np.pi)
    z = torch.cat([radius * torch.cos(angle), radius.mul_(torch.sin(angle))], dim=-1)
    return z[..., :size]


def pair_keys(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One key per ordered pair (first[i], second[i]), e.g. per (sender, receiver) edge."""
    with np.errstate(over="ignore"):
        return _mix(np.asarray(first, dtype=np.uint64) * _GOLDEN) ^ np.asarray(second, np.uint64)


def _signed(value: np.uint64) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return _wrapped(int(value))


def _wrapped(value: int) -> int:
    """``value`` modulo 2^64, as the int64 with those bits."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


_T_GOLDEN = _signed(_GOLDEN)
_T_M1, _T_M2 = _signed(_M1), _signed(_M2)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 words (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix_tensor(x: Tensor) -> Tensor:
    """splitmix64 finaliser on int64 words (wrapping multiplication)."""
    x = (x ^ _shift_right(x, 30)) * _T_M1
    x = (x ^ _shift_right(x, 27)) * _T_M2
    return x ^ _shift_right(x, 31)


def key_tensor(keys: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint64 keys as int64 words on ``device`` (for :func:`uniform_tensor`)."""
    return torch.as_tensor(np.asarray(keys, dtype=np.uint64).view(np.int64), device=device)


def uniform_tensor(
    seed: int,
    stream: str,
    keys: Tensor,
    iteration: int = 0,
    size: int = 1,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """:func:`uniform` computed on the device of ``keys`` (int64 words from :func:`key_tensor`),
    bit for bit the same numbers: shape ``keys.shape + (size,)``, as ``dtype``."""
    head = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    head = _mix(head ^ np.uint64(zlib.crc32(stream.encode())))
    per_key = _mix_tensor(keys + _signed(head[0]))
    words = per_key + _wrapped(iteration * int(_WEYL))
    counters = torch.arange(size, dtype=torch.int64, device=keys.device) * _T_GOLDEN
    x = _mix_tensor(words[..., None] + counters)
    return (_shift_right(x, 11).to(torch.float64) * (1.0 / 9007199254740992.0)).to(dtype)


def normal_tensor(
    seed: int, stream: str, keys: Tensor, iteration: int = 0, size: int = 1
) -> Tensor:
    """:func:`normal` computed on the device of ``keys`` (float64; the same numbers on the CPU,
    within the device's rounding of log and cos elsewhere)."""
    u = uniform_tensor(seed, stream, keys, iteration, 2 * ((size + 1) // 2))
    return _box_muller(u, size)
