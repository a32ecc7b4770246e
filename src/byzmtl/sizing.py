"""A run's size against the machine, before it runs: what its settings plan (before anything is
built) and what was built, in the dimensions :mod:`byzmtl.resources` estimates memory and time
from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from byzmtl import resources
from byzmtl.config import RunConfig
from byzmtl.graph import Graph
from byzmtl.tasks import CaseStudy

if TYPE_CHECKING:
    from byzmtl.experiment import Experiment


def blamed(case: type[CaseStudy]) -> dict[str, str]:
    """The settings an estimate names: the case study's agents and rounds."""
    return {"agents": case.agents_setting, "rounds": case.rounds_setting}


def check_planned_size(
    config: RunConfig,
    case: type[CaseStudy],
    settings: Any,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    """Refuse, before anything is built, a run whose settings plan a size this machine cannot
    hold or finish (:mod:`byzmtl.resources`), where the case study knows it from its settings."""
    planned = case.planned_size(settings)
    if planned is None:
        return
    assert config.graph is not None
    size = resources.Size(
        agents=planned.agents,
        edges=resources.planned_edges(config.graph, planned.agents),
        parameters=planned.parameters,
        replicas=len(config.rules),
        rounds=planned.rounds,
        records=planned.rounds,
        statistics=3 + len(config.percentiles),
        itemsize=torch.finfo(dtype).bits // 8,
        device=str(device),
    )
    resources.check(size, blamed(case))


def size_of(experiment: Experiment) -> resources.Size:
    """The dimensions of a built experiment that decide its memory and time."""
    case, config = experiment.case, experiment.config
    sizes = getattr(case, "parameter_sizes", None)
    parameters = sum(sizes) if sizes else int(case.init_models(1).shape[-1])
    return resources.Size(
        agents=case.n_agents,
        edges=experiment.graph.n_edges  # a partitioned run's rank: the edges it holds
        if isinstance(experiment.graph, Graph)
        else experiment.graph.n_own_edges,
        parameters=parameters,
        replicas=len(experiment.rules),
        rounds=case.n_rounds,
        records=case.n_records,
        metrics=len(case.metric_names),
        subsets=1 + len(case.group_names),
        statistics=3 + len(config.percentiles),
        itemsize=torch.finfo(experiment.simulation.dtype).bits // 8,
        device=str(experiment.simulation.device),
    )


def check_built_size(experiment: Experiment) -> None:
    """Refuse a built experiment this machine cannot hold or finish (:mod:`byzmtl.resources`)."""
    resources.check(size_of(experiment), blamed(type(experiment.case)))
