"""The ``byzmtl`` command line: run case studies, list what is available, benchmark.

    byzmtl run target-localization --attackers 20 --rules loss,distance,average,none --out runs/tl
    byzmtl run --config configs/target-localization.toml --seed 3
    byzmtl list [--json]
    byzmtl bench [--json]
    byzmtl matrix target-localization --rules all --attacks all --attackers 20 --seeds 0,1,2 \\
        --out runs/matrix
    byzmtl plot runs/tl --format png,pdf --band p10-p90
    byzmtl --version

Every setting of a run can come from ``--config FILE.toml``; flags override the file, and
``--set KEY=VALUE`` reaches any setting (``--set task.mu=0.2``). Bad input exits with status 2 and
a one-line message naming the bad field, before anything is written.

How the process behaves:

- Start-up: this module imports the standard library only; the heavy modules (torch, pydantic,
  pandas, matplotlib) are imported inside the commands that need them, so ``--help``,
  ``--version`` and ``list`` (which reads the stored :mod:`~byzmtl.catalogue`) never import
  torch. ``run`` draws its figures in a second process started at once (see
  :class:`byzmtl.figure_process.FigureProcess`), so that importing matplotlib overlaps the
  computation.
- Exit status: 0 success; 1 a figure was not drawn (``plot``); 2 bad input (one line, from
  argparse too); 130 interrupted (Ctrl-C, at any point: one line, no results folder left
  behind); 141 stdout closed early (``byzmtl list | head -3``: no traceback).
- Progress bars only when stderr is a terminal (never in a log file).
- Threads: ``--threads N`` or ``OMP_NUM_THREADS`` when given, else the policy of
  :mod:`byzmtl.threads` (one thread for small problems).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from byzmtl import catalogue as catalogues
from byzmtl import threads
from byzmtl.allocator import limit_heap_retention
from byzmtl.arguments import EXIT_BAD_INPUT, csv
from byzmtl.arguments import build_parser as parser_of
from byzmtl.names import NO_ATTACK

if TYPE_CHECKING:
    from byzmtl.experiment import Experiment
    from byzmtl.figure_process import FigureProcess

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left

# the user errors of the modules a command imports: (module, class); one line, exit status 2
USER_ERRORS = (
    ("byzmtl.config", "ConfigError"),
    ("byzmtl.registry", "RegistryError"),
    ("byzmtl.datasets.errors", "DatasetError"),
)


class CommandError(Exception):
    """A user error reported as one line and exit status 2."""


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Import large packages with the garbage collector paused (torch creates many objects that
    a collection would walk for nothing) and Ctrl-C held back: a KeyboardInterrupt raised inside
    a package's import can leave it half-initialised (numpy without its functions) and be
    swallowed by a package that imports it, so a SIGINT during the import is delivered when the
    import is done, at a clean point, where it ends the command as any Ctrl-C does."""
    enabled = gc.isenabled()
    gc.disable()
    hold = hasattr(signal, "pthread_sigmask")
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hold else None
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        if before is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration settings given as flags."""
    from byzmtl.config import dotted, merge
    from byzmtl.rules import RULES

    out: dict[str, Any] = {}
    for flag in ("seed", "attackers", "byzantine", "nu", "r0", "dtype", "device"):
        if getattr(args, flag) is not None:
            out[flag] = getattr(args, flag)
    if getattr(args, "attack", None) is not None:
        out["attack"] = args.attack
    if getattr(args, "checkpoint_every", None) is not None:
        out["checkpoint_every"] = args.checkpoint_every
    if getattr(args, "rules", None) is not None:
        out["rules"] = RULES.names() if args.rules == ["all"] else args.rules
    task = {
        key: getattr(args, key)
        for key in ("iterations", "epochs", "agents", "data_dir", "synthetic_dir", "download")
        if getattr(args, key) is not None
    }
    if task:
        out["task"] = task
    if args.graph is not None:
        out["graph"] = {"kind": args.graph}
    if args.attack_param:
        out["attack_params"] = dotted(args.attack_param)
    if getattr(args, "procs", None) is not None:  # run only
        out["procs"] = args.procs
    return merge(out, dotted(args.set))


def _without_attack(data: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Attack ``none`` (as ``byzmtl matrix``'s attack axis has it): the run without Byzantine
    agents, the same as ``attackers = 0``; Byzantine agents asked for by flags as well are an
    error (those of a config file give way)."""
    if data.get("attack") != NO_ATTACK:
        return data
    if flags.get("attackers") or flags.get("byzantine"):
        chosen = "attackers" if flags.get("attackers") else "byzantine"
        raise CommandError(
            f"attack: {NO_ATTACK!r} means no Byzantine agents, but {chosen} asks for some"
        )
    out = {k: v for k, v in data.items() if k not in ("attack", "attack_params", "byzantine")}
    out["attackers"] = 0
    return out


def load_plugins(paths: Sequence[Path]) -> None:
    """Import user files that register their own rules, attacks or case studies."""
    with heavy_imports():
        from byzmtl import plugins
    plugins.load(paths)


