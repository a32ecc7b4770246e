"""Counter-based random numbers: every draw is a pure function of (seed, stream, agent, iteration).

A simulation must not depend on how its agents are batched, ordered or sharded, so no draw comes
from a shared sequential generator. Instead each number is a hash of its coordinates:

    h = mix(mix(mix(seed) ^ stream) + key),   x = mix(h + iteration * H + j * G),
    u = (x >> 11) / 2^53

where ``mix`` is the splitmix64 finaliser (a bijection on 64-bit words with full avalanche), ``key``
is the agent's identity (see :func:`agent_keys`), ``j`` the index of the draw within one
(agent, iteration), and ``G``, ``H`` are odd 64-bit Weyl constants (as in SplitMix64's counter).
Hashing is vectorised in numpy uint64 arithmetic, whose wrap-around is well defined. Gaussians
come from the Box-Muller transform (in torch, whose vectorised log and cos are several times
faster than numpy's).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

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
    radius = torch.log1p(-u[..., :pairs]).mul_(-2.0).sqrt_()
    angle = u[..., pairs:].mul(2.0 * np.pi)
    z = torch.cat([radius * torch.cos(angle), radius.mul_(torch.sin(angle))], dim=-1)
    return z[..., :size].numpy()


def pair_keys(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One key per ordered pair (first[i], second[i]), e.g. per (sender, receiver) edge."""
    with np.errstate(over="ignore"):
        return _mix(np.asarray(first, dtype=np.uint64) * _GOLDEN) ^ np.asarray(second, np.uint64)
