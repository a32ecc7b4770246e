"""From a run configuration to results: build every piece, run the engine, summarise.

    result = byzmtl.run({"case": "target-localization", "attackers": 20})
    result.metrics            # pandas DataFrame: rule, group, iteration, loss_mean, ...
    result.summary["rules"]["loss"]["final"]["loss"]["mean"]
    result.save("runs/demo")  # config.toml, metrics.csv, summary.json, figure.png, network.png

Everything is built and validated before the first round, so a bad configuration fails at once
with a :class:`~byzmtl.config.ConfigError` naming the field, and nothing is written: the rules'
and attack's parameters first (recorded as their declared types made them), then every number
against the run's dtype, the run's planned size against the machine (:mod:`byzmtl.resources`),
the case study, the graph, the simulation, and the built size again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from byzmtl import graph as graphs
from byzmtl import rng
from byzmtl.attacks import ATTACKS, Attack, AttackAssumptionError
from byzmtl.checkpoints import CheckpointFolder, Snapshot, send_part
from byzmtl.config import ConfigError, GraphSettings, RunConfig, parse
from byzmtl.datasets.errors import DatasetError
from byzmtl.determinism import deterministic_algorithms, use_deterministic_cublas
from byzmtl.engine import AttackOutputError, RoundOutput, SimState, Simulation
from byzmtl.engine.partition import (
    PartitionedSimulation,
    built_part,
    can_partition,
    can_partition_run,
    own_part,
)
from byzmtl.engine.ranks import AgreedFailure, Ranks
from byzmtl.graph_part import DrawnEdges, GraphPart, PartOutline, drawn_edges
from byzmtl.ops import host_copy
from byzmtl.outcome import Result, summarise
from byzmtl.recording import Diagnostics, Recorder, WeightSums
from byzmtl.registry import RegistryError
from byzmtl.rules import RULES, Rule, RuleAssumptionError
from byzmtl.sizing import check_built_size, check_planned_size
from byzmtl.tasks import CASES, CaseError, CaseStudy

if TYPE_CHECKING:  # imported where used: a run from the command line needs neither
    import networkx as nx


@dataclass
class Experiment:
    """Every piece of one run, built and validated. A rank of a partitioned run holds nothing
    per agent of the whole network but ``groups`` and ``byzantine``: its ``case`` is the case
    study of its own agents (the engine's task) and its ``graph`` its part's outline."""

    config: RunConfig  # resolved: every default filled in
    case: CaseStudy
    graph: graphs.Graph | PartOutline  # a partitioned run's rank: its part's outline
    byzantine: np.ndarray  # sorted agent ids
    rules: list[Rule]
    attack: Attack
    simulation: Simulation
    # what the network figure is drawn from: the graph, or on a partitioned run's rank the
    # edges among the drawn agents, reduced from every rank's part
    drawn: graphs.Graph | DrawnEdges
    groups: np.ndarray  # (N,) every agent's task group (the whole case study's groups)
    setup_seconds: float = 0.0  # time spent building and validating all of the above

    @property
    def normal(self) -> np.ndarray:
        """(N,) bool: the agent follows the protocol."""
        normal = np.ones(self.graph.n_agents, dtype=bool)
        normal[self.byzantine] = False
        return normal


def build_graph(
    settings: GraphSettings, case: CaseStudy, seed: int, given: nx.Graph | None = None
) -> graphs.Graph:
    """The communication graph of ``case`` described by ``settings`` (``given``: the networkx
    graph of kind ``graphml`` or ``networkx``). Node ids of a user's graph are the agent ids."""
    n = case.n_agents
    if settings.kind == "geometric":
        positions = _geometric_positions(case, seed)
        return graphs.geometric(
            positions, settings.radius, settings.max_neighbours, seed, case.keys
        )
    if settings.kind == "complete":
        built = graphs.complete(n)
    elif settings.kind == "ring":
        built = graphs.ring(n, settings.hops)
    elif settings.kind == "erdos-renyi":
        built = graphs.erdos_renyi(n, settings.p, seed)
    elif settings.kind == "k-regular":
        built = graphs.k_regular(n, settings.k, seed)
    elif settings.kind == "edgelist":
        if settings.path is None:
            raise graphs.GraphError("an edgelist graph needs a path")
        built = graphs.read_edge_list(settings.path, n, settings.directed)
    else:
        assert given is not None
        built = graphs.from_networkx(given)
        if built.n_agents != n:
            raise graphs.GraphError(
                f"the graph has {built.n_agents} nodes, the case has {n} agents (task.agents)"
            )
    return graphs.Graph(n, built.receivers, built.senders, case.positions)


def _geometric_positions(case: CaseStudy, seed: int) -> np.ndarray:
    """The agents' places on a geometric graph: the case study's, or uniform in a square of
    side 3 sqrt(N / 100) (the paper's density)."""
    if case.positions is not None:
        return case.positions
    n = case.n_agents
    return np.sqrt(n / 100.0) * 3.0 * rng.uniform(seed, "position", case.keys, 0, 2)


def _partitioned_graph(
    settings: GraphSettings, case: CaseStudy, seed: int, ranks: Ranks
) -> GraphPart:
    """This rank's part of the geometric graph of ``settings``, built per range of receivers
    (:func:`byzmtl.engine.partition.built_part`): the whole graph's edges are never held.
    Collective."""
    positions = _geometric_positions(case, seed)

    def build(agents: slice) -> np.ndarray:
        return graphs.geometric_keys(
            positions, settings.radius, settings.max_neighbours, seed, case.keys, agents
        )

    return built_part(case.n_agents, build, positions, ranks)


def _user_graph(config: RunConfig, given: nx.Graph | None) -> nx.Graph | None:
    """The networkx graph a user gave (from Python, or as a GraphML file), if any."""
    assert config.graph is not None
    kind = config.graph.kind
    if kind == "networkx" and given is None:
        raise ConfigError(
            "graph: kind 'networkx' takes the graph from Python, byzmtl.run(config, graph=G); "
            "to run it from a file, save it with networkx.write_graphml and use kind 'graphml'"
        )
    if kind == "graphml":
        if config.graph.path is None:
            raise ConfigError("graph: a graphml graph needs a path")
        try:
            return graphs.read_graphml(config.graph.path)
        except graphs.GraphError as error:
            raise ConfigError(f"graph: {error}") from None
    return given if kind == "networkx" else None


def _with_graph_groups(config: RunConfig, given: nx.Graph | None) -> RunConfig:
    """``config`` with ``task.groups`` taken from the node attribute ``group`` of the user's
    graph, where it has one."""
    if given is None:
        return config
    try:
        groups = graphs.node_groups(given)
    except graphs.GraphError as error:
        raise ConfigError(f"graph: {error}") from None
    if groups is None:
        return config
    if "groups" not in CASES.get(config.case).settings_model.model_fields:
        raise ConfigError(
            f"graph: its nodes' 'group' attribute would set the task groups, but the "
            f"{config.case} case study fixes them by its data"
        )
    stated = config.task.get("groups")
    if stated is not None and stated != groups:
        raise ConfigError(
            "task.groups: the graph's node attribute 'group' gives other groups; keep one"
        )
    return config.model_copy(update={"task": {**config.task, "groups": groups}})


def _rule_params(config: RunConfig, name: str) -> dict[str, Any]:
    params = dict(config.rule_params.get(name, {}))
    for shared in RULES.get(name).shared_settings:
        params.setdefault(shared, getattr(config, shared))
    return params


def prepare(config: RunConfig | Mapping[str, Any], graph: nx.Graph | None = None) -> Experiment:
    """Build and validate every piece of a run; raises :class:`ConfigError` naming the field.
    ``graph``: a networkx graph whose nodes 0..n-1 are the agents (their node attribute
    ``group``, if any, gives each agent's task group)."""
    started = time.perf_counter()
    if graph is not None:
        data = config.model_dump() if isinstance(config, RunConfig) else dict(config)
        if data.get("graph") not in (None, {"kind": "networkx"}):
            raise ConfigError("graph: give the graph in the configuration or from Python, not both")
        config = {**data, "graph": {"kind": "networkx"}}
    config = (config if isinstance(config, RunConfig) else parse(dict(config))).resolved()
    given = _user_graph(config, graph)
    config = _with_graph_groups(config, given)
    case_class = CASES.get(config.case)
    settings = case_class.settings_model.model_validate(config.task)
    config, rules, attack = _plugins(config)
    dtype = getattr(torch, str(config.dtype))
    _check_representable(config, dtype)
    try:
        device = torch.device(config.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise ConfigError(f"device: {config.device!r} is not available ({error})") from None
    check_planned_size(config, case_class, settings, dtype, device)
    if config.deterministic:
        use_deterministic_cublas(device)
    try:
        case = case_class.from_settings(settings, config.seed, dtype, str(device))
    except CaseError as error:
        raise ConfigError(str(error)) from None
    except DatasetError as error:  # the files of the case's data setting, where it has one
        named = "data_dir" in case_class.settings_model.model_fields
        raise DatasetError(f"{'task.data_dir' if named else 'task'}: {error}") from None
    assert config.graph is not None
    byzantine = _byzantine(config, case)
    sharding = {} if config.shard_edges is None else {"shard_edges": config.shard_edges}
    ranks = _ranks(config.procs)
    built: graphs.Graph | GraphPart | None = None
    try:
        if (
            ranks is not None
            and config.graph.kind == "geometric"
            and can_partition_run(case, attack, byzantine, ranks.world)
        ):  # each rank builds the edges into its own receivers only
            built = _partitioned_graph(config.graph, case, config.seed, ranks)
            built = built if can_partition(case, built, attack, byzantine, ranks.world) else None
        if built is None:
            built = build_graph(config.graph, case, config.seed, given)
    except graphs.GraphError as error:
        raise ConfigError(f"graph: {error}") from None
    partitioned = ranks is not None and can_partition(case, built, attack, byzantine, ranks.world)
    if partitioned and isinstance(built, graphs.Graph):  # built whole: the rank keeps its part
        assert ranks is not None
        built = own_part(built, ranks)
    try:
        if partitioned:
            assert ranks is not None
            simulation: Simulation = PartitionedSimulation(  # each rank holds its agents only
                case, built, rules, attack, byzantine, config.seed, ranks, case.keys, dtype,
                device, **sharding,
            )  # fmt: skip
        else:
            assert isinstance(built, graphs.Graph)  # a part is built only where it is used
            simulation = Simulation(
                case, built, rules, attack, byzantine, config.seed, case.keys, dtype, device,
                **sharding,
            )  # fmt: skip
            simulation.ranks = ranks  # procs > 1: shards split over the group's ranks (stage 1)
    except (RuleAssumptionError, AttackAssumptionError, AgreedFailure) as error:
        raise _assumption_error(error) from None
    drawn: graphs.Graph | DrawnEdges
    groups = case.groups
    if isinstance(built, GraphPart):
        assert ranks is not None
        drawn = drawn_edges(built.n_agents, ranks.gathered(built.drawn_piece()), built.positions)
    else:
        drawn = built
    del built  # a rank's engine holds its part's edges; the part goes
    if isinstance(simulation, PartitionedSimulation):
        groups = groups.astype(np.min_scalar_type(max(len(case.group_names) - 1, 0)))
        case = own_case(case, simulation.task)  # the whole one's arrays go
    graph = simulation.graph
    experiment = Experiment(
        config, case, graph, byzantine, rules, attack, simulation, drawn, groups
    )
    check_built_size(experiment)
    experiment.setup_seconds = time.perf_counter() - started
    return experiment


def own_case(case: CaseStudy, task: object) -> CaseStudy:
    """What a partitioned run's rank keeps as its case study: its engine's task, ``case``
    restricted to the rank's agents, which must be a case study again."""
    if not isinstance(task, CaseStudy):
        kind = type(task).__name__
        raise TypeError(f"{type(case).__name__}.restricted returned a {kind}, not a case study")
    return task


def _assumption_error(error: Exception) -> Exception:
    """The error a failed rule or attack check is reported as: a ConfigError naming the
    setting (a partitioned run's ranks agree on the first failing rank's error)."""
    if isinstance(error, AgreedFailure) and isinstance(error.error, Exception):
        error = error.error
    if isinstance(error, RuleAssumptionError):
        return ConfigError(f"rules: {error}")
    if isinstance(error, AttackAssumptionError):
        return ConfigError(f"attack: {error}")
    return error


def _plugins(config: RunConfig) -> tuple[RunConfig, list[Rule], Attack]:
    """The run's rules and attack, built from their parameters, and ``config`` with those
    parameters as their declared types made them (``f = 2`` for ``2.0``): what config.toml
    records is what ran. Errors name the parameter's table."""
    rules, rule_params = [], {}
    for name in config.rules:
        try:
            given = RULES.validate(name, config.rule_params.get(name, {}))
            rules.append(RULES.create(name, {**_rule_params(config, name), **given}))
        except RegistryError as error:
            raise ConfigError(f"rule_params.{name}: {error}") from None
        if name in config.rule_params:
            rule_params[name] = given
    try:
        attack_params = ATTACKS.validate(str(config.attack), config.attack_params)
        attack = ATTACKS.create(str(config.attack), attack_params)
    except RegistryError as error:
        raise ConfigError(f"attack_params: {error}") from None
    update = {"rule_params": rule_params, "attack_params": attack_params}
    return config.model_copy(update=update), rules, attack


def _ranks(procs: int) -> Ranks | None:
    """The ranks a run of ``procs`` processes splits its shards over (None for one process);
    ConfigError naming ``procs`` unless this process is in a torch.distributed group of that
    size (``byzmtl run --procs``, torchrun: see byzmtl.distributed)."""
    if procs == 1:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError(
            f"procs: {procs} processes need a torch.distributed group: run "
            f"`byzmtl run --procs {procs}` or start the processes with torchrun"
        )
    if dist.get_world_size() != procs:
        raise ConfigError(
            f"procs: {procs} processes asked, but the process group has {dist.get_world_size()}"
        )
    return Ranks.current()


def _check_representable(config: RunConfig, dtype: torch.dtype) -> None:
    """Every number of the run's scores, parameters and task settings fits the run's precision
    (``--r0 1e39 --dtype float32`` would be +inf): one larger than ``finfo(dtype).max`` is a
    ConfigError naming its setting."""
    largest = torch.finfo(dtype).max
    values = {"nu": config.nu, "r0": config.r0}
    values.update(_numbers(config.rule_params, "rule_params"))
    values.update(_numbers(config.attack_params, "attack_params"))
    values.update(_numbers(config.task, "task"))
    for name, value in values.items():
        if isinstance(value, float | int) and not isinstance(value, bool) and abs(value) > largest:
            raise ConfigError(f"{name}: {value:g} overflows {config.dtype} (at most {largest:.3g})")


def _numbers(value: Any, name: str) -> dict[str, Any]:
    """Every leaf of nested tables and lists, by dotted name (``task.targets.0.1``)."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list | tuple):
        items = list(enumerate(value))
    else:
        return {name: value}
    out: dict[str, Any] = {}
    for key, item in items:
        out.update(_numbers(item, f"{name}.{key}"))
    return out


def _byzantine(config: RunConfig, case: CaseStudy) -> np.ndarray:
    n = case.n_agents
    if config.byzantine is not None:
        ids = np.unique(np.asarray(config.byzantine, dtype=np.int64))
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise ConfigError(f"byzantine: agent ids must lie in [0, {n})")
    else:
        if config.attackers >= n:
            raise ConfigError(
                f"attackers: {config.attackers} attackers leave no normal agent among {n} agents"
            )
        fixed = case.default_byzantine(config.attackers)
        ids = (
            fixed
            if fixed is not None
            else graphs.choose_byzantine(n, config.attackers, config.seed, case.keys)
        )
    if len(ids) >= n:
        raise ConfigError(f"byzantine: {len(ids)} Byzantine agents leave no normal agent")
    return np.asarray(ids, dtype=np.int64)


def checkpoint_period(config: RunConfig, case: CaseStudy) -> int | None:
    """Rounds between checkpoints: ``checkpoint_every`` rounds, or epochs of
    ``rounds_per_epoch`` rounds in the learning case studies; None without checkpoints."""
    if config.checkpoint_every is None:
        return None
    return config.checkpoint_every * int(getattr(case, "rounds_per_epoch", 1))


def _recording(
    experiment: Experiment, times: np.ndarray, final_start: int
) -> tuple[Recorder, Diagnostics]:
    """The run's recorder and diagnostics. A partitioned run's ranks record their own agents:
    each round the simulation gathers every rank's pieces of the statistics
    (``round_summary``), of its metrics and of the per-receiver sums of its edge weights."""
    case, simulation, config = experiment.case, experiment.simulation, experiment.config
    loss = case.loss_metric if case.loss_metric in case.metric_names else None
    if not isinstance(simulation, PartitionedSimulation):
        graph = experiment.graph
        assert isinstance(graph, graphs.Graph)
        recorder = Recorder(
            case.metric_names,
            config.rules,
            experiment.normal,
            experiment.groups,
            case.group_names,
            simulation.device,
            config.percentiles,
            final_start=final_start,
            higher_is_better=case.higher_is_better,
        )
        diagnostics = Diagnostics(
            graph.receivers,
            graph.senders,
            experiment.normal,
            experiment.groups,
            config.rules,
            loss,
            simulation.device,
            time_unit=case.time_unit,
            record_times=times,
        )
        return recorder, diagnostics
    ranks, own = simulation.ranks, simulation.halo.agents
    recorder = Recorder(
        case.metric_names,
        config.rules,
        experiment.normal[own],
        experiment.groups[own],
        case.group_names,
        simulation.device,
        config.percentiles,
        final_start=final_start,
        higher_is_better=case.higher_is_better,
        ranks=ranks,
    )
    diagnostics = Diagnostics(
        None,
        None,
        experiment.normal[own],
        experiment.groups[own],
        config.rules,
        loss,
        simulation.device,
        time_unit=case.time_unit,
        record_times=times,
        ranks=ranks,
    )
    ids, on_table = simulation.halo.table, simulation.attack_context.edges
    weight_sums = WeightSums(  # on the engine's edges, in table rows
        host_copy(on_table.receivers),
        host_copy(on_table.senders),
        experiment.normal[ids],
        experiment.groups[ids],
        simulation.halo.own,
        simulation.device,
    ).of_round

    def round_summary(metrics: Any, weights: list[Any]) -> tuple[Any, Any]:
        pieces = None if metrics is None else recorder.pieces(metrics)
        return pieces, diagnostics.pieces(weight_sums(weights), metrics)

    simulation.round_summary = round_summary
    return recorder, diagnostics


def run(
    config: RunConfig | Mapping[str, Any] | Experiment,
    progress: bool = False,
    on_round: Callable[[SimState, RoundOutput], None] | None = None,
    graph: nx.Graph | None = None,
    checkpoints: CheckpointFolder | None = None,
    resume: Snapshot | None = None,
) -> Result:
    """Run every rule of ``config`` on the same network and data; return the :class:`Result`.

    ``config`` may also be an :class:`Experiment` from :func:`prepare` (built only once);
    ``graph``: a networkx graph of the agents, as for :func:`prepare`.
    ``progress`` shows a progress bar (after the first second); ``on_round`` is called after
    every round with the new state and the round's output.

    ``checkpoints``: where a run with ``checkpoint_every`` writes its checkpoints (see
    :mod:`byzmtl.checkpoints`; ``byzmtl run`` gives its results folder's); ``resume``: a
    snapshot read from such a folder, to continue from. The continued run's tables and summary
    are the uninterrupted run's, bit for bit, except the timings (``wall_seconds`` and
    ``compute_seconds``: the sessions' times up to the snapshot plus this session's). In a run
    of several processes rank 0 alone writes checkpoints (a partitioned run's: a file per
    rank, each sent to rank 0 in turn), the others giving none, and every write is agreed: it
    failing on rank 0 stops every rank. A partitioned run's ranks continue from, and return
    in the result, their own part of the state (``result.experiment.simulation.whole_state``
    joins them).
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    experiment = config if isinstance(config, Experiment) else prepare(config, graph)
    started -= experiment.setup_seconds if isinstance(config, Experiment) else 0.0
    case, simulation = experiment.case, experiment.simulation
    period = checkpoint_period(experiment.config, case)
    ranks = simulation.ranks
    if period is not None and checkpoints is None and (ranks is None or ranks.rank == 0):
        raise ConfigError(
            "checkpoint_every: checkpoints are written into a results folder: "
            "byzmtl run --out DIR (or run(..., checkpoints=CheckpointFolder(...)))"
        )
    times = case.time_values()
    window = max(1, round(case.final_fraction * len(times)))
    recorder, diagnostics = _recording(experiment, times, len(times) - window)
    partitioned = isinstance(simulation, PartitionedSimulation)
    earlier = {"wall": 0.0, "compute": 0.0}
    if resume is not None:
        if not 0 <= resume.state.iteration <= case.n_rounds:
            raise ConfigError(
                f"checkpoint: round {resume.state.iteration} is not a round of this run "
                f"(0 to {case.n_rounds})"
            )
        recorder.load_state_dict(resume.recorder)
        diagnostics.load_state_dict(resume.diagnostics)
        earlier = resume.seconds
        started -= earlier["wall"]
    config_text = experiment.config.to_toml()
    saving = 0.0  # seconds this session spent writing checkpoints (not compute)
    bar = tqdm(
        total=case.n_rounds,
        initial=0 if resume is None else resume.state.iteration,
        disable=not progress,
        delay=1.0,
        unit="round",
        desc=f"{case.name} ({', '.join(experiment.config.rules)})",
        leave=False,
    )

    def write_checkpoint(
        state: SimState, records: tuple[Any, Any], seconds: dict[str, float]
    ) -> None:
        snapshot = Snapshot(state, *records, seconds)
        parts = ranks if partitioned else None  # each rank's part, written by rank 0
        if checkpoints is not None:  # none on ranks other than 0
            checkpoints.write(snapshot, case.n_rounds, config_text, parts)
        elif parts is not None:
            send_part(parts, snapshot)

    def record(state: SimState, output: RoundOutput) -> None:
        nonlocal saving
        if partitioned:  # every rank's pieces of the statistics, gathered
            assert output.shared is not None
            if output.metrics is not None:
                recorder.add_gathered(output.metrics, [shared[0] for shared in output.shared])
            diagnostics.add_gathered(
                state.iteration - 1, output.metrics, [shared[1] for shared in output.shared]
            )
        else:
            if output.metrics is not None:
                recorder.add(output.metrics)
            diagnostics.add(state.iteration - 1, output.weights, output.metrics)
        bar.update()
        if on_round is not None:
            on_round(state, output)
        if period is not None and state.iteration % period == 0 and state.iteration < case.n_rounds:
            now = time.perf_counter()
            seconds = {
                "wall": now - started,
                "compute": earlier["compute"] + now - computing - saving,
            }
            records = (recorder.state_dict(), diagnostics.state_dict())  # ranks: collective
            if ranks is None:
                write_checkpoint(state, records, seconds)
            else:  # collective: every rank learns whether rank 0's write failed
                ranks.agree(lambda: write_checkpoint(state, records, seconds))
            saving += time.perf_counter() - now

    computing = time.perf_counter()
    with deterministic_algorithms(experiment.config.deterministic):  # the tables reduce too
        try:
            with bar:
                state = simulation.run(None if resume is None else resume.state, on_round=record)
        except AttackOutputError as error:  # a plug-in's bug: one line naming the attack
            raise ConfigError(f"attack: {error}") from error
        except KeyboardInterrupt:
            if checkpoints is None:
                raise
            raise KeyboardInterrupt(checkpoints.resume_hint()) from None
        compute = earlier["compute"] + time.perf_counter() - computing - saving
        metrics = recorder.columns(case.time_unit, times)
        table = diagnostics.columns()
    wall = time.perf_counter() - started
    contained = simulation.containment(state)  # a partitioned run's ranks: collective
    summary = summarise(experiment, contained, recorder, diagnostics, table, wall, compute)
    return Result(experiment.config, metrics, summary, experiment, state, table)
