"""Case study 1 of the paper: target localization (streaming linear regression, convex).

Agents sit at positions x_k; agent k estimates the position w0_k of its own target (one of four,
25 agents each; nobody knows who shares its target). At iteration i it observes

    u = (w0_k - x_k) / ||w0_k - x_k|| + sigma_u,k * n,     d = u^T (w0_k - x_k) + sigma_v,k * v,

with n, v standard Gaussian, and takes the authors' local step q = x_k + d * u,
psi_k = w_k + mu * (q - w_k). The loss of any estimate w on k's sample is
l_k(w) = (d + u^T x_k - u^T w)^2, always with the receiver's own x_k (a deliberate fix of the
authors' code, which used the sender's position there).

Agents are numbered along a space-filling curve of their positions (agent 0 is the first on the
curve), so that neighbours on the geometric graph sit close in memory; the numbering is the
agents' id everywhere (a user's graph, ``task.groups``, ``byzantine``, results). Each agent's
identity, which keys all its randomness, is fixed before the numbering, so results do not depend
on it. Targets: ``task.groups`` gives each agent's target by id (a list of target indices or
names ``target-g``, or a file with one per line); by default agents are split evenly between the
targets, in the order of their identities (which the numbering scatters in space).

Metrics per iteration and agent, after combining: ``loss`` = l_k(w_k) on the current sample (the
paper's metric) and ``msd`` = ||w_k - w0_k||^2 (the squared distance to the true target).
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor

from byzmtl import rng
from byzmtl.graph import spatial_order
from byzmtl.ops import row_dot, squared_norm
from byzmtl.tasks.base import (
    CASES,
    CaseDefaults,
    CaseStudy,
    GroupsSetting,
    PlannedSize,
    Settings,
    assign_groups,
)

_CHUNK_VALUES = 1 << 19  # samples generated at once: (iterations x agents) per chunk, at least
# one iteration (each chunk holds 5 numbers per value; generating it takes about 5x more)


class TargetLocalizationSettings(Settings):
    """Settings of the target localization case study (the paper's values by default)."""

    agents: int = Field(100, ge=1, description="number of agents")
    iterations: int = Field(500, ge=1, description="number of rounds")
    targets: list[tuple[float, float]] = Field(
        [(10.0, 10.0), (10.0, 20.0), (20.0, 10.0), (20.0, 20.0)],
        min_length=1,
        description="target centres; each is jittered by U[0, target_jitter)^2",
    )
    target_jitter: float = Field(1.0, ge=0)
    area: float | None = Field(
        None, gt=0, description="side of the square agents live in; default 3 * sqrt(agents/100)"
    )
    mu: float = Field(0.1, gt=0, le=1, description="step size of the local step")
    regressor_noise: tuple[float, float] = (0.01, 0.02)
    observation_noise: tuple[float, float] = (0.1, 0.2)
    noisy_agents: int = Field(5, ge=0, description="agents whose regressor noise is larger")
    noisy_regressor_noise: float = Field(0.1, ge=0)
    groups: GroupsSetting = Field(
        None,
        description="the target of each agent by id: a list of target indices (or names "
        "target-g), or a file with one per line; default: agents split evenly between targets",
    )

    @field_validator("regressor_noise", "observation_noise")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError("noise range must satisfy 0 <= low <= high")
        return value


class LocalizationBatch(NamedTuple):
    """Every agent's sample of one iteration (or of several, stacked in a leading dimension)."""

    u: Tensor  # (N, 2) regressors
    b: Tensor  # (N,) d + u^T x_k: the loss of w is (b - u^T w)^2
    q: Tensor  # (N, 2) x_k + d * u: the local step moves towards it


@CASES.register("target-localization")
class TargetLocalization(CaseStudy):
    """Streaming linear regression towards one of several targets (the paper's case study 1)."""

    description = "linear regression: 100 agents on a geometric graph locate 4 targets"
    settings_model = TargetLocalizationSettings
    defaults = CaseDefaults(
        attack="constant",
        attack_params={"value": 15.0, "spread": 1.0},
        nu=0.1,
        r0=10.0,
        dtype="float64",
        graph={"kind": "geometric", "radius": 1.0, "max_neighbours": 10},
    )
    time_unit: ClassVar[str] = "iteration"
    log_metrics: ClassVar[frozenset[str]] = frozenset({"loss", "msd"})
    metric_names: tuple[str, ...] = ("loss", "msd")
    positions: np.ndarray

    def __init__(
        self,
        *,
        seed: int,
        keys: np.ndarray,
        positions: np.ndarray,
        groups: np.ndarray,
        targets: np.ndarray,
        regressor_noise: np.ndarray,
        observation_noise: np.ndarray,
        mu: float,
        iterations: int,
        dtype: torch.dtype = torch.float64,
        device: str = "cpu",
    ) -> None:
        self.seed, self.keys, self.mu = seed, keys, mu
        self.n_agents, self.n_rounds = len(positions), iterations
        self.positions, self.groups, self.targets = positions, groups, targets
        self.group_names = [f"target-{g}" for g in range(len(targets))]
        self.regressor_noise, self.observation_noise = regressor_noise, observation_noise
        self.dtype, self.device = dtype, torch.device(device)
        self._chunk: tuple[int, list[LocalizationBatch]] = (0, [])

    # derived per agent when first used (a partitioned run's whole case study never is)

    @cached_property
    def goal(self) -> np.ndarray:
        """(N, 2) w0_k: the target agent k seeks."""
        return self.targets[self.groups]

    @cached_property
    def direction(self) -> np.ndarray:
        """(N, 2) the unit vector from agent k to its target."""
        offset = self.goal - self.positions
        return offset / np.linalg.norm(offset, axis=1, keepdims=True)

    @cached_property
    def _goal(self) -> Tensor:
        return self._tensor(self.goal)

    @cached_property
    def _positions(self) -> Tensor:
        return self._tensor(self.positions)

    @cached_property
    def _exact(self) -> tuple[Tensor, ...]:
        """float64 x_k, w0_k - x_k, the direction and the noise levels, for the samples."""
        offset, noise = self.goal - self.positions, (self.regressor_noise, self.observation_noise)
        values = (self.positions, offset, self.direction, *noise)
        return tuple(torch.as_tensor(a, dtype=torch.float64) for a in values)

    @classmethod
    def planned_size(cls, settings: TargetLocalizationSettings) -> PlannedSize:
        return PlannedSize(settings.agents, settings.iterations, 2)

    @classmethod
    def from_settings(
        cls,
        settings: TargetLocalizationSettings,
        seed: int,
        dtype: torch.dtype = torch.float64,
        device: str = "cpu",
    ) -> TargetLocalization:
        n = settings.agents
        keys = rng.agent_keys(n)
        area = settings.area if settings.area is not None else 3.0 * np.sqrt(n / 100.0)
        centres = np.asarray(settings.targets, dtype=np.float64)
        jitter = rng.uniform(seed, "target", np.arange(len(centres)), 0, 2)
        low_u, high_u = settings.regressor_noise
        low_v, high_v = settings.observation_noise
        sigma_u = low_u + (high_u - low_u) * rng.uniform(seed, "regressor-noise-level", keys)[:, 0]
        noisy = np.argsort(rng.uniform(seed, "noisy-agents", keys)[:, 0], kind="stable")
        sigma_u[noisy[: settings.noisy_agents]] = settings.noisy_regressor_noise
        sigma_v = (
            low_v + (high_v - low_v) * rng.uniform(seed, "observation-noise-level", keys)[:, 0]
        )
        positions = area * rng.uniform(seed, "position", keys, 0, 2)
        case = cls(
            seed=seed,
            keys=keys,
            positions=positions,
            groups=np.arange(n) * len(centres) // n,
            targets=centres + settings.target_jitter * jitter,
            regressor_noise=sigma_u,
            observation_noise=sigma_v,
            mu=settings.mu,
            iterations=settings.iterations,
            dtype=dtype,
            device=device,
        )
        renaming = np.empty(n, dtype=np.int64)
        renaming[spatial_order(positions)] = np.arange(n)
        case = case.permuted(renaming)
        if settings.groups is not None:
            case = case.regrouped(assign_groups(settings.groups, case.group_names, n))
        return case

    def permuted(self, permutation: np.ndarray) -> TargetLocalization:
        """The same case study with agent k renamed ``permutation[k]``."""

        def move(values: np.ndarray) -> np.ndarray:
            out = np.empty_like(values)
            out[permutation] = values
            return out

        return self._copy(
            keys=move(self.keys),
            positions=move(self.positions),
            groups=move(self.groups),
            regressor_noise=move(self.regressor_noise),
            observation_noise=move(self.observation_noise),
        )

    def restricted(self, agents: np.ndarray) -> TargetLocalization:
        """The case study of ``agents`` (sorted ids) only, agent ``agents[j]`` renamed j: its
        samples, steps, losses and metrics are the whole case study's rows of those agents (the
        samples are keyed on the agents' identities; every operation is per agent)."""
        return self._copy(
            keys=self.keys[agents],
            positions=self.positions[agents],
            groups=self.groups[agents],
            regressor_noise=self.regressor_noise[agents],
            observation_noise=self.observation_noise[agents],
        )

    def regrouped(self, groups: np.ndarray) -> TargetLocalization:
        """The same case study with agent k seeking target ``groups[k]``."""
        return self._copy(groups=np.asarray(groups, dtype=np.int64))

    def _copy(self, **changes: object) -> TargetLocalization:
        settings: dict[str, object] = {
            "seed": self.seed,
            "keys": self.keys,
            "positions": self.positions,
            "groups": self.groups,
            "targets": self.targets,
            "regressor_noise": self.regressor_noise,
            "observation_noise": self.observation_noise,
            "mu": self.mu,
            "iterations": self.n_rounds,
            "dtype": self.dtype,
            "device": str(self.device),
        }
        return TargetLocalization(**{**settings, **changes})  # type: ignore[arg-type]

    def _tensor(self, values: np.ndarray | Tensor) -> Tensor:
        return torch.as_tensor(values, dtype=self.dtype, device=self.device)

    def init_models(self, replicas: int) -> Tensor:
        """w_k(0) ~ U[0, 1)^2, the same in every replica."""
        start = self._tensor(rng.uniform(self.seed, "init", self.keys, 0, 2))
        return start.expand(replicas, -1, -1).clone()

    def init_state(self, models: Tensor) -> dict[str, Tensor]:
        return {}

    def _samples(self, first: int, count: int) -> LocalizationBatch:
        """The samples of iterations first .. first+count-1, stacked: u (K, N, 2), b and q."""
        iterations = np.arange(first, first + count)[:, None]
        noise = torch.from_numpy(rng.normal(self.seed, "sample", self.keys[None, :], iterations, 3))
        x, offset, direction, sigma_u, sigma_v = self._exact
        u = direction + sigma_u[:, None] * noise[..., :2]  # regressor noise: 2 coordinates
        d = row_dot(u, offset).add_(sigma_v * noise[..., 2])  # observation noise
        b = row_dot(u, x).add_(d)
        q = torch.addcmul(x, d[..., None], u)
        return LocalizationBatch(self._tensor(u), self._tensor(b), self._tensor(q))

    def batch(self, iteration: int) -> LocalizationBatch:
        """Every agent's sample at ``iteration`` (generated in chunks of iterations)."""
        first, chunk = self._chunk
        if not 0 <= iteration - first < len(chunk):
            count = min(self.n_rounds - iteration, max(1, _CHUNK_VALUES // self.n_agents))
            stacked = self._samples(iteration, max(count, 1))
            chunk = list(map(LocalizationBatch, stacked.u, stacked.b, stacked.q))
            first, self._chunk = iteration, (iteration, chunk)
        return chunk[iteration - first]

    def adapt(
        self, models: Tensor, batch: LocalizationBatch, state: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """psi = w + mu * (q - w)."""
        return torch.lerp(models, batch.q, self.mu), state

    def flip_labels(self, batch: LocalizationBatch, agents: Tensor) -> LocalizationBatch:
        """The batch with the observations of ``agents`` ((N,) bool) negated, d -> -d (the
        ``label-flip`` attack, see :mod:`byzmtl.attacks.poisoning`): those agents learn their
        target mirrored through their position, b = d + u^T x -> 2 u^T x - b, q -> 2 x - q."""
        flagged = agents.to(batch.b.device)
        b = torch.where(flagged, 2 * row_dot(batch.u, self._positions) - batch.b, batch.b)
        q = torch.where(flagged[:, None], 2 * self._positions - batch.q, batch.q)
        return LocalizationBatch(batch.u, b, q)

    def edge_losses(self, messages: Tensor, receivers: Tensor, batch: LocalizationBatch) -> Tensor:
        """(b_k - u_k^T m)^2 for every message m received by k."""
        prediction = row_dot(messages, batch.u.index_select(0, receivers))
        return prediction.sub_(batch.b.index_select(0, receivers)).square_()

    def metrics(
        self, models: Tensor, batch: LocalizationBatch, iteration: int
    ) -> dict[str, Tensor]:
        """``loss`` and ``msd`` of every agent, in float64 whatever the run's precision (the
        square of a finite float32 model can overflow float32; it cannot overflow float64)."""
        if models.dtype == torch.float64:
            exact, u, b, goal = models, batch.u, batch.b, self._goal
        else:
            exact, u, b, goal = (
                models.double(),
                batch.u.double(),
                batch.b.double(),
                self._goal.double(),
            )
        loss = row_dot(exact, u).sub_(b).square_()
        msd = squared_norm(exact - goal)
        return {"loss": loss, "msd": msd}
