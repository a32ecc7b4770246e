"""Ranks: one simulation run by P processes (a torch.distributed group), bit-identical to one.

Stage 1 of the distributed engine. Every rank holds the whole state and computes the round's
replicated steps itself (adapt, send and the all-pairs scores are deterministic functions of the
state and of the seed-keyed random streams, so every rank gets the same psi and the same attack
messages). Only weigh and combine are split: the engine's shards (:mod:`byzmtl.engine.shards`,
contiguous ranges of receivers) are cut into P contiguous ranges of shards,

    rank r owns shards [floor(r S / P), floor((r + 1) S / P))    (S shards, P ranks),

and rank r weighs and combines its shards only. The shard list is the one-process run's (its
boundaries depend on ``shard_edges`` and the graph, never on P), so every kernel runs on exactly
the inputs it has with P = 1, and the joined round is bit for bit the one-process round.

Exchanged per round (one gather of pickled objects, in rank order): each rank's shard results,
i.e. for each of its shards the new models of its receivers (R, N_s, d), every rule's edge
weights (E_s,) and every rule's new state (per-edge and per-receiver tensors); about
8 (R N d + 2 R E) bytes per round in all at float64, whatever P. Every rank then joins the S
parts in shard order, exactly as the one-process engine does, and carries on with the whole
state: metrics, diagnostics and summaries are computed from the same tensors on every rank.

With a single shard (a small network under the default ``shard_edges``) rank 0 does all the
weighing and the other ranks wait for it.

The gather is ``all_gather_object``'s (pickle every rank's object, gather the sizes, gather the
payloads padded to the longest, unpickle each), written out so that every gather's cost is
counted where it is paid, at no cost beyond two clock readings (:class:`Traffic`, in
``Ranks.traffic``): the bytes this rank sent (its pickled payload) and received (the other
ranks' payloads), the seconds in the two collectives (waiting for the slowest rank included)
and the seconds pickling and unpickling. What is gathered, and so every result, is the same.

Failure is agreed: a rank whose round raises sends its exception instead of its parts (in the
same gather), and every rank raises (:class:`AgreedFailure`, carrying the first failing rank's
error; rank 0 raises its own exception where it failed itself), so no rank waits for a peer
that has given up. The process group's timeout
ends a wait for a peer that died without a word.
"""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor

from byzmtl.rules.base import RuleState

Part = tuple[Tensor, list[Tensor | None], list[RuleState]]  # one shard's models, weights, states
T = TypeVar("T")


class PeerLost(RuntimeError):
    """An exchange failed: a peer stopped, or did not answer within the group's timeout."""


class AgreedFailure(Exception):
    """Raised on a rank whose peer failed: ``error`` is the peer's exception, ``rank`` its rank
    (the lowest rank that failed)."""

    def __init__(self, rank: int, error: BaseException) -> None:
        super().__init__(f"rank {rank}: {error}")
        self.rank, self.error = rank, error