def _check_threads(args: argparse.Namespace) -> None:
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"threads: must be at least 1, got {args.threads}")


def load_config(args: argparse.Namespace, case: str | None) -> dict[str, Any]:
    """The raw configuration: the file (if any), then flags, then ``--set``."""
    _check_threads(args)
    with heavy_imports():
        from byzmtl.config import ConfigError, merge, read_toml
        from byzmtl.tasks import CASES
    load_plugins(args.plugin)
    data = read_toml(args.config) if args.config is not None else {}
    flags = _overrides(args)
    data = _without_attack(merge(data, flags), flags)
    if case is not None:
        data["case"] = case
    if "case" not in data:
        raise ConfigError(f"case: name a case study ({', '.join(CASES.names())}) or give --config")
    return data


def use_threads(args: argparse.Namespace, experiment: Experiment) -> None:
    """Set torch's threads for ``experiment``: ``--threads``, else the default policy (which
    leaves an ``OMP_NUM_THREADS`` of the environment in force)."""
    threads.apply(args.threads, threads.problem_size(experiment.simulation))


def _draw_network_early(figures: FigureProcess, experiment: Experiment) -> None:
    """Have ``figures`` draw the network figure while the run computes, titled as the results
    folder's figures will be (:meth:`FigureProcess.draw_network`)."""
    from byzmtl.names import run_title
    from byzmtl.outcome import identity

    case, title = experiment.case, run_title(identity(experiment))
    figures.draw_network(
        experiment.drawn, experiment.groups, case.group_names, experiment.byzantine, title
    )


def _default_out(case: str) -> Path:
    """The default results folder; claimed with a suffix -2, -3, ... where it is taken."""
    return Path("runs") / f"{case}-{time.strftime('%Y%m%d-%H%M%S')}"


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching: not asked away, and stderr a terminal."""
    return not args.no_progress and sys.stderr.isatty()


def command_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        with heavy_imports():
            from byzmtl import distributed
            from byzmtl.resume import check_resume, command_resume
        _repeat_figure_warnings()
        stored = check_resume(args, load_plugins)
        if stored.procs > 1 or distributed.environment() is not None:
            return distributed.command_resume(args, stored, summary_table)
        return command_resume(args, summary_table)
    from byzmtl.figure_process import FigureProcess

    with FigureProcess.start() as figures:  # matplotlib loads there while this process computes
        with heavy_imports():
            from byzmtl.config import parse
            from byzmtl.destination import claim, claim_new
            from byzmtl.experiment import prepare, run
            from byzmtl.results import RUN, check_destination, write_into
            from byzmtl.resume import start
        _repeat_figure_warnings()
        config = parse(load_config(args, args.case))
        with heavy_imports():
            from byzmtl import distributed
        if config.procs > 1 or distributed.environment() is not None:
            return distributed.command_run(args, config, _default_out, summary_table)
        if args.out is not None:
            check_destination(args.out, args.overwrite)  # before anything is built or written
        experiment = prepare(config)  # everything (data files included) is checked first
        use_threads(args, experiment)
        _draw_network_early(figures, experiment)
        destination = (
            claim(args.out, args.overwrite, RUN)
            if args.out is not None
            else claim_new(_default_out(config.case), RUN)
        )
        with destination:  # held from before the computation: a second writer fails at once
            checkpoints = start(destination, experiment.config, args.quiet)
            result = run(experiment, progress=_progress(args), checkpoints=checkpoints)
            write_into(result, destination, figures)
    if not args.quiet:
        print(summary_table(result.summary))
        print(f"results: {destination.out}")
    return 0


def command_matrix(args: argparse.Namespace) -> int:
    if args.seed is not None:
        raise CommandError("seed: a matrix takes --seeds")
    config = load_config(args, args.case)
    with heavy_imports():
        from byzmtl import matrix
    _repeat_figure_warnings()
    plan = matrix.plan(config, args.rules, args.attacks, args.seeds, args.out, args.overwrite)
    log = (lambda line: None) if args.quiet else None
    table = matrix.execute(plan, args.overwrite, _progress(args), log, threads=args.threads)
    if not args.quiet:
        print(f"{len(table)} rows: {args.out / 'matrix.md'}, matrix.csv, matrix.png")
    return 0


def command_plot(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    if not (run_dir / "metrics.csv").is_file() and not (run_dir / "summary.json").is_file():
        raise CommandError(f"run_dir: {run_dir} holds no run (no metrics.csv or summary.json)")
    with heavy_imports():
        from byzmtl import plots
    try:
        formats = plots.check_formats(args.format)
        plots.band_columns(args.band)
    except ValueError as error:
        raise CommandError(str(error)) from None
    warnings = plots.draw_figures(run_dir, formats, args.band)
    for line in warnings:
        print(f"byzmtl: warning: {line}", file=sys.stderr)
    if not args.quiet:
        print(f"figures: {run_dir} ({', '.join(formats)})")
    return 1 if warnings else 0


def summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table of every rule's final metrics (mean [min, max] over normal agents)."""
    metrics = summary["metrics"]
    header = ["rule", *metrics]
    rows = [header]
    for rule, entry in summary["rules"].items():
        cells = [rule]
        for metric in metrics:
            stats = entry["final"][metric]
            cells.append(f"{stats['mean']:.4g} [{stats['min']:.3g}, {stats['max']:.3g}]")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    byzantine = len(summary["byzantine"])
    title = (
        f"{summary['case']}: {summary['agents']} agents, {byzantine} Byzantine"
        f" ({summary['attack'] if byzantine else 'no attack'}),"
        f" final {summary['time_unit']}s mean [min, max] over normal agents,"
        f" {summary['compute_seconds']:.2f} s compute"
    )
    return "\n".join([title, *lines])


