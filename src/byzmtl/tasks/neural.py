"""Learning case studies: every agent trains its own copy of one ``torch.nn.Module``.

The models of all agents are rows of one (replicas, agents, P) tensor of flat parameter vectors:
the module's parameters in ``named_parameters`` order, each flattened, concatenated. On its
mini-batch (x_k, y_k) of b_k examples, the loss of any model w for agent k is the mean
cross-entropy

    l_k(w) = (1 / b_k) sum_i CE(f(w; x_ki), y_ki),    CE(z, y) = log sum_c exp(z_c) - z_y.

Each round, for every agent k of every replica:

- adapt, with probability p_k (the "less data" schedule; otherwise psi_k = w_k and the optimiser
  state of k is left alone), with g = grad l_k(w_k):
  SGD   psi_k = w_k - lr * g;
  Adam  m_k <- b1 m_k + (1 - b1) g,  v_k <- b2 v_k + (1 - b2) g^2,  t_k <- t_k + 1,
        psi_k = w_k - lr / (1 - b1^t_k) * m_k / (sqrt(v_k) / sqrt(1 - b2^t_k) + eps);
- score: l_k(m_lk) for every message m_lk received by k, on k's batch of this round, which k draws
  whether or not it learns.

Data: agent k holds n_k training examples, reshuffled at every epoch. An epoch is
T = min_k ceil(n_k / b_k) rounds, the rounds the agent with the fewest batches needs to see all its
data once (the authors' convention: their loop ends an epoch at the first exhausted data loader);
in round t of an epoch agent k takes examples t*b_k .. (t+1)*b_k - 1 of its shuffled order, so an
agent with more batches sees a fresh random part of its data each epoch.

Metrics, after the last round of every epoch, for every agent: ``train_loss`` and ``test_loss``,
the mean cross-entropy of w_k over its evaluation training examples (the first ``eval_train`` of
its training set, all by default) and over its test examples, and ``accuracy``, its fraction of
correctly classified test examples.

Vectorisation: G models, each applied to its own inputs, are evaluated in one call, with no
per-agent or per-edge Python logic. A ``torch.nn.Sequential`` of linear, 2-d convolution,
pooling, flatten and element-wise layers is evaluated layer by layer with batched kernels
(:class:`LayerwiseForward`: one grouped convolution in channels-last layout for the G models'
convolutions, one batched matrix product for their linear layers); any other module goes through
``torch.func.vmap`` over ``functional_call`` (:class:`VmapForward`). There is one call per
distinct batch size of the round, split further only to keep each layer's output within an
activation budget (``ACTIVATION_BUDGET``): a memory bound, which on a CPU is also the fastest
choice (for the paper's CNN, about 160 images per call stay in cache).

Two shortcuts for models whose first layer is linear. On a dense graph the engine asks for the
losses of all pairs (:meth:`NeuralCase.sender_losses`): every batch of the round goes through
every model's first layer in one matrix product, (examples of all batches) x (all models'
weights), so each input is read once rather than once per edge (HAR: 900 losses per round from
one (180 x 561) x (561 x 300) product). And a lone linear layer (multinomial logistic
regression) takes its local step with the closed-form gradient of the mean cross-entropy
(:meth:`LayerwiseForward.logistic_gradients`), without automatic differentiation.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn
from torch.func import functional_call, vmap

from byzmtl import rng
from byzmtl.tasks.base import CaseStudy, Settings

ACTIVATION_BUDGET = {"cpu": 1 << 22, "cuda": 1 << 28}
"""Floats of one layer's output per batched call (models x examples x largest activation):
calls are split so that their intermediate tensors stay within this budget, which on a CPU keeps
them in cache (measured best for the paper's CNN: about 160 images per call) and on a GPU bounds
memory. Keyed by device type; other devices use the CUDA value."""


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, eq=False)
class AgentData:
    """One agent's examples: inputs ``(n, *input_shape)`` and integer class labels ``(n,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError("every input needs a label")
        if not len(self.x_train) or not len(self.x_test):
            raise ValueError("every agent needs training and test examples")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError("training and test inputs differ in shape")


@dataclass(frozen=True, eq=False)
class SizeGroup:
    """The agents whose batch has the same size this round, with their batches."""

    agents: Tensor  # (A,) long
    x: Tensor  # (A, B, *input_shape)
    y: Tensor  # (A, B) long
    learning: Tensor  # (L,) long: positions in ``agents`` of those taking their local step


@dataclass(frozen=True, eq=False)
class NeuralBatch:
    """Every agent's mini-batch of one round, grouped by batch size."""

    groups: tuple[SizeGroup, ...]
    group_of: Tensor  # (N,) long: the size group of each agent
    slot: Tensor  # (N,) long: each agent's position in its group
    learners: Tensor  # (L,) long: agents taking their local step, group after group
    epoch_end: bool


def cyclic(pattern: Sequence[float], n: int) -> np.ndarray:
    """``pattern[k mod len(pattern)]`` for k = 0..n-1: the paper's per-agent schedules."""
    return np.asarray(pattern, dtype=np.float64)[np.arange(n) % len(pattern)]


class Schedule:
    """Which training examples every agent takes in each round (see the module docstring)."""

    def __init__(
        self, seed: int, keys: np.ndarray, n_train: np.ndarray, batch_sizes: np.ndarray
    ) -> None:
        self.seed, self.keys = seed, keys
        self.n_train, self.batch_sizes = n_train, batch_sizes
        self.offsets = np.concatenate([[0], np.cumsum(n_train)[:-1]])
        self.rounds_per_epoch = int(np.min(-(-n_train // batch_sizes)))
        self._order: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        """(N, max n_k): agent k's training examples (global rows) in this epoch's order."""
        if self._order is None or self._order[0] != epoch:
            width = int(self.n_train.max())
            u = rng.uniform(self.seed, "shuffle", self.keys, epoch, width)
            u[np.arange(width)[None, :] >= self.n_train[:, None]] = 2.0  # padding sorts last
            rows = np.argsort(u, axis=1, kind="stable") + self.offsets[:, None]
            self._order = (epoch, rows)
        return self._order[1]

    def rows(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch sizes s (N,) and the rows (N, max s) of every agent's batch: agent k's examples
        (global rows) are the first s_k entries of row k."""
        epoch, t = divmod(iteration, self.rounds_per_epoch)
        start = t * self.batch_sizes
        sizes = np.minimum(self.batch_sizes, self.n_train - start)
        order = self.order(epoch)
        if (start == start[0]).all() and (sizes == sizes[0]).all():  # one slice for all
            return sizes, order[:, start[0] : start[0] + sizes[0]]
        position = start[:, None] + np.arange(int(sizes.max()))[None, :]
        return sizes, np.take_along_axis(order, np.minimum(position, order.shape[1] - 1), axis=1)


# --------------------------------------------------------------------------------------------
# Batched evaluation of many models


class BatchedForward(ABC):
    """Evaluates G models of one architecture at once, each on its own inputs."""

    shares_inputs: bool = False  # consecutive models with the same input are evaluated together

    @abstractmethod
    def __call__(self, params: Tensor, x: Tensor, index: Tensor) -> Tensor:
        """Logits (G, B, C) of model g (row g of ``params`` (G, P)) on inputs ``x[index[g]]``,
        where ``x`` is (A, B, *input_shape) and ``index`` (G,) long."""


def _parameter_layout(module: nn.Module) -> dict[str, tuple[int, torch.Size]]:
    """name -> (offset, shape) of each parameter in the flat vector."""
    layout, offset = {}, 0
    for name, parameter in module.named_parameters():
        layout[name] = (offset, parameter.shape)
        offset += parameter.numel()
    return layout


def _slice(params: Tensor, place: tuple[int, torch.Size]) -> Tensor:
    offset, shape = place
    return params[:, offset : offset + math.prod(shape)].unflatten(1, shape)


class VmapForward(BatchedForward):
    """Any module: ``torch.func.vmap`` of ``functional_call`` over the rows of ``params``."""

    def __init__(self, module: nn.Module) -> None:
        layout = _parameter_layout(module)
        buffers = dict(module.named_buffers())

        def one(params: Tensor, x: Tensor) -> Tensor:
            tensors = {
                name: params[offset : offset + math.prod(shape)].view(shape)
                for name, (offset, shape) in layout.items()
            }
            return functional_call(module, (tensors, buffers), (x,))

        self._batched = vmap(one)

    def __call__(self, params: Tensor, x: Tensor, index: Tensor) -> Tensor:
        return self._batched(params, x.index_select(0, index))


_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,  # the identity: modules are evaluated in eval mode
)
_POOLING = (nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class _Layer:
    module: nn.Module
    weight: tuple[int, torch.Size] | None = None
    bias: tuple[int, torch.Size] | None = None


def _leaves(module: nn.Module) -> list[nn.Module]:
    if type(module) is nn.Sequential:
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


class LayerwiseForward(BatchedForward):
    """A ``torch.nn.Sequential`` (or one layer) evaluated layer by layer for G models at once.

    Images of the G models travel as one (B, G*C, H, W) tensor in channels-last layout, so that
    the G models' 2-d convolutions are one grouped convolution (groups = G) and pooling and
    element-wise layers apply unchanged; ``Flatten`` turns them into (G, B, F) features, on which
    the G models' linear layers are one batched matrix product: y_g = x_g W_g^T + b_g.
    """

    def __init__(self, layers: list[_Layer], image_input: bool) -> None:
        self.layers, self.image_input = layers, image_input
        self.shares_inputs = type(layers[0].module) is nn.Linear
        self.logistic = len(layers) == 1 and self.shares_inputs  # one linear layer, nothing else

    @classmethod
    def build(cls, module: nn.Module, input_shape: tuple[int, ...]) -> LayerwiseForward | None:
        """The layer-wise plan of ``module`` for inputs of ``input_shape``, or None when the
        module is not a Sequential of supported layers in a supported order."""
        if len(input_shape) not in (1, 3):
            return None
        layout = _parameter_layout(module)
        place = {id(p): layout[name] for name, p in module.named_parameters()}
        image = len(input_shape) == 3
        layers = []
        for leaf in _leaves(module):
            kind = type(leaf)  # exact types: a subclass may change forward
            if kind is nn.Conv2d:
                if not image or leaf.groups != 1 or leaf.padding_mode != "zeros":
                    return None
            elif kind is nn.Linear:
                if image:
                    return None
            elif kind is nn.Flatten:
                if (leaf.start_dim, leaf.end_dim) != (1, -1):
                    return None
                image = False
            elif kind in _POOLING:
                if not image or getattr(leaf, "return_indices", False):
                    return None
            elif kind not in _ELEMENTWISE:
                return None
            weight, bias = getattr(leaf, "weight", None), getattr(leaf, "bias", None)
            layers.append(
                _Layer(
                    leaf,
                    None if weight is None else place[id(weight)],
                    None if bias is None else place[id(bias)],
                )
            )
        if image:
            return None  # the output must be (G, B, C) logits
        return cls(layers, len(input_shape) == 3)

    def __call__(self, params: Tensor, x: Tensor, index: Tensor) -> Tensor:
        groups = len(index)
        layers = self.layers
        if self.image_input:
            # (A, B, C, H, W) -> (B, H, W, G, C), gathering model g's inputs: one copy
            gathered = x.permute(1, 3, 4, 0, 2).index_select(3, index)
            batch, height, width = gathered.shape[:3]
            h = gathered.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        elif self.shares_inputs and (shared := _runs(index)) is not None:
            h = _linear_on_shared_inputs(params, x, layers[0], *shared)
            layers = layers[1:]
        else:
            h = _take(x, index)
        return self._apply(layers, params, h, groups)

    def logistic_gradients(self, params: Tensor, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        """(G, P) gradients of the mean cross-entropy of a lone linear layer z = W x + b (model g
        on inputs ``x[index[g]]`` (B, F), labels ``y[index[g]]``), in closed form:

            dl/dz_i = (softmax(z_i) - e_{y_i}) / B,
            dl/dW = sum_i dl/dz_i x_i^T,   dl/db = sum_i dl/dz_i."""
        assert self.logistic
        layer = self.layers[0]
        assert layer.weight is not None
        inputs = _take(x, index)
        weight = _slice(params, layer.weight)  # (G, C, F)
        # logits class-major, (G, C, B): the softmax then reduces along contiguous rows
        if layer.bias is None:
            delta = torch.bmm(weight, inputs.transpose(1, 2))
        else:
            bias = _slice(params, layer.bias).unsqueeze(2)
            delta = torch.baddbmm(bias, weight, inputs.transpose(1, 2))
        delta = torch.softmax(delta, 1)
        labels = y.index_select(0, index).unsqueeze(1)
        delta.scatter_add_(1, labels, delta.new_full(labels.shape, -1.0)).div_(x.shape[1])
        out = params.new_empty(params.shape)
        _slice(out, layer.weight).copy_(torch.bmm(delta, inputs))
        if layer.bias is not None:
            _slice(out, layer.bias).copy_(delta.sum(2))
        return out

    def on_all_inputs(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits (G, A * B, C) of every model g on every input of ``x`` (A, B, F), for a plan
        whose first layer is linear: that layer is one matrix product for all G models,
        (A * B, F) x (F, G * O), so the inputs are read once whatever the number of models."""
        assert self.shares_inputs
        first = self.layers[0]
        assert first.weight is not None
        groups = params.shape[0]
        weight = _slice(params, first.weight).flatten(0, 1)  # (G * O, F)
        inputs = x.reshape(-1, x.shape[-1]).T
        if first.bias is None:
            h = weight @ inputs
        else:
            h = torch.addmm(_slice(params, first.bias).flatten()[:, None], weight, inputs)
        # (G, A * B, O) as a view of the (G, O, A * B) product: reductions over the O outputs
        # (a few classes) then run along contiguous rows, several times faster
        h = h.unflatten(0, (groups, -1)).transpose(1, 2)
        return self._apply(self.layers[1:], params, h, groups)

    def _apply(self, layers: list[_Layer], params: Tensor, h: Tensor, groups: int) -> Tensor:
        """Run ``layers`` of the G models on h: (B, G * C, H, W) images or (G, B, F) features."""
        image = self.image_input and h.dim() == 4
        for layer in layers:
            module = layer.module
            if isinstance(module, nn.Conv2d):
                assert layer.weight is not None
                weight = _slice(params, layer.weight).flatten(0, 1)
                bias = None if layer.bias is None else _slice(params, layer.bias).flatten()
                h = F.conv2d(
                    h,
                    weight.contiguous(memory_format=torch.channels_last),
                    bias,
                    module.stride,
                    module.padding,
                    module.dilation,
                    groups,
                )
            elif isinstance(module, nn.Linear) and layer is self.layers[-1]:
                # the logits class-major, (G, C, B), returned as a (G, B, C) view: reductions
                # over the few classes (softmax, cross-entropy) then run along contiguous rows
                assert layer.weight is not None
                weight = _slice(params, layer.weight)
                if layer.bias is None:
                    h = torch.bmm(weight, h.transpose(1, 2)).transpose(1, 2)
                else:
                    bias = _slice(params, layer.bias).unsqueeze(2)
                    h = torch.baddbmm(bias, weight, h.transpose(1, 2)).transpose(1, 2)
            elif isinstance(module, nn.Linear):
                assert layer.weight is not None
                weight = _slice(params, layer.weight).transpose(1, 2)
                if layer.bias is None:
                    h = torch.bmm(h, weight)
                else:
                    h = torch.baddbmm(_slice(params, layer.bias).unsqueeze(1), h, weight)
            elif isinstance(module, nn.Flatten):
                if image:
                    batch, channels = h.shape[:2]
                    h = h.unflatten(1, (groups, channels // groups)).transpose(0, 1)
                    h = h.reshape(groups, batch, -1)
                    image = False
            elif type(module) is nn.ReLU and not torch.is_grad_enabled():
                h = h.relu_()  # in place when nothing is differentiated: one memory pass less
            else:
                h = module(h)
        return h


def _take(x: Tensor, index: Tensor) -> Tensor:
    """``x.index_select(0, index)``, as a view without a copy when ``index`` is a range
    a, a + 1, ..., a + n - 1 (as when every agent evaluates its own model on its own data)."""
    first = int(index[0])
    if bool((index == torch.arange(first, first + len(index), device=x.device)).all()):
        return x.narrow(0, first, len(index))
    return x.index_select(0, index)


def _runs(index: Tensor) -> tuple[Tensor, int] | None:
    """(values, d) when ``index`` is runs of one length d >= 2 (a1 x d, a2 x d, ...): models that
    share their inputs, as the messages received by one agent do. None otherwise."""
    values, counts = torch.unique_consecutive(index, return_counts=True)
    run = int(counts[0])
    if run < 2 or not bool((counts == run).all()):
        return None
    return values, run


def _linear_on_shared_inputs(
    params: Tensor, x: Tensor, layer: _Layer, values: Tensor, run: int
) -> Tensor:
    """A first linear layer y_g = x_a W_g^T + b_g for runs of ``run`` models sharing input a:
    one matrix product per run, (B, F) x (F, run * O), instead of copying x for every model."""
    assert layer.weight is not None
    weight = _slice(params, layer.weight)  # (G, O, F)
    groups, outputs, features = weight.shape
    stacked = weight.reshape(-1, run * outputs, features).transpose(1, 2)
    h = torch.bmm(_take(x, values), stacked)  # (A, B, run * O)
    h = h.unflatten(2, (run, outputs)).transpose(1, 2).reshape(groups, -1, outputs)
    if layer.bias is not None:
        h = h + _slice(params, layer.bias).unsqueeze(1)
    return h


def activation_size(
    module: nn.Module, input_shape: tuple[int, ...], include_input: bool = True
) -> int:
    """The largest number of floats per example among the input (unless ``include_input`` is
    False) and every submodule's output."""
    sizes = [math.prod(input_shape) if include_input else 1]

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            sizes.append(output[0].numel())

    hooks = [m.register_forward_hook(record) for m in module.modules()]
    try:
        with torch.no_grad():
            module(next(module.parameters()).new_zeros((1, *input_shape)))
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes)


def batched_forward(module: nn.Module, input_shape: tuple[int, ...]) -> BatchedForward:
    """The layer-wise plan when ``module`` is a supported layer or a ``Sequential`` of supported
    layers (exact types: a subclass may change ``forward``), else ``torch.func.vmap``."""
    return LayerwiseForward.build(module, input_shape) or VmapForward(module)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """CE(z, y) = log sum_c exp(z_c - z_y) for every example: logits (..., C), labels (...).

    The label's logit is subtracted before the sum, never after: log sum_c exp(z_c) - z_y
    cancels to 0 once |z| is so large that log C is below its rounding error (a constant model
    with logits near 1e20 would then score 0, the best possible loss). This form is exact up to
    rounding for any finite logits and never negative (the term c = y is exp(0) = 1); it is +inf
    (never NaN) when a logit or a difference of logits overflows, and such a loss marks a model
    that cannot be scored. (``torch.logsumexp`` is several times faster than ``log_softmax``
    for a few classes.)"""
    label_logit = logits.gather(-1, labels.unsqueeze(-1))
    return torch.nan_to_num(torch.logsumexp(logits - label_logit, -1), nan=torch.inf)


SOUND_LOGIT_ERROR = 1e-3
"""The largest rounding error a score may carry: logits z are rounded to |z| * eps, so a loss
computed from logits with max |z| > SOUND_LOGIT_ERROR / eps (about 8e3 in float32, 4.5e12 in
float64) is uncertain by more than a thousandth of a nat."""


def score_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """The cross-entropy of a received model's logits, as a score: ``cross_entropy``, and +inf
    where the logits are too large for it to be sound (see ``SOUND_LOGIT_ERROR``). Such a model
    is unscorable: far from classifying better, it has lost all precision below its scale,
    and an agent that mixed it into its own model would lose its own with it."""
    limit = SOUND_LOGIT_ERROR / torch.finfo(logits.dtype).eps
    loss = cross_entropy(logits, labels)
    too_large = torch.linalg.vector_norm(logits, ord=float("inf"), dim=-1) > limit
    return loss.masked_fill_(too_large, torch.inf)


# --------------------------------------------------------------------------------------------
# Optimisers


OptimiserState = dict[str, Tensor]


class Optimiser(ABC):
    """A local step for many agents at once; its state is per (replica, agent)."""

    @abstractmethod
    def init_state(self, models: Tensor) -> OptimiserState:
        """The state of every agent of every replica before its first step."""

    @abstractmethod
    def step(
        self, params: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        """New parameters (R, L, P) of ``agents`` (L,) from their parameters and gradients
        (R, L, P); the state of the other agents is left as it is. ``state`` is not modified."""

    def apply(
        self, models: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        """All agents' models (R, N, P) after the step of ``agents`` (L,) with their gradients
        (R, L, P); the other agents' models are unchanged. ``models`` is not modified."""
        new, state = self.step(models.index_select(1, agents), grads, state, agents)
        return models.index_copy(1, agents, new), state


@dataclass(frozen=True)
class SGD(Optimiser):
    """Plain stochastic gradient descent: psi = w - lr * g."""

    lr: float

    def init_state(self, models: Tensor) -> OptimiserState:
        return {}

    def step(
        self, params: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        return params.sub(grads, alpha=self.lr), state

    def apply(
        self, models: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        return models.index_add(1, agents, grads, alpha=-self.lr), state


@dataclass(frozen=True)
class Adam(Optimiser):
    """Adam (Kingma and Ba), with the arithmetic of ``torch.optim.Adam``; every agent counts its
    own steps t_k for the bias corrections."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def init_state(self, models: Tensor) -> OptimiserState:
        steps = torch.zeros(models.shape[1], dtype=torch.long, device=models.device)
        return {"m": torch.zeros_like(models), "v": torch.zeros_like(models), "t": steps}

    def step(
        self, params: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        beta1, beta2 = self.betas
        m = state["m"].index_select(1, agents).lerp_(grads, 1 - beta1)
        v = state["v"].index_select(1, agents).mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        t = state["t"].index_select(0, agents) + 1
        power = t.to(params.dtype)[None, :, None]
        step_size = self.lr / (1 - torch.pow(beta1, power))
        denominator = (v.sqrt() / (1 - torch.pow(beta2, power)).sqrt()).add_(self.eps)
        new = params - step_size * m / denominator
        return new, {
            "m": state["m"].index_copy(1, agents, m),
            "v": state["v"].index_copy(1, agents, v),
            "t": state["t"].index_copy(0, agents, t),
        }


def make_optimiser(name: str, lr: float) -> Optimiser:
    """``"sgd"`` or ``"adam"`` with learning rate ``lr`` (Adam's other settings: torch's)."""
    if name == "sgd":
        return SGD(lr)
    if name == "adam":
        return Adam(lr)
    raise ValueError(f"unknown optimiser {name!r} (known: adam, sgd)")


# --------------------------------------------------------------------------------------------
# The case study


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
        step_probability: float | Sequence[float] = 1.0,
        groups: Sequence[int] | None = None,
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
            example = torch.as_tensor(data[0].x_train[:1], device=self.device).to(dtype)
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
        self._one_group = (self._long(np.zeros(n)), self._long(np.arange(n)))
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
                    if callable(getattr(module, "reset_parameters", None)):
                        module.reset_parameters()
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
            group_of, slot = self._one_group
        else:
            distinct, inverse = np.unique(sizes, return_inverse=True)
            size_groups = [(np.flatnonzero(inverse == g), int(n)) for g, n in enumerate(distinct)]
            position = np.zeros(self.n_agents, dtype=np.int64)
            for agents, _ in size_groups:
                position[agents] = np.arange(len(agents))
            group_of, slot = self._long(inverse), self._long(position)
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
        if len(batch.groups) == 1:
            selections: list[Tensor | None] = [None]
        else:
            group_of = batch.group_of.index_select(0, receivers)
            selections = [torch.nonzero(group_of == g).flatten() for g in range(len(batch.groups))]
        for group, chosen in zip(batch.groups, selections, strict=True):
            if chosen is None:
                sent, heard = messages, receivers
            elif not len(chosen):  # no message for this group's agents (e.g. attacked edges)
                continue
            else:
                sent, heard = messages.index_select(1, chosen), receivers.index_select(0, chosen)
            index = batch.slot.index_select(0, heard).repeat(replicas)
            params = sent.reshape(-1, size)
            shared = _runs(index) if self.forward.shares_inputs else None
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
