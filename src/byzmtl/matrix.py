"""The resilience matrix: every rule against every attack, over several seeds.

    byzmtl matrix target-localization --rules all --attacks all --attackers 20 --seeds 0,1,2 \\
        --out runs/matrix

One cell is one (attack, seed): a run of all the rules on the same network, data and attackers
(``none``, no cooperation, is always among them: it is the reference of the ratios and of the
regret). Attack ``none`` is the run without attackers. matrix.csv and cells/ use these names
(attack ``none``, rule ``none``: unambiguous there, by column); matrix.md and matrix.png show
them as "no attack" and "none (no cooperation)". Every cell is validated before the first
one runs, then written to ``DIR/cells/<attack>-seed<seed>.json`` (resolved configuration and
summary) as soon as it finishes, so an interrupted matrix resumes where it stopped: a cell whose
file holds the same configuration and every requested rule is not run again.

The folder then holds:

    matrix.csv   one row per (rule, attack): for every metric m of the case study,
                 m_mean (final mean over normal agents), m_worst (final value of the worst normal
                 agent: max, or min for metrics where higher is better), each averaged over seeds
                 with its standard deviation over seeds (m_mean_sd, m_worst_sd), m_vs_none (m_mean
                 over none's m_mean under the same attack); loss_mean / loss_worst (the case
                 study's loss metric, when it is not called ``loss``); byzantine_weight,
                 own_task_weight and regret (the diagnostics, averaged over seeds)
    matrix.md    the same as Markdown tables, one per metric, rules x attacks
    matrix.png   heatmaps of the mean metrics against no cooperation
    cells/       one JSON file per (attack, seed); strict JSON (non-finite numbers are null)

A matrix is written by one process at a time (the folder is claimed with a lock: a second one
fails at once), in place so that it can resume; a figure that cannot be drawn is left out with a
warning. ``--overwrite`` replaces only a matrix folder, and assembles the new matrix beside the
old one, which stays in place until the new one is complete (see :mod:`byzmtl.destination`).

Attack parameters are given per attack: ``--attack-param null-space.push=5``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byzmtl import plots
from byzmtl import threads as thread_policy
from byzmtl.attacks import ATTACKS, AttackAssumptionError
from byzmtl.config import ConfigError, RunConfig, parse
from byzmtl.destination import (
    Kind,
    check,
    claim,
    remove_temporaries,
    temporary_beside,
    write_atomic,
)
from byzmtl.experiment import prepare, run
from byzmtl.names import NO_ATTACK, NO_COOPERATION
from byzmtl.registry import RegistryError
from byzmtl.results import draw_figure, strict_json
from byzmtl.rules import RULES
from byzmtl.tasks import CASES

REFERENCE = NO_COOPERATION


@dataclass(frozen=True)
class Cell:
    """One run of the matrix: every rule under one attack, with one seed."""

    attack: str
    seed: int
    config: RunConfig

    @property
    def name(self) -> str:
        return f"{self.attack}-seed{self.seed}"


@dataclass
class Matrix:
    """A validated matrix: its cells, and what to do with them."""

    case: str
    rules: list[str]
    attacks: list[str]
    seeds: list[int]
    cells: list[Cell]
    skipped: dict[str, str]  # attacks left out of ``all``, with the reason
    out: Path


def is_matrix_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a matrix (its ``cells`` folder)."""
    return (folder / "cells").is_dir()


MATRIX = Kind("a matrix", is_matrix_folder, resumable=True)


