"""Checkpoints of a run in progress, written so that a kill at any instant, SIGKILL included,
leaves the previous checkpoint or the next one, never a torn one.

A run with ``checkpoint_every = K`` writes, every K rounds (target localization) or K epochs
(learning case studies), into its results folder::

    RUN_DIR/config.toml                the resolved configuration (written once, first)
    RUN_DIR/checkpoint/manifest.json   which files make up the checkpoint, see below
    RUN_DIR/checkpoint/rank0-000014.pt one process's part of the state after round 14

The manifest::

    {"format": 1, "round": 14, "rounds": 40, "ranks": 1, "files": ["rank0-000014.pt"],
     "config": "<the resolved configuration, TOML>", "config_sha256": "...",
     "versions": {"byzmtl": "...", "torch": "..."}, "threads": 1, "cwd": "...",
     "inputs": {"task.data_dir": "<sha256>"}}

``threads``: torch's CPU threads, which decide how reductions are split, so a resumed run uses
the same number unless told otherwise; ``cwd``: the working folder the configuration's relative
paths were read against; ``inputs``: the fingerprints of the files and folders the settings name
(:mod:`byzmtl.inputs`), which a resumed run must find unchanged. A rank file is a
``torch.save`` of plain tensors, lists and numbers (read back with ``weights_only``): the
simulation state (models, learner and optimiser states, rules' states and accumulated scores,
the containment counters; randomness is keyed by seed, agent and round, so the round number is
its whole position), the recorder's and the diagnostics' state (every row so far, rounds not
yet reduced kept as they are), and the run's timings so far.

One process, and a run of several whose processes each hold the whole state (stage 1,
:mod:`byzmtl.engine.ranks`), write one file. A partitioned run (:mod:`byzmtl.engine.partition`)
writes one file per rank, ``rank<p>-<t>.pt`` holding rank p's part of the state (and the same
records as every other's), ``"ranks": P``; rank 0 writes them all, each rank sending its part in
turn (so that the results folder need be on rank 0's disk only, and rank 0 holds one other
part at a time), and a resumed run's rank p reads its own file.

Writing checkpoint t: each file is written under a temporary name beside it, fsynced and renamed
to ``rank<p>-<t>.pt`` (a new name: the files of the previous checkpoint are left alone); then
the manifest naming the new files is written the same way, renamed over the old one and the
folder fsynced. That rename is the commit: before it the old manifest names the old, complete
files; after it the new one names the new, complete files. Files no manifest names (the
previous checkpoint's, or those of one killed before its manifest) are deleted after the commit
and when a run is resumed; a write that fails deletes the files it wrote.

A results folder holding ``checkpoint/`` and no ``summary.json`` is an interrupted run
(:func:`byzmtl.results.is_interrupted_run`); the finished run replaces the whole folder in one
step (:mod:`byzmtl.destination`), checkpoint included, so a finished run has no checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from byzmtl.config import ConfigError
from byzmtl.destination import remove_temporaries, temporary_beside
from byzmtl.engine.ranks import Ranks
from byzmtl.engine.state import SimState
from byzmtl.inputs import fingerprints
from byzmtl.results import CHECKPOINT_FOLDER
from byzmtl.version import __version__

FORMAT = 1
CHECKPOINT = CHECKPOINT_FOLDER
MANIFEST = "manifest.json"
CONFIG = "config.toml"
_RANK_FILE = re.compile(r"rank(?P<rank>\d+)-(?P<round>\d+)\.pt")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be written, read or continued; one line, naming the folder."""


@dataclass
class Snapshot:
    """Everything one process needs to continue a run after round ``state.iteration``."""

    state: SimState
    recorder: dict[str, Any]  # byzmtl.recording.Recorder.state_dict()
    diagnostics: dict[str, Any]  # byzmtl.recording.Diagnostics.state_dict()
    seconds: dict[str, float]  # the run's "wall" and "compute" seconds so far

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.as_dict(),
            "recorder": self.recorder,
            "diagnostics": self.diagnostics,
            "seconds": dict(self.seconds),
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Snapshot:
        return cls(
            SimState.from_dict(record["state"]),
            record["recorder"],
            record["diagnostics"],
            {key: float(value) for key, value in record["seconds"].items()},
        )


