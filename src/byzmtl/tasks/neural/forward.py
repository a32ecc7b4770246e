"""Batched evaluation of G models of one architecture, each applied to its own inputs.

G models are evaluated in one call, with no per-agent or per-edge Python logic. A
``torch.nn.Sequential`` of linear, 2-d convolution, pooling, flatten and element-wise layers is
evaluated layer by layer with batched kernels (:class:`LayerwiseForward`: one grouped convolution
in channels-last layout for the G models' convolutions, one batched matrix product for their
linear layers); any other module goes through ``torch.func.vmap`` over ``functional_call``
(:class:`VmapForward`).

Two shortcuts for models whose first layer is linear. Every batch of a round can go through every
model's first layer in one matrix product, (examples of all batches) x (all models' weights), so
each input is read once rather than once per edge (:meth:`LayerwiseForward.on_all_inputs`; HAR:
900 losses per round from one (180 x 561) x (561 x 300) product). And a lone linear layer
(multinomial logistic regression) takes its local step with the closed-form gradient of the mean
cross-entropy (:meth:`LayerwiseForward.logistic_gradients`), without automatic differentiation.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from byzmtl.ops import branches_freely


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
_MAY_ALIAS = (nn.Flatten, nn.Identity, nn.Dropout)  # output may be (a view of) the input


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
        elif self.shares_inputs and (shared := input_runs(index)) is not None:
            h = _linear_on_shared_inputs(params, x, layers[0], *shared)
            layers = layers[1:]
        else:
            return self._apply(layers, params, _take(x, index), groups, owned=False)
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

    def _apply(
        self, layers: list[_Layer], params: Tensor, h: Tensor, groups: int, owned: bool = True
    ) -> Tensor:
        """Run ``layers`` of the G models on h: (B, G * C, H, W) images or (G, B, F) features.

        ``owned``: h is (a view of) a tensor this forward pass created, so layers may overwrite
        it; when it is not (a view of the caller's inputs: stored examples), nothing is written
        into it, and the first layer that creates a tensor makes h owned."""
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
                # in place on our own tensor when nothing is differentiated: one pass less
                h = h.relu_() if owned else h.relu()
            else:
                if not owned and getattr(module, "inplace", False):
                    h = h.clone()  # a layer built with inplace=True writes into its input
                h = module(h)
            owned = owned or not isinstance(module, _MAY_ALIAS)
        return h


def _take(x: Tensor, index: Tensor) -> Tensor:
    """``x.index_select(0, index)``, as a view without a copy when ``index`` is a range
    a, a + 1, ..., a + n - 1 (as when every agent evaluates its own model on its own data),
    decided on the CPU only (on an accelerator the check would read from the device)."""
    if not branches_freely(index):
        return x.index_select(0, index)
    first = int(index[0])
    if bool((index == torch.arange(first, first + len(index), device=x.device)).all()):
        return x.narrow(0, first, len(index))
    return x.index_select(0, index)


def input_runs(index: Tensor) -> tuple[Tensor, int] | None:
    """(values, d) when ``index`` is runs of one length d >= 2 (a1 x d, a2 x d, ...): models that
    share their inputs, as the messages received by one agent do. None otherwise, and always
    None on an accelerator, where finding the runs would read from the device (the models then
    take copies of their inputs: the same results up to rounding)."""
    if not branches_freely(index):
        return None
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