def plan(
    base: dict[str, Any],
    rules: Sequence[str],
    attacks: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    overwrite: bool = False,
) -> Matrix:
    """Resolve names (``all``), build and validate every cell; raise :class:`ConfigError`
    naming the bad field before anything runs. ``base`` is a raw run configuration whose
    ``attack_params`` are tables per attack name. ``out`` must be new, empty or a matrix
    folder."""
    if "case" not in base:
        raise ConfigError("case: name a case study")
    if base.get("checkpoint_every") is not None:
        raise ConfigError(
            "checkpoint_every: a matrix resumes cell by cell (run it again); checkpoints within "
            "a run are for byzmtl run"
        )
    procs = base.get("procs")
    if isinstance(procs, int) and not isinstance(procs, bool) and procs > 1:
        raise ConfigError(
            f"procs: a matrix runs its cells in this process, one after another; procs = "
            f"{procs} is for one run (byzmtl run --procs {procs})"
        )
    check(out, overwrite, MATRIX)
    case = CASES.get(str(base["case"])).name
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds: a seed is listed twice")
    chosen_rules = _names(rules, RULES.names(), "rules", RULES.get)
    if REFERENCE not in chosen_rules:
        chosen_rules.append(REFERENCE)
    every_attack = list(attacks) == ["all"]
    chosen_attacks = _names(attacks, [NO_ATTACK, *ATTACKS.names()], "attacks", _attack_name)
    if NO_ATTACK not in chosen_attacks:
        chosen_attacks.insert(0, NO_ATTACK)
    per_attack = dict(base.get("attack_params") or {})
    for name, params in per_attack.items():
        if name not in chosen_attacks or name == NO_ATTACK:
            raise ConfigError(f"attack_params.{name}: not an attack of this matrix")
        if not isinstance(params, dict):
            raise ConfigError(f"attack_params.{name}: expected parameters as {name}.KEY=VALUE")
    attackers = int(base.get("attackers") or 0)
    if attackers <= 0 and base.get("byzantine") is None:
        raise ConfigError("attackers: a matrix needs attackers (--attackers N)")
    common = {k: v for k, v in base.items() if k not in ("attack_params", "attack", "seed")}
    common["rules"] = chosen_rules
    cells, skipped, experiments = [], {}, {}
    for seed in seeds:  # the graph, the attackers and the rules' assumptions depend on the seed
        experiments[seed] = prepare(parse(dict(common, seed=seed)))
        cells.append(Cell(NO_ATTACK, seed, _cell_config(common, NO_ATTACK, {}, seed)))
    for attack in chosen_attacks:
        if attack == NO_ATTACK:
            continue
        params = per_attack.get(attack, {})
        try:
            instance = ATTACKS.create(attack, params)
            for experiment in experiments.values():
                instance.check(experiment.simulation.attack_context, experiment.case)
        except RegistryError as error:
            raise ConfigError(f"attack_params.{attack}: {error}") from None
        except AttackAssumptionError as error:
            if every_attack:
                skipped[attack] = str(error)
                continue
            raise ConfigError(f"attacks: {error}") from None
        cells.extend(Cell(attack, s, _cell_config(common, attack, params, s)) for s in seeds)
    runnable = [a for a in chosen_attacks if a not in skipped]
    cells.sort(key=lambda cell: (runnable.index(cell.attack), seeds.index(cell.seed)))
    return Matrix(case, chosen_rules, runnable, list(seeds), cells, skipped, out)


def _attack_name(name: str) -> None:
    if name != NO_ATTACK:
        ATTACKS.get(name)


def _names(
    given: Sequence[str], known: list[str], field: str, lookup: Callable[[str], Any]
) -> list[str]:
    if list(given) == ["all"]:
        return list(known)
    if not given:
        raise ConfigError(f"{field}: name at least one, or 'all'")
    if len(set(given)) != len(given):
        raise ConfigError(f"{field}: a name is listed twice")
    for name in given:
        try:
            lookup(name)
        except RegistryError as error:
            raise ConfigError(f"{field}: {error}") from None
    return list(given)


def _cell_config(
    common: dict[str, Any], attack: str, params: dict[str, Any], seed: int
) -> RunConfig:
    data = dict(common, seed=seed)
    if attack == NO_ATTACK:
        data.update(attackers=0, byzantine=None)
    else:
        data.update(attack=attack, attack_params=params)
    return parse(data).resolved()


