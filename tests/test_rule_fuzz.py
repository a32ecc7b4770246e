"""Every registered rule, fed anything Byzantine senders can send, keeps normal agents finite.

Over several rounds with the rule's state carried over, on random small graphs, in float32 and
float64: messages mix NaN, +-Inf, values near the largest float, huge, denormal and zero
coordinates per edge and per coordinate (built as the engine builds them: non-finite messages
zeroed and flagged), losses mix 0, denormals, huge values and +inf. Whatever the attack, and
beyond any rule's tolerance, the new models must be finite and the edge weights (where a rule has
them) finite, >= 0, summing to one per receiver, 0 on non-finite messages and, for the loss
filter, 0 on filtered senders.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzmtl import graph as graphs
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.rules import RULES, RuleAssumptionError, RuleInputs
from byzmtl.rules.base import Rule
from byzmtl.rules.loss import LossBased

DTYPES = [torch.float32, torch.float64]
ROUNDS = 3


def special_values(dtype: torch.dtype) -> list[float]:
    """Coordinates an attacker may send: non-finite, at the edges of the range, and ordinary."""
    info = torch.finfo(dtype)
    huge = 1e38 if dtype == torch.float32 else 1e300
    big = 1e20 if dtype == torch.float32 else 1e160  # squares overflow, values do not
    denormal = info.tiny * info.eps
    signed = [np.inf, huge, info.max, big, info.tiny, denormal, 1.0, 3.5]
    return [np.nan, 0.0, *signed, *(-v for v in signed)]


def loss_values(dtype: torch.dtype) -> list[float]:
    info = torch.finfo(dtype)
    return [0.0, info.tiny * info.eps, info.tiny, 1e-3, 0.5, 2.0, 1e30, info.max, np.inf]


PARAMETER_CHOICES = {  # parameters that move accumulated scores towards underflow
    "nu": [0.5, 1.0 - 2.0**-50],
    "r0": [1e-300],
}


TOLERANCES = ("f", "b")  # the numbers of Byzantine neighbours a rule is told to tolerate


def fitting_rule(name: str, edges: Neighbourhoods, overrides: dict) -> Rule:
    """The rule with ``overrides``, its tolerance parameters lowered step by step until
    ``check`` accepts the graph; failing that, the test fails (never skips)."""
    params = dict(overrides)
    defaults = RULES.parameters(name)
    while True:
        rule = RULES.create(name, params)
        try:
            rule.check(edges)
            return rule
        except RuleAssumptionError:
            lowerable = [k for k in TOLERANCES if k in defaults and params.get(k, defaults[k]) > 0]
            if not lowerable:
                raise
            params[lowerable[0]] = params.get(lowerable[0], defaults[lowerable[0]]) - 1


@st.composite
def networks(draw: st.DrawFn) -> graphs.Graph:
    """A complete graph or a sparse directed one, 3 to 12 agents, every agent hearing at least
    two others."""
    n = draw(st.integers(3, 12))
    if draw(st.booleans()):
        return graphs.complete(n)
    receivers, senders = [], []
    for k in range(n):
        others = [m for m in range(n) if m != k]
        heard = draw(st.lists(st.sampled_from(others), min_size=2, max_size=4, unique=True))
        receivers += [k] * len(heard)
        senders += heard
    return graphs.from_edges(n, np.array(receivers), np.array(senders))


@dataclasses.dataclass(frozen=True)
class Attack:
    """What the attacked edges of a run carry: a share of the edges, the kinds of message
    (1: per-coordinate special values drawn from ``palette``, 2: the sender's model times a
    huge or tiny factor, 3: the receiver's previous model nudged by a denormal, IPM-like)."""

    rate: float
    kinds: tuple[int, ...]
    palette: tuple[float, ...]


@st.composite
def attacks(draw: st.DrawFn, dtype: torch.dtype) -> Attack:
    kinds = draw(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=3, unique=True))
    specials = special_values(dtype)
    palette = draw(st.lists(st.sampled_from(specials), min_size=1, max_size=4, unique=True))
    return Attack(draw(st.sampled_from([0.3, 0.7, 1.0])), tuple(kinds), tuple(palette))


