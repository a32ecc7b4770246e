"""Learning case studies: every agent trains its own copy of one ``torch.nn.Module``.

The models of all agents are rows of one (replicas, agents, P) tensor of flat parameter vectors:
the module's parameters in ``named_parameters`` order, each flattened, concatenated. On its
mini-batch (x_k, y_k) of b_k examples, the loss of any model w for agent k is the mean
cross-entropy

    l_k(w) = (1 / b_k) sum_i CE(f(w; x_ki), y_ki),    CE(z, y) = log sum_c exp(z_c) - z_y.

Each round, for every agent k of every replica:

- adapt, with probability p_k (the "less data" schedule; otherwise psi_k = w_k and the optimiser
  state of k is left alone): one step of SGD or Adam on l_k (:mod:`.optim`);
- score: l_k(m_lk) for every message m_lk received by k, on k's batch of this round, which k draws
  whether or not it learns.

Which examples each agent takes in a round, and when an epoch ends: :mod:`.data`.

Metrics, after the last round of every epoch, for every agent: ``train_loss`` and ``test_loss``,
the mean cross-entropy of w_k over its evaluation training examples (the first ``eval_train`` of
its training set, all by default) and over its test examples, and ``accuracy``, its fraction of
correctly classified test examples.

Vectorisation (:mod:`.forward`): G models, each applied to its own inputs, are evaluated in one
call per distinct batch size of the round, split further only to keep each layer's output within
an activation budget (``ACTIVATION_BUDGET``): a memory bound, which on a CPU is also the fastest
choice (for the paper's CNN, about 160 images per call stay in cache). On a dense graph the
engine asks for the losses of all pairs (:meth:`NeuralCase.sender_losses`): for a model whose
first layer is linear, every batch of the round goes through every model's first layer in one
matrix product.

The package's files, one job each: :mod:`.data` (agents' examples and the schedule),
:mod:`.forward` (batched models), :mod:`.losses` (cross-entropy as loss and as score),
:mod:`.optim` (local steps), :mod:`.case` (the case study).
"""

from byzmtl.tasks.neural.case import ACTIVATION_BUDGET, NeuralCase, NeuralSettings
from byzmtl.tasks.neural.data import AgentData, NeuralBatch, Schedule, SizeGroup, cyclic
from byzmtl.tasks.neural.forward import (
    BatchedForward,
    LayerwiseForward,
    VmapForward,
    activation_size,
    batched_forward,
)
from byzmtl.tasks.neural.losses import SOUND_LOGIT_ERROR, cross_entropy, score_cross_entropy
from byzmtl.tasks.neural.optim import SGD, Adam, Optimiser, OptimiserState, make_optimiser

__all__ = [
    "ACTIVATION_BUDGET",
    "SGD",
    "SOUND_LOGIT_ERROR",
    "Adam",
    "AgentData",
    "BatchedForward",
    "LayerwiseForward",
    "NeuralBatch",
    "NeuralCase",
    "NeuralSettings",
    "Optimiser",
    "OptimiserState",
    "Schedule",
    "SizeGroup",
    "VmapForward",
    "activation_size",
    "batched_forward",
    "cross_entropy",
    "cyclic",
    "make_optimiser",
    "score_cross_entropy",
]
