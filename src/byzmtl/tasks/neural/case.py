"""The learning case study :class:`NeuralCase` (the engine's ``Task`` for agents that each train
a copy of one ``torch.nn.Module``; the round, the data schedule and the metrics are described in
:mod:`byzmtl.tasks.neural`), and the settings every learning case study shares."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from byzmtl import rng
from byzmtl.ops import host_copy
from byzmtl.tasks.base import CaseStudy, Settings
from byzmtl.tasks.neural.data import AgentData, NeuralBatch, Schedule, SizeGroup
from byzmtl.tasks.neural.forward import (
    LayerwiseForward,
    activation_size,
    batched_forward,
    input_runs,
)
from byzmtl.tasks.neural.losses import cross_entropy, score_cross_entropy
from byzmtl.tasks.neural.optim import Optimiser

ACTIVATION_BUDGET = {"cpu": 1 << 22, "cuda": 1 << 28}
"""Floats of one layer's output per batched call (models x examples x largest activation):
calls are split so that their intermediate tensors stay within this budget, which on a CPU keeps
them in cache (measured best for the paper's CNN: about 160 images per call) and on a GPU bounds
memory. Keyed by device type; other devices use the CUDA value."""


class NeuralSettings(Settings):
    """Settings shared by learning case studies (case studies override the defaults)."""

    epochs: int = Field(10, ge=1, description="passes over the data (see tasks.neural)")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="local step")
    lr: float = Field(0.01, gt=0, description="learning rate of the local step")
    step_probability: list[float] = Field(
        [1.0],
        min_length=1,
        description="agent k takes its local step with probability step_probability[k mod len]",
    )

    @field_validator("step_probability")
    @classmethod
    def _probabilities(cls, value: list[float]) -> list[float]:
        if not all(0.0 < p <= 1.0 for p in value):
            raise ValueError("every probability must lie in (0, 1]")
        return value


class NeuralCase(CaseStudy):
    """A case study whose agents each train one copy of ``model`` on their own data.

    Subclasses set the registry attributes and build themselves in ``from_settings`` by calling
    this constructor with the model, the agents' data and the training schedule.
    """

    time_unit: ClassVar[str] = "epoch"
    final_fraction: ClassVar[float] = 0.0  # final = the last epoch
    log_metrics: ClassVar[frozenset[str]] = frozenset({"train_loss", "test_loss"})
    loss_metric: ClassVar[str] = "test_loss"
    higher_is_better: ClassVar[frozenset[str]] = frozenset({"accuracy"})
    rounds_setting: ClassVar[str] = "task.epochs"
    metric_names = ("train_loss", "test_loss", "accuracy")

    def __init__(
        self,
        model: nn.Module,
        data: Sequence[AgentData],
        *,
        seed: int,
        optimiser: Optimiser,
        epochs: int,
        batch_size: int | Sequence[int],
        step_probability: float | Sequence[float] | np.ndarray = 1.0,
        groups: Sequence[int] | np.ndarray | None = None,
        group_names: Sequence[str] = (),
        eval_train: int | None = None,
        keys: np.ndarray | None = None,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        activation_budget: int | None = None,
    ) -> None:
        n = len(data)
        if n == 0:
            raise ValueError("a learning case study needs at least one agent")
        self.n_agents, self.epochs, self.seed = n, epochs, seed
        self.keys = rng.agent_keys(n) if keys is None else np.asarray(keys, dtype=np.uint64)
        self.groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
        self.group_names = list(group_names)
        self.optimiser = optimiser
        self.dtype, self.device = dtype, torch.device(device)
        self.model = model.to(dtype=dtype, device=self.device).eval()
        self.input_shape = tuple(data[0].x_train.shape[1:])
        self.forward = batched_forward(self.model, self.input_shape)
        if activation_budget is None:
            activation_budget = ACTIVATION_BUDGET.get(self.device.type, ACTIVATION_BUDGET["cuda"])
        self.images_per_call = max(1, activation_budget // activation_size(model, self.input_shape))
        outputs = activation_size(model, self.input_shape, include_input=False)
        self.outputs_per_call = max(1, activation_budget // outputs)  # inputs read once
        self.n_parameters = sum(p.numel() for p in self.model.parameters())
        self.parameter_sizes = tuple(p.numel() for p in self.model.parameters())
        with torch.no_grad():
            example = torch.tensor(data[0].x_train[:1], dtype=dtype, device=self.device)  # a copy
            self.n_classes = int(self.model(example).shape[-1])
        labels = np.concatenate([np.concatenate([d.y_train, d.y_test]) for d in data])
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"labels must be class indices 0..{self.n_classes - 1}")
        sizes = np.broadcast_to(np.asarray(batch_size, dtype=np.int64), (n,)).copy()
        if sizes.min() < 1:
            raise ValueError("batch sizes must be positive")
        self.probability = np.broadcast_to(np.asarray(step_probability, np.float64), (n,)).copy()
        n_train = np.array([len(d.y_train) for d in data], dtype=np.int64)
        self.schedule = Schedule(seed, self.keys, n_train, sizes)
        self.rounds_per_epoch = self.schedule.rounds_per_epoch
        self._learning: tuple[int, np.ndarray] | None = None
        self._one_group = (
            np.zeros(n, dtype=np.int64),
            self._long(np.zeros(n)),
            self._long(np.arange(n)),
        )
        self.n_rounds = epochs * self.rounds_per_epoch
        self._x_train = self._tensor(np.concatenate([d.x_train for d in data]))
        self._y_train = self._labels(np.concatenate([d.y_train for d in data]))
        self.test_set = self._padded([(d.x_test, d.y_test) for d in data])
        self.train_eval_set = self._padded(
            [(d.x_train[:eval_train], d.y_train[:eval_train]) for d in data]
        )

    def _tensor(self, values: np.ndarray) -> Tensor:
        return torch.as_tensor(values, device=self.device).to(self.dtype)

    def _labels(self, values: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.int64), device=self.device)

    def _padded(self, sets: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs (N, M, ...), labels (N, M) and mask (N, M) of per-agent sets padded to M."""
        width = max(len(y) for _, y in sets)
        x = np.zeros((len(sets), width, *self.input_shape), dtype=sets[0][0].dtype)
        y = np.zeros((len(sets), width), dtype=np.int64)
        mask = np.zeros((len(sets), width), dtype=bool)
        for k, (xs, ys) in enumerate(sets):
            x[k, : len(ys)], y[k, : len(ys)], mask[k, : len(ys)] = xs, ys, True
        return self._tensor(x), self._labels(y), torch.as_tensor(mask, device=self.device)

    def time_values(self) -> np.ndarray:
        return np.arange(1, self.epochs + 1)

    @property
    def n_records(self) -> int:
        return self.epochs

    # -- the engine's Task protocol ------------------------------------------------------------

    def init_models(self, replicas: int) -> Tensor:
        """Every agent's own initialisation of the module (its ``reset_parameters``, seeded by
        (seed, agent)); the same in every replica."""
        seeds = rng.uniform(self.seed, "init", self.keys)[:, 0] * 2.0**53
        template = copy.deepcopy(self.model).cpu()  # the same numbers on every device
        rows = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for agent_seed in seeds:
                torch.manual_seed(int(agent_seed))
                for module in template.modules():
                    reset = getattr(module, "reset_parameters", None)
                    if callable(reset):
                        reset()
                rows.append(nn.utils.parameters_to_vector(template.parameters()))
        start = torch.stack(rows).to(self.device)
        return start.expand(replicas, -1, -1).clone()

    def init_state(self, models: Tensor) -> dict[str, Tensor]:
        return self.optimiser.init_state(models)

    def batch(self, iteration: int) -> NeuralBatch:
        """Every agent's batch of this round, and who takes a local step (see the module
        docstring). Built outside inference mode, so that local steps can differentiate."""
        sizes, rows = self.schedule.rows(iteration)
        learns = self._learns(iteration)
        if (sizes == sizes[0]).all():
            size_groups = [(np.arange(self.n_agents), int(sizes[0]))]
            group_of_host, group_of, slot = self._one_group
        else:
            distinct, inverse = np.unique(sizes, return_inverse=True)
            size_groups = [(np.flatnonzero(inverse == g), int(n)) for g, n in enumerate(distinct)]
            position = np.zeros(self.n_agents, dtype=np.int64)
            for agents, _ in size_groups:
                position[agents] = np.arange(len(agents))
            group_of_host = inverse.astype(np.int64)
            group_of, slot = self._long(group_of_host), self._long(position)
        groups, learners = [], []
        with torch.inference_mode(False):
            for agents, size in size_groups:
                picked = torch.as_tensor(rows[agents, :size].ravel(), device=self.device)
                learning = np.flatnonzero(learns[agents])
                learners.append(agents[learning])
                groups.append(
                    SizeGroup(
                        self._long(agents),
                        self._x_train.index_select(0, picked).unflatten(0, (len(agents), size)),
                        self._y_train.index_select(0, picked).view(len(agents), size),
                        self._long(learning),
                    )
                )
            return NeuralBatch(
                tuple(groups),
                group_of,
                group_of_host,
                slot,
                self._long(np.concatenate(learners)),
                (iteration + 1) % self.rounds_per_epoch == 0,
            )

    def _learns(self, iteration: int) -> np.ndarray:
        """(N,) bool: the agents that take their local step in this round (drawn for a whole
        epoch at once)."""
        epoch, t = divmod(iteration, self.rounds_per_epoch)
        if self._learning is None or self._learning[0] != epoch:
            first = epoch * self.rounds_per_epoch
            rounds = np.arange(first, first + self.rounds_per_epoch)[:, None]
            draws = rng.uniform(self.seed, "less-data", self.keys[None, :], rounds)[..., 0]
            self._learning = (epoch, draws < self.probability)
        return self._learning[1][t]

    def _long(self, values: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.int64), device=self.device)

    def adapt(
        self, models: Tensor, batch: NeuralBatch, state: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimiser step on its batch for every agent that learns this round."""
        if not len(batch.learners):
            return models, state
        replicas = models.shape[0]
        with torch.inference_mode(False):
            grads = []  # per size group, learners in the order of batch.learners
            for group in batch.groups:
                if not len(group.learning):
                    continue
                agents = group.agents.index_select(0, group.learning)
                params = models.index_select(1, agents).flatten(0, 1)
                index = group.learning.repeat(replicas) if replicas > 1 else group.learning
                grads.append(self._gradients(params, group, index).unflatten(0, (replicas, -1)))
            gradients = grads[0] if len(grads) == 1 else torch.cat(grads, 1)
            return self.optimiser.apply(models, gradients, state, batch.learners)

    def _chunks(
        self, models: int, examples: int, align: int = 1, per_call: int | None = None
    ) -> list[slice]:
        """Consecutive ranges of models evaluated in one call each, within the activation
        budget (``per_call`` examples x models, ``images_per_call`` by default), of a multiple
        of ``align`` models (runs of models sharing inputs stay whole)."""
        per_call = self.images_per_call if per_call is None else per_call
        step = max(1, per_call // max(examples, 1) // align) * align
        return [slice(start, start + step) for start in range(0, models, step)]

    def _gradients(self, params: Tensor, group: SizeGroup, index: Tensor) -> Tensor:
        """(G, P) gradients of l_k at each row of ``params``, on the batch ``group.x[index]``:
        in closed form for a lone linear layer, else by automatic differentiation."""
        forward = self.forward
        if isinstance(forward, LayerwiseForward) and forward.logistic:
            return forward.logistic_gradients(params, group.x, group.y, index)
        out = []
        for part in self._chunks(len(index), group.x.shape[1]):
            leaf = params[part].detach().requires_grad_()
            with torch.enable_grad():
                loss = self._mean_losses(leaf, group.x, group.y, index[part]).sum()
                (gradient,) = torch.autograd.grad(loss, leaf)
            out.append(gradient)
        return torch.cat(out)

    def _cross_entropy(self, params: Tensor, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        """(G, B) cross-entropy of model g on example i of ``x[index[g]]``."""
        return cross_entropy(self.forward(params, x, index), y.index_select(0, index))

    def _mean_losses(self, params: Tensor, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return self._cross_entropy(params, x, y, index).mean(1)

    def _mean_scores(self, params: Tensor, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        """(G,) mean score (``score_cross_entropy``) of model g on its batch ``x[index[g]]``."""
        logits = self.forward(params, x, index)
        return score_cross_entropy(logits, y.index_select(0, index)).mean(1)

    def edge_losses(self, messages: Tensor, receivers: Tensor, batch: NeuralBatch) -> Tensor:
        """l_k(m) for every message m on its receiver k's batch: one forward pass per edge."""
        replicas, n_edges, size = messages.shape
        out = messages.new_empty((replicas, n_edges))
        if not n_edges:
            return out
        selections: list[Tensor | None] = [None]
        if len(batch.groups) > 1:  # the edges of each size group, decided on the host
            group_of = batch.group_of_host[host_copy(receivers)]
            selections = [
                torch.as_tensor(np.flatnonzero(group_of == g), device=messages.device)
                for g in range(len(batch.groups))
            ]
        for group, chosen in zip(batch.groups, selections, strict=True):
            if chosen is None:
                sent, heard = messages, receivers
            elif not len(chosen):  # no message for this group's agents (e.g. attacked edges)
                continue
            else:
                sent, heard = messages.index_select(1, chosen), receivers.index_select(0, chosen)
            index = batch.slot.index_select(0, heard).repeat(replicas)
            params = sent.reshape(-1, size)
            shared = input_runs(index) if self.forward.shares_inputs else None
            parts = self._chunks(len(index), group.x.shape[1], 1 if shared is None else shared[1])
            losses = torch.cat(
                [self._mean_scores(params[part], group.x, group.y, index[part]) for part in parts]
            ).view(replicas, -1)
            if chosen is None:
                out = losses
            else:
                out[:, chosen] = losses
        return out

    def sender_losses(self, models: Tensor, batch: NeuralBatch) -> Tensor | None:
        """(R, N, N): l_k(w_l) of every agent l's model on every agent k's batch, at [r, k, l],
        when the model's first layer is linear: every batch of a size group goes through all
        models in one matrix product (see :meth:`LayerwiseForward.on_all_inputs`). None for
        other models, which the engine scores edge by edge."""
        forward = self.forward
        if not isinstance(forward, LayerwiseForward) or not forward.shares_inputs:
            return None
        replicas, n, size = models.shape
        params = models.reshape(-1, size)
        out = models.new_empty((replicas, n, n))
        for group in batch.groups:
            receivers, examples = group.x.shape[:2]
            step = max(1, self.outputs_per_call // (receivers * examples))
            losses = []
            for start in range(0, len(params), step):
                logits = forward.on_all_inputs(params[start : start + step], group.x)
                labels = group.y.expand(len(logits), -1, -1)
                ce = score_cross_entropy(logits.unflatten(1, (receivers, examples)), labels)
                losses.append(ce.mean(2))  # (models, receivers)
            per_model = torch.cat(losses).view(replicas, n, receivers).transpose(1, 2)
            if len(batch.groups) == 1:  # every agent, in order
                return per_model
            out.index_copy_(1, group.agents, per_model)
        return out

    def metrics(
        self, models: Tensor, batch: NeuralBatch, iteration: int
    ) -> dict[str, Tensor] | None:
        """Train loss, test loss and test accuracy of every agent, after an epoch's last round."""
        if not batch.epoch_end:
            return None
        train_loss, _ = self.evaluate(models, self.train_eval_set)
        test_loss, accuracy = self.evaluate(models, self.test_set)
        return {"train_loss": train_loss, "test_loss": test_loss, "accuracy": accuracy}

    def evaluate(
        self, models: Tensor, examples: tuple[Tensor, Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy and accuracy (R, N) of every agent's model on its own examples
        (padded per agent: inputs (N, M, ...), labels (N, M), mask (N, M))."""
        x, y, mask = examples
        replicas, n, size = models.shape
        params = models.transpose(0, 1).reshape(-1, size)  # an agent's replicas share inputs
        index = torch.arange(n, device=models.device).repeat_interleave(replicas)
        per_call = self.images_per_call
        if isinstance(self.forward, LayerwiseForward) and self.forward.shares_inputs:
            per_call = self.outputs_per_call  # inputs are read in place, not copied per model
        columns = min(x.shape[1], per_call)
        loss_sum = models.new_zeros(replicas * n)
        correct = models.new_zeros(replicas * n)
        for rows in self._chunks(len(index), columns, replicas, per_call):
            for start in range(0, x.shape[1], columns):
                part, which = slice(start, start + columns), index[rows]
                logits = self.forward(params[rows], x[:, part], which)
                labels = y[:, part].index_select(0, which)
                valid = mask[:, part].index_select(0, which)
                loss_sum[rows] += (cross_entropy(logits, labels) * valid).sum(1)
                predicted = logits.max(-1).indices  # argmax, several times faster on CPU
                correct[rows] += ((predicted == labels) & valid).sum(1)
        count = mask.sum(1).repeat_interleave(replicas)
        loss, accuracy = (loss_sum / count).view(n, replicas), (correct / count).view(n, replicas)
        return loss.T.contiguous(), accuracy.T.contiguous()

    def flip_labels(self, batch: NeuralBatch, agents: Tensor) -> NeuralBatch:
        """``batch`` with the labels of the flagged agents ((N,) bool) flipped, y -> C - 1 - y
        (used by the label-flip attack); ``batch`` itself is left unchanged."""
        groups = []
        with torch.inference_mode(False):
            for group in batch.groups:
                flagged = agents.index_select(0, group.agents).unsqueeze(1)
                flipped = torch.where(flagged, self.n_classes - 1 - group.y, group.y)
                groups.append(replace(group, y=flipped))
        return replace(batch, groups=tuple(groups))