def catalogue(plugins: Sequence[Path] = ()) -> dict[str, Any]:
    """Every case study, rule and attack with its parameters and defaults: the stored catalogue
    (:mod:`byzmtl.catalogue`, no torch needed), or with ``plugins`` the live registries after
    importing them."""
    if not plugins:
        return catalogues.stored()
    with heavy_imports():
        load_plugins(plugins)
        return catalogues.live()


def command_list(args: argparse.Namespace) -> int:
    info = catalogue(args.plugin)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("case studies:")
    for name, case in info["cases"].items():
        print(f"  {name:22s} {case['description']}")
    for kind in ("rules", "attacks"):
        print(f"{kind}:")
        for name, params in info[kind].items():
            shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "-"
            print(f"  {name:22s} {shown}")
    return 0


def command_bench(args: argparse.Namespace) -> int:
    from byzmtl import bench

    only = csv(args.only)
    unknown = sorted(set(only) - {"paper", "scaling", "full"})
    if unknown:
        raise CommandError(f"only: unknown benchmark {unknown[0]!r} (paper, scaling, full)")
    try:
        sizes = [int(float(a)) for a in csv(args.agents)]
    except ValueError:
        raise CommandError(
            f"agents: expected comma-separated numbers, got {args.agents!r}"
        ) from None
    results = bench.report(only, sizes, args.rounds)
    print(json.dumps(results, indent=2) if args.json else bench.table(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, each command with its handler here."""
    return parser_of(
        {
            "run": command_run,
            "list": command_list,
            "bench": command_bench,
            "matrix": command_matrix,
            "plot": command_plot,
        }
    )


def _show_figure_warnings() -> None:
    """Print a figure left out (:class:`~byzmtl.results.FigureWarning`) as one line, every time;
    other warnings as Python does. (The class is looked up by name: importing
    :mod:`byzmtl.results` here would import what ``list`` does not need.)"""
    shown = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if category.__name__ == "FigureWarning" and category.__module__ == "byzmtl.results":
            print(f"byzmtl: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _repeat_figure_warnings() -> None:
    """Show every :class:`~byzmtl.results.FigureWarning`, repeats included (called by the
    commands that import :mod:`byzmtl.results`, inside :func:`main`'s warnings context)."""
    from byzmtl.results import FigureWarning

    warnings.simplefilter("always", FigureWarning)


def _user_error(error: Exception) -> bool:
    """Whether ``error`` is a user error: one of :data:`USER_ERRORS` (looked up among the
    modules already imported: one not imported cannot have raised its error)."""
    if isinstance(error, CommandError):
        return True
    for module, name in USER_ERRORS:
        loaded = sys.modules.get(module)
        kind = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(kind, type) and isinstance(error, kind):
            return True
    return False


def _quiet_stdout() -> None:
    """After a reader closed our stdout: point it at /dev/null, so that the interpreter's final
    flush does not print a BrokenPipeError of its own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a descriptor
        pass


def main(argv: Sequence[str] | None = None) -> int:
    limit_heap_retention()  # freed temporaries go back to the system (byzmtl.allocator)
    if hasattr(signal, "pthread_sigmask"):  # Ctrl-C works whatever mask the parent left blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # an inherited ignore
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        parser = build_parser()
        argv = sys.argv[1:] if argv is None else list(argv)
        args = parser.parse_args(argv)
        args.argv = argv  # what --procs runs in every process
        with warnings.catch_warnings():
            _show_figure_warnings()
            status = int(args.handler(args))
        sys.stdout.flush()  # here, where a closed pipe is caught
        return status
    except KeyboardInterrupt as interrupt:
        reason = interrupt.args[0] if interrupt.args else "nothing was written"
        print(f"byzmtl: interrupted; {reason}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as error:
        if not _user_error(error):
            raise
        print(f"byzmtl: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def leave(status: int) -> NoReturn:
    """End the process with ``status`` once a command has ended, without the interpreter's
    clean-up: every file of the command is written and closed by then, and freeing torch's
    objects at exit takes about half a second (as long as the run of the demo itself). What
    the command printed is flushed first; a reader that left already is not waited for."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    leave(main())