def _stored(path: Path, cell: Cell, rules: list[str]) -> dict[str, Any] | None:
    """The stored result of ``cell`` if it is complete and made with the same configuration."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    config = {k: v for k, v in stored.get("config", {}).items() if k != "rules"}
    written = json.loads(strict_json(cell.config.model_dump(mode="json")))  # as stored
    wanted = {k: v for k, v in written.items() if k != "rules"}
    if config != wanted or not set(rules) <= set(stored.get("summary", {}).get("rules", {})):
        return None
    return stored


def execute(
    matrix: Matrix,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Claim the folder, run the cells not already done (one line per cell to ``log``), then
    write the tables and the figure; returns the table of matrix.csv. With ``overwrite`` the new
    matrix is assembled beside the old one, which stays in place until the new one is complete
    (see :mod:`byzmtl.destination`). ``threads``: torch's threads for every cell, else the
    default policy of :mod:`byzmtl.threads` per cell."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    with claim(matrix.out, overwrite, MATRIX) as destination:
        if not overwrite:
            return _fill(matrix, destination.target, progress, log, threads)
        staging = destination.staging()
        try:
            table = _fill(matrix, staging, progress, log, threads)
            destination.commit(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return table


def _fill(
    matrix: Matrix,
    folder: Path,
    progress: bool,
    log: Callable[[str], None],
    threads: int | None = None,
) -> pd.DataFrame:
    """Run the missing cells into ``folder/cells``, then write the tables and the figure."""
    cells_dir = folder / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(folder)  # of a killed writer: this process holds the folder
    remove_temporaries(cells_dir)
    for attack, reason in matrix.skipped.items():
        log(f"skipping attack {attack}: {reason}")
    results: dict[tuple[str, int], dict[str, Any]] = {}
    width = len(str(len(matrix.cells)))
    for number, cell in enumerate(matrix.cells, 1):
        head = f"[{number:>{width}}/{len(matrix.cells)}] {cell.attack}, seed {cell.seed}"
        path = cells_dir / f"{cell.name}.json"
        stored = _stored(path, cell, matrix.rules)
        if stored is not None:
            results[(cell.attack, cell.seed)] = stored
            log(f"{head}: done before, skipped")
            continue
        started = time.perf_counter()
        experiment = prepare(cell.config)
        thread_policy.apply(threads, thread_policy.problem_size(experiment.simulation))
        result = run(experiment, progress=progress)
        stored = {"config": cell.config.model_dump(mode="json"), "summary": result.summary}
        write_atomic(path, strict_json(stored, indent=1))
        results[(cell.attack, cell.seed)] = stored
        log(f"{head}: {time.perf_counter() - started:.1f} s")
    table = tabulate(matrix, results)
    metrics = _metrics(results)
    write_atomic(folder / "matrix.csv", table.to_csv(index=False))
    write_atomic(folder / "matrix.md", markdown(matrix, table, metrics))
    figure = folder / "matrix.png"
    drawing = temporary_beside(figure)  # then renamed: readers never see half a figure
    skipped = draw_figure(
        drawing,
        lambda path: plots.matrix_figure(
            table,
            matrix.rules,
            matrix.attacks,
            metrics,
            CASES.get(matrix.case).higher_is_better,
            path,
            f"{matrix.case}: seeds {', '.join(map(str, matrix.seeds))}",
        ),
        figure.name,
    )
    if skipped is None:
        os.replace(drawing, figure)
    else:
        figure.unlink(missing_ok=True)  # an older figure would not show this table
    return table


def tabulate(matrix: Matrix, results: dict[tuple[str, int], dict[str, Any]]) -> pd.DataFrame:
    """The rows of matrix.csv from the cells' summaries (see the module docstring)."""
    metrics = _metrics(results)
    case = CASES.get(matrix.case)
    higher, loss_metric = case.higher_is_better, case.loss_metric
    rows = []
    for attack in matrix.attacks:
        summaries = [results[(attack, seed)]["summary"] for seed in matrix.seeds]
        for rule in matrix.rules:
            entries = [s["rules"][rule] for s in summaries]
            row: dict[str, Any] = {"rule": rule, "attack": attack, "seeds": len(entries)}
            for metric in metrics:
                worst = "min" if metric in higher else "max"
                for column, statistic in (("mean", "mean"), ("worst", worst)):
                    values = np.array([e["final"][metric][statistic] for e in entries], float)
                    row[f"{metric}_{column}"] = float(values.mean())
                    row[f"{metric}_{column}_sd"] = _sd(values)
            for name, key, statistic in (
                ("byzantine_weight", "byzantine_weight", "mean"),
                ("own_task_weight", "own_task_weight", "mean"),
                ("regret", "regret", "mean"),
            ):
                found = [e.get("diagnostics", {}).get(key, {}).get(statistic) for e in entries]
                known = [v for v in found if v is not None]
                row[name] = float(np.mean(known)) if known else float("nan")
            rows.append(row)
    table = pd.DataFrame(rows)
    for metric in metrics:
        reference = table[table["rule"] == REFERENCE].set_index("attack")[f"{metric}_mean"]
        table[f"{metric}_vs_none"] = table[f"{metric}_mean"] / table["attack"].map(reference)
    if loss_metric != "loss" and loss_metric in metrics:
        table["loss_mean"] = table[f"{loss_metric}_mean"]
        table["loss_worst"] = table[f"{loss_metric}_worst"]
    return table