def lost_peers(rank: int, error: BaseException) -> PeerLost:
    """The one-line error of a collective that failed because a peer went away."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return PeerLost(f"rank {rank} lost its peers ({first})")


def owned_range(n_shards: int, rank: int, world: int) -> range:
    """The shards rank ``rank`` of ``world`` weighs and combines: a contiguous range, the
    ranges of ranks 0..world-1 covering 0..n_shards-1 in order."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return range(rank * n_shards // world, (rank + 1) * n_shards // world)


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def compact(value: Any) -> Any:
    """A part's tensors on the CPU, each holding only its own elements (a pickled view sends
    its whole storage): copied only where it is a view, or on another device."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        whole = value.untyped_storage().nbytes() == value.numel() * value.element_size()
        return value if whole and value.is_contiguous() else value.clone()
    if isinstance(value, RuleState):
        return RuleState(compact(value.edges), compact(value.agents))
    if isinstance(value, dict):
        return {key: compact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(compact(item) for item in value)
    return value


def _placed(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, RuleState):
        return RuleState(_placed(value.edges, device), _placed(value.agents, device))
    if isinstance(value, dict):
        return {key: _placed(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_placed(item, device) for item in value)
    return value


@dataclass
class Traffic:
    """What this rank's gathers cost, one entry per gather in the order they ran (the setup's
    agreed steps, then one per round): ``sent`` the bytes of this rank's pickled payload,
    ``received`` the bytes of the other ranks' payloads (gloo moves each padded to the longest
    of the gather, plus one 8-byte size per rank), ``wait_seconds`` the seconds in the
    collectives (the transfer and the wait for the slowest rank), ``codec_seconds`` the seconds
    pickling this rank's object and unpickling all of them. A partitioned run
    (:mod:`byzmtl.engine.partition`) also exchanges its halo each round, one
    ``all_to_all_single`` of raw tensors: ``halo_sent`` and ``halo_received`` its bytes,
    ``halo_seconds`` the seconds in it (one entry per round)."""

    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    wait_seconds: list[float] = field(default_factory=list)
    codec_seconds: list[float] = field(default_factory=list)
    halo_sent: list[int] = field(default_factory=list)
    halo_received: list[int] = field(default_factory=list)
    halo_seconds: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sent)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a group of ``world`` processes running one simulation, and what
    its gathers cost (``traffic``)."""

    rank: int
    world: int
    traffic: Traffic = field(default_factory=Traffic, compare=False, repr=False)

    @classmethod
    def current(cls) -> Ranks:
        """The default torch.distributed process group (which must be initialised)."""
        import torch.distributed as dist

        return cls(dist.get_rank(), dist.get_world_size())

    def agree(self, compute: Callable[[], T]) -> T:
        """``compute()`` on every rank; if it raised on any, every rank raises: rank 0 its own
        exception if it failed, every other case :class:`AgreedFailure` with the first failing
        rank's error (so rank 0 alone has an error to report). Collective: every rank of the
        group must call it."""
        return self.collect(compute, lambda value: None)[0]

    def exchange(
        self,
        compute: Callable[[range], T],
        parts_of: Callable[[T], list[Part]],
        shards: int,
        device: torch.device,
    ) -> tuple[T, list[Part]]:
        """One round's exchange: ``compute(owned)`` on this rank's shards, then the parts of all
        ``shards`` in shard order (``parts_of`` the computed value on every rank, gathered in
        rank order). Agreed: a failure on any rank raises on every rank."""
        owned = owned_range(shards, self.rank, self.world)
        value, shared = self.collect(lambda: compute(owned), lambda v: compact(parts_of(v)))
        parts = [part for rank_parts in shared for part in rank_parts]
        if len(parts) != shards:  # pragma: no cover - the ranges cover the shards
            raise RuntimeError(f"ranks returned {len(parts)} shard parts, expected {shards}")
        return value, [_placed(part, device) for part in parts]

    def gathered(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order: ``all_gather_object``'s protocol (pickled
        payloads gathered as padded byte tensors), counted in :attr:`traffic`."""
        import torch.distributed as dist

        started = time.perf_counter()
        pickled = io.BytesIO()
        pickle.dump(value, pickled)
        view = pickled.getbuffer()  # no copy: the tensor below shares the pickle's bytes
        payload = torch.frombuffer(view, dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(self.world)]
        encoded = time.perf_counter()
        try:
            dist.all_gather(sizes, torch.tensor([payload.numel()], dtype=torch.long))
            longest = max(int(size) for size in sizes)
            short = longest - payload.numel()
            padded = torch.cat([payload, payload.new_zeros(short)]) if short else payload
            payloads = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.world)]
            dist.all_gather(payloads, padded)
        except (RuntimeError, OSError) as error:  # gloo and nccl report lost peers so
            raise lost_peers(self.rank, error) from error
        waited = time.perf_counter()
        del payload, padded
        view.release()
        out = [pickle.loads(payloads[r].numpy().data[: int(sizes[r])]) for r in range(self.world)]
        del payloads
        decoded = time.perf_counter()
        own = int(sizes[self.rank])
        self.traffic.sent.append(own)
        self.traffic.received.append(sum(int(size) for size in sizes) - own)
        self.traffic.wait_seconds.append(waited - encoded)
        self.traffic.codec_seconds.append((encoded - started) + (decoded - waited))
        return out

    def joined(self, value: Tensor, dim: int, cuts: Sequence[int]) -> Tensor:
        """The whole CPU tensor whose slice ``cuts[r]:cuts[r + 1]`` along ``dim`` rank r holds
        (this rank: ``value``): one broadcast per rank into its slice of the whole, so that the
        whole is held once (no pickles, no gathered copies). Collective."""
        import torch.distributed as dist

        own = value.detach().cpu()
        shape = list(own.shape)
        shape[dim] = int(cuts[-1])
        whole = own.new_empty(shape)
        for rank in range(self.world):
            piece = whole.narrow(dim, int(cuts[rank]), int(cuts[rank + 1] - cuts[rank]))
            if rank == self.rank:
                piece.copy_(own)
            buffer = piece if piece.is_contiguous() else piece.contiguous()
            try:
                dist.broadcast(buffer, src=rank)
            except (RuntimeError, OSError) as error:  # gloo and nccl report lost peers so
                raise lost_peers(self.rank, error) from error
            if buffer is not piece:
                piece.copy_(buffer)
        return whole

    def to_first(self, value: Any, receive: Callable[[int, Any], object]) -> None:
        """Every other rank's ``value`` to rank 0, one rank at a time in rank order, so that
        rank 0 holds one of them at a time: rank 0 calls ``receive(q, value_q)`` as each
        arrives (its own ``value`` is not used). Nobody is left waiting: a rank whose value
        cannot be pickled sends its error instead (and raises it), and a failure (that error,
        as :class:`AgreedFailure`, or ``receive`` raising) stops rank 0's calls, not its
        transfers: it takes every rank's value, then raises the first failure. Collective; its
        bytes are not counted in :attr:`traffic`."""
        try:
            failure = self._send_to_first(value) if self.rank else self._take(receive)
        except (RuntimeError, OSError) as error:  # gloo and nccl report lost peers so
            raise lost_peers(self.rank, error) from error
        if failure is not None:
            raise failure

    def _take(self, receive: Callable[[int, Any], object]) -> Exception | None:
        """Rank 0's part of :meth:`to_first`: every other rank's value, each given to
        ``receive`` until the first failure, which is returned."""
        import torch.distributed as dist

        failure: Exception | None = None
        for rank in range(1, self.world):
            size = torch.zeros(1, dtype=torch.long)
            dist.recv(size, src=rank)
            payload = torch.empty(int(size), dtype=torch.uint8)
            dist.recv(payload, src=rank)
            error, received = pickle.loads(payload.numpy().data)
            del payload
            if failure is None:
                try:
                    if error is not None:
                        raise AgreedFailure(rank, error)
                    receive(rank, received)
                except Exception as raised:
                    failure = raised
            del received
        return failure

    def _send_to_first(self, value: Any) -> Exception | None:
        """Send ``value`` to rank 0 (:meth:`to_first`), or, where it cannot be pickled, the
        error, which is returned."""
        import torch.distributed as dist

        pickled, failure = io.BytesIO(), None
        try:
            pickle.dump((None, compact(value)), pickled)
        except Exception as error:  # rank 0 waits for this rank: the error goes instead
            pickled, failure = io.BytesIO(), error
            pickle.dump((_portable(error), None), pickled)
        view = pickled.getbuffer()  # no copy: the tensor shares the pickle's bytes
        payload = torch.frombuffer(view, dtype=torch.uint8)
        dist.send(torch.tensor([payload.numel()], dtype=torch.long), dst=0)
        dist.send(payload, dst=0)
        del payload
        view.release()
        return failure

    def collect(self, compute: Callable[[], T], share: Callable[[T], Any]) -> tuple[T, list[Any]]:
        """``compute()`` here and every rank's ``share`` of its value, in one gather that also
        carries every rank's failure (see :meth:`agree`)."""
        error: Exception | None = None
        try:
            value = compute()
            payload: tuple[BaseException | None, Any] = (None, share(value))
        except Exception as raised:
            error, payload = raised, (_portable(raised), None)
        gathered = self.gathered(payload)
        if self.rank == 0 and error is not None:
            raise error
        for rank, (failure, _) in enumerate(gathered):
            if failure is not None:
                raise AgreedFailure(rank, failure) from error
        return value, [shared for _, shared in gathered]