def one_round(
    rng: np.random.Generator,
    edges: Neighbourhoods,
    previous: torch.Tensor,
    attack: Attack,
    dtype: torch.dtype,
) -> RuleInputs:
    """One round's inputs as the engine builds them: honest psi moderate, the receiver's own
    message its psi, every other edge attacked at ``attack.rate`` (see :class:`Attack`)."""
    n, d = previous.shape
    psi = torch.as_tensor(rng.uniform(-10, 10, (n, d)), dtype=dtype)
    messages = psi.index_select(0, edges.senders).clone()
    attacked = (rng.random(edges.n_edges) < attack.rate) & ~edges.is_self.numpy()
    kinds = np.where(attacked, rng.choice(attack.kinds, edges.n_edges), 0)
    specials = np.array(attack.palette)
    factors = np.array([1e30, -1e38, 1e-30, 1e300, -1e300])
    nudge = torch.finfo(dtype).tiny * torch.finfo(dtype).eps
    for e in np.flatnonzero(kinds):
        if kinds[e] == 1:
            messages[e] = torch.as_tensor(rng.choice(specials, d), dtype=dtype)
        elif kinds[e] == 2:
            messages[e] = (messages[e].double() * rng.choice(factors)).to(dtype)
        else:
            messages[e] = previous[int(edges.receivers[e])] + nudge
    finite = torch.isfinite(messages).all(1)
    messages = messages.masked_fill(~finite[:, None], 0.0)
    losses = rng.choice(np.array(loss_values(dtype)), edges.n_edges)
    losses = torch.as_tensor(losses, dtype=dtype).masked_fill(~finite, torch.inf)
    return RuleInputs(edges, messages, finite, bool(finite.all()), previous, psi, losses, 0)


def check_round(rule: Rule, x: RuleInputs, models: torch.Tensor, weights, state) -> None:
    assert torch.isfinite(models).all(), f"non-finite models {models}"
    if weights is None:
        return
    edges = x.edges
    assert torch.isfinite(weights).all() and (weights >= 0).all(), f"weights {weights}"
    totals = edges.sum_per_receiver(weights.double())
    tolerance = 1e-5 if weights.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(totals, torch.ones_like(totals), rtol=0, atol=tolerance)
    assert (weights[~x.finite] == 0).all(), "weight on a non-finite message"
    if isinstance(rule, LossBased):
        r = state.edges["r"]
        own = r.index_select(0, edges.receiver_self_edge)
        filtered = ~(r <= own) | (~(own < torch.inf) & ~edges.is_self)
        assert (weights[filtered] == 0).all(), "weight on a filtered sender"


def run_rounds(data, name: str, dtype: torch.dtype) -> None:
    edges = Neighbourhoods.from_graph(data.draw(networks(), label="graph"))
    defaults = RULES.parameters(name)
    overrides = {
        key: data.draw(st.sampled_from([defaults[key], *choices]), label=key)
        for key, choices in PARAMETER_CHOICES.items()
        if key in defaults
    }
    rule = fitting_rule(name, edges, overrides)
    d = data.draw(st.integers(1, 4), label="coordinates")
    attack = data.draw(attacks(dtype), label="attack")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    previous = torch.zeros(edges.n_agents, d, dtype=dtype)
    state = rule.init_state(edges, dtype)
    for _ in range(ROUNDS):
        x = one_round(rng, edges, previous, attack, dtype)
        if not rule.needs_losses:
            x = dataclasses.replace(x, losses=None)
        out, state = rule.step(x, state)
        check_round(rule, x, out.models, out.weights, state)
        previous = out.models


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", RULES.names())
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_rule_keeps_models_finite_and_weights_a_distribution(data, name, dtype) -> None:
    with torch.inference_mode():
        run_rounds(data, name, dtype)