def versions() -> dict[str, str]:
    """The versions a checkpoint must be continued with to give the same numbers."""
    return {"byzmtl": __version__, "torch": torch.__version__}


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class CheckpointFolder:
    """The checkpoint folder of one run: :meth:`write` a snapshot, :meth:`read` the last one.
    ``timings`` collects (seconds, bytes) of every checkpoint this object wrote."""

    path: Path
    shown: Path | None = None  # the run's folder as the user named it (for messages)
    timings: list[tuple[float, int]] = field(default_factory=list)

    def resume_hint(self) -> str:
        """What to tell a user whose run stopped: where it stands and how to continue."""
        run_dir = self.shown if self.shown is not None else self.path.parent
        manifest = self.manifest()
        if manifest is None:
            return f"no checkpoint was written yet in {run_dir}"
        return (
            f"the checkpoint after round {manifest['round']} of {manifest['rounds']} is in "
            f"{run_dir}; continue with: byzmtl run --resume {run_dir}"
        )

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any] | None:
        """The committed manifest, or None where no checkpoint was committed yet."""
        try:
            text = self.manifest_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise CheckpointError(
                f"checkpoint: cannot read {self.manifest_path}: {error}"
            ) from None
        try:
            manifest = json.loads(text)
        except ValueError:
            manifest = None
        fields = {"format": int, "round": int, "rounds": int, "ranks": int, "files": list}
        if not isinstance(manifest, dict) or not all(
            isinstance(manifest.get(key), kind) for key, kind in fields.items()
        ):
            raise CheckpointError(f"checkpoint: {self.manifest_path} is not a manifest")
        return manifest

    def write(
        self, snapshot: Snapshot, rounds: int, config_text: str, ranks: Ranks | None = None
    ) -> None:
        """Commit ``snapshot`` as the folder's checkpoint (see the module docstring). With
        ``ranks`` (rank 0 of a partitioned run, whose snapshot holds its part of the state),
        every other rank's part too, as each sends it (:func:`send_part`). A write the system
        refuses (a full disk, say) is a one-line :class:`CheckpointError` that says which
        checkpoint stays and how to continue from it."""
        try:
            self._write(snapshot, rounds, config_text, ranks)
        except OSError as error:
            raise CheckpointError(
                f"checkpoint: the checkpoint after round {snapshot.state.iteration} could not "
                f"be written ({error}); {self.resume_hint()}"
            ) from error

    def _write(
        self, snapshot: Snapshot, rounds: int, config_text: str, ranks: Ranks | None
    ) -> None:
        started = time.perf_counter()
        round_ = snapshot.state.iteration
        names: list[str] = []
        size = 0

        def write_part(rank: int, record: dict[str, Any]) -> None:
            nonlocal size
            name = f"rank{rank}-{round_:06d}.pt"
            size += _write_durably(self.path / name, lambda file: torch.save(record, file))
            names.append(name)

        try:
            try:
                write_part(0, snapshot.as_dict())
            finally:  # every other rank's part is taken, even where this one failed
                if ranks is not None:
                    ranks.to_first(None, write_part if names else _dropped)
        except BaseException:  # nothing stays of a checkpoint that failed
            for name in names:
                (self.path / name).unlink(missing_ok=True)
            raise
        manifest = {
            "format": FORMAT,
            "round": round_,
            "rounds": rounds,
            "ranks": len(names),
            "files": names,
            "config": config_text,  # the resolved configuration, as RUN_DIR/config.toml
            "config_sha256": config_hash(config_text),
            "versions": versions(),
            "threads": torch.get_num_threads(),  # CPU reductions split by thread count
            "cwd": os.getcwd(),  # where the configuration's relative paths point
            "inputs": fingerprints(tomllib.loads(config_text), os.getcwd()),  # the data read
        }
        text = json.dumps(manifest, indent=2) + "\n"
        size += _write_durably(self.manifest_path, lambda file: file.write(text.encode()))
        self.remove_unnamed(manifest)
        self.timings.append((time.perf_counter() - started, size))

    def remove_unnamed(self, manifest: dict[str, Any] | None) -> None:
        """Delete the rank files ``manifest`` does not name and unfinished temporary files
        (only while this process holds the run's folder: their writer is dead or is us)."""
        named = set() if manifest is None else set(manifest["files"])
        for entry in self.path.iterdir():
            if _RANK_FILE.fullmatch(entry.name) and entry.name not in named:
                entry.unlink(missing_ok=True)
        remove_temporaries(self.path)

    def read(
        self, config_text: str, device: torch.device | str = "cpu", rank: int = 0, world: int = 1
    ) -> Snapshot:
        """The committed checkpoint (rank ``rank``'s part of a checkpoint of ``world``
        partitioned ranks), checked against the run's configuration text and this
        installation's versions; a one-line :class:`CheckpointError` otherwise."""
        manifest = self.manifest()
        if manifest is None:
            raise CheckpointError(f"checkpoint: {self.path} holds no checkpoint yet")
        parts = manifest["ranks"]
        if manifest["format"] != FORMAT or parts != world or len(manifest["files"]) != parts:
            raise CheckpointError(
                f"checkpoint: {self.manifest_path} has format {manifest['format']} with "
                f"{parts} ranks; this run reads format {FORMAT} with {world}"
            )
        if manifest.get("config_sha256") != config_hash(config_text):
            raise CheckpointError(
                f"checkpoint: {self.path.parent / CONFIG} changed since the checkpoint was "
                "written; a resumed run keeps its configuration"
            )
        if manifest.get("versions") != versions():
            raise CheckpointError(
                f"checkpoint: written by {_shown(manifest.get('versions'))}, this is "
                f"{_shown(versions())}; continuing would not give the uninterrupted run's numbers"
            )
        name = manifest["files"][rank]
        try:
            record = torch.load(self.path / name, map_location=device, weights_only=True)
            snapshot = Snapshot.from_dict(record)
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint: cannot read {self.path / name}: {error}") from None
        if snapshot.state.iteration != manifest["round"]:
            raise CheckpointError(
                f"checkpoint: {self.path / name} is not round {manifest['round']}"
            )
        return snapshot


def send_part(ranks: Ranks, snapshot: Snapshot) -> None:
    """A rank's part of a partitioned run's checkpoint, sent to rank 0, which writes it
    (:meth:`CheckpointFolder.write`). Collective."""
    ranks.to_first(snapshot.as_dict(), _dropped)


def _dropped(rank: int, record: dict[str, Any]) -> None:
    """A received part that is not written (rank 0's own failed, or this is not rank 0)."""


def _shown(named: Any) -> str:
    if not isinstance(named, dict):
        return "an unknown version"
    return " / ".join(f"{key} {value}" for key, value in named.items())


def _write_durably(path: Path, write: Callable[[IO[bytes]], object]) -> int:
    """Write ``path`` via a temporary file beside it: written, flushed, fsynced, renamed onto
    ``path``, then the folder fsynced. Returns the bytes written."""
    temporary = temporary_beside(path)
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
            size = file.tell()
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
    return size


def write_text_durably(path: Path, text: str) -> None:
    """A text file written as :func:`_write_durably` writes."""
    _write_durably(path, lambda file: file.write(text.encode()))


def sync_folder(folder: Path) -> None:
    """Make the folder's entries (renames, new files) durable; nothing to do on Windows."""
    if sys.platform == "win32":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
