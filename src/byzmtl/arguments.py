"""The ``byzmtl`` command line's arguments: the parser of every command and its flags, with
one-line argparse errors (exit status 2). What each command does is :mod:`byzmtl.cli`'s; this
module imports the standard library only (``--help`` never imports torch)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

from byzmtl import catalogue as catalogues
from byzmtl.names import NO_ATTACK
from byzmtl.version import __version__

EXIT_BAD_INPUT = 2
Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``byzmtl run: error: MESSAGE (see byzmtl run
    --help)``, with exit status 2 (argparse itself prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def integers(what: str) -> Callable[[str], list[int]]:
    """A parser of comma-separated integers, naming ``what`` they are in its error."""

    def parse(text: str) -> list[int]:
        try:
            return [int(item) for item in csv(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None

    return parse


ids, seeds = integers("agent ids"), integers("seeds")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``run`` and ``matrix``: each maps onto one configuration setting."""
    parser.add_argument("--config", type=Path, help="TOML file with settings (flags override it)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--attackers", type=int, help="number of Byzantine agents, drawn at random")
    parser.add_argument("--byzantine", type=ids, help="explicit Byzantine agent ids, e.g. 2,7")
    parser.add_argument(
        "--attack-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter of the attack (repeatable)",
    )
    parser.add_argument(
        "--nu", type=float, help="forgetting factor of accumulated scores, in (0,1)"
    )
    parser.add_argument("--r0", type=float, help="initial accumulated score")
    parser.add_argument("--iterations", type=int, help="rounds (target localization)")
    parser.add_argument("--epochs", type=int, help="epochs (learning case studies)")
    parser.add_argument("--agents", type=int, help="number of agents (target localization, har)")
    parser.add_argument("--data-dir", type=str, help="dataset folder (learning case studies)")
    parser.add_argument("--synthetic-dir", type=str, help="folder of real synthetic-digit images")
    parser.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="fetch a missing public dataset into --data-dir (learning case studies)",
    )
    parser.add_argument("--graph", type=str, help="graph kind: geometric, complete, ring, ...")
    parser.add_argument("--dtype", choices=["float32", "float64"])
    parser.add_argument("--device", type=str, help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting by its dotted name, e.g. task.mu=0.2 (repeatable)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (shown only when stderr is a terminal)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads (default: OMP_NUM_THREADS if set, else one thread for small "
        "problems and one per idle core for large ones; see byzmtl.threads)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        type=Path,
        metavar="FILE.py",
        help="import a Python file first (it may register rules, attacks, cases)",
    )


def build_parser(handlers: Mapping[str, Handler]) -> argparse.ArgumentParser:
    """The command line's parser; ``handlers[command]`` runs each command (``args.handler``)."""
    parser = Parser(
        prog="byzmtl", description="Byzantine-resilient decentralised multi-task learning."
    )
    parser.add_argument("--version", action="version", version=f"byzmtl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    cases = ", ".join(catalogues.stored()["cases"])

    run = commands.add_parser("run", help="run one case study under several rules")
    run.add_argument("case", nargs="?", help=f"case study: {cases}")
    run.add_argument("--rules", type=csv, help="comma-separated rules, or 'all'")
    run.add_argument(
        "--attack",
        type=str,
        help=f"attack name (default: the case study's); {NO_ATTACK!r}: no Byzantine agents",
    )
    add_run_options(run)
    run.add_argument("--out", type=Path, help="results folder (default runs/<case>-<time>)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    run.add_argument("--quiet", action="store_true", help="print nothing on success")
    run.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="K",
        help="checkpoint into the results folder every K rounds (epochs in learning cases)",
    )
    run.add_argument(
        "--resume", type=Path, metavar="DIR", help="continue the interrupted run in DIR"
    )
    run.add_argument(
        "--procs",
        type=int,
        metavar="P",
        help="run on P local processes, results identical to one (see README, More than one "
        "process); under torchrun the processes are torchrun's",
    )
    run.set_defaults(handler=handlers["run"])

    listing = commands.add_parser("list", help="list case studies, rules and attacks")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument(
        "--plugin",
        action="append",
        default=[],
        type=Path,
        metavar="FILE.py",
        help="import a Python file first and list what it registers too",
    )
    listing.set_defaults(handler=handlers["list"])

    bench = commands.add_parser("bench", help="time the engine (paper experiment, scaling)")
    bench.add_argument(
        "--only",
        default="paper,scaling",
        help="benchmarks among paper, scaling, full (the whole run at the largest size)",
    )
    bench.add_argument(
        "--agents", default="1e3,1e4,1e5", help="network sizes for scaling, e.g. 1e3,1e4,1e5,1e6"
    )
    bench.add_argument("--rounds", type=int, default=20, help="rounds timed per size")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.set_defaults(handler=handlers["bench"])

    grid = commands.add_parser("matrix", help="every rule against every attack, over seeds")
    grid.add_argument("case", nargs="?", help=f"case study: {cases}")
    grid.add_argument("--rules", type=csv, default=["all"], help="rules, or 'all' (default)")
    grid.add_argument("--attacks", type=csv, default=["all"], help="attacks, or 'all' (default)")
    grid.add_argument("--seeds", type=seeds, default=[0, 1, 2], help="seeds (default 0,1,2)")
    add_run_options(grid)
    grid.add_argument("--out", type=Path, required=True, help="matrix folder (resumed if present)")
    grid.add_argument("--overwrite", action="store_true", help="start the folder afresh")
    grid.add_argument("--quiet", action="store_true", help="print nothing on success")
    grid.set_defaults(handler=handlers["matrix"])

    redraw = commands.add_parser(
        "plot",
        help="redraw a run's figures from its results folder (exit 1 if one is not drawn)",
    )
    redraw.add_argument("run_dir", type=Path, help="results folder of byzmtl run")
    redraw.add_argument(
        "--format", type=csv, default=["png"], help="comma-separated: png, pdf, svg (default png)"
    )
    redraw.add_argument(
        "--band", default="minmax", help="minmax (default) or a percentile band such as p10-p90"
    )
    redraw.add_argument("--quiet", action="store_true", help="print nothing on success")
    redraw.set_defaults(handler=handlers["plot"])
    return parser