def _metrics(results: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    return list(next(iter(results.values()))["summary"]["metrics"])


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation, scaled first so that huge (diverged) values do not overflow."""
    scale = float(np.max(np.abs(values))) if len(values) > 1 else 0.0
    if not 0.0 < scale < np.inf:
        return 0.0 if scale == 0.0 or len(values) < 2 else float("nan")
    return float((values / scale).std(ddof=1) * scale)


def markdown(matrix: Matrix, table: pd.DataFrame, metrics: Sequence[str]) -> str:
    """Tables rules x attacks, one per metric and statistic, cells 'mean ± sd over seeds'."""
    higher = CASES.get(matrix.case).higher_is_better
    lines = [
        f"# Resilience matrix: {matrix.case}",
        "",
        f"Seeds {', '.join(map(str, matrix.seeds))}; each cell: final value, mean ± standard "
        f"deviation over seeds. Column *{plots.NO_ATTACK_LABEL}*: the runs without attackers "
        f"(attack `{NO_ATTACK}` in matrix.csv); row *{plots.NO_COOPERATION_LABEL}*: every agent "
        "alone, the reference of the ratios.",
    ]
    lines.extend(f"\nLeft out: `{a}` ({why})." for a, why in matrix.skipped.items())
    tables = []
    for metric in metrics:
        worst = "min" if metric in higher else "max"
        tables.append((f"{metric}_mean", f"{metric}, mean over normal agents"))
        tables.append((f"{metric}_worst", f"{metric}, worst normal agent ({worst})"))
    tables.append(("byzantine_weight", "weight on Byzantine senders (mean over normal agents)"))
    tables.append(("own_task_weight", "weight on senders of the own task (mean over agents)"))
    for column, title in tables:
        lines += ["", f"## {title}", ""]
        attacks = [plots.matrix_label(attack, "attack") for attack in matrix.attacks]
        lines.append("| rule \\ attack | " + " | ".join(attacks) + " |")
        lines.append("|---|" + "---|" * len(matrix.attacks))
        indexed = table.set_index(["rule", "attack"])
        for rule in matrix.rules:
            cells = []
            for attack in matrix.attacks:
                row = indexed.loc[(rule, attack)]
                text = _number(row[column])
                if f"{column}_sd" in row:
                    text += f" ± {_number(row[f'{column}_sd'])}"
                cells.append(text)
            lines.append(f"| {plots.matrix_label(rule, 'rule')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if value is None or np.isnan(value):
        return "n/a"
    return f"{value:.3g}"
