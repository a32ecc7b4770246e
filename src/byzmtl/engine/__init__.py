"""The engine: one adapt-then-combine round, vectorised over agents, edges and rules.

- :mod:`~byzmtl.engine.simulation`: the round (``Simulation``), as six named steps;
- :mod:`byzmtl.protocols`: what the engine needs from a case study, and optional hooks;
- :mod:`~byzmtl.engine.state`: the state carried from round to round, checkpointed bit for bit;
- :mod:`~byzmtl.engine.sending`: what receivers hear (the attack's messages);
- :mod:`~byzmtl.engine.shards`, :mod:`~byzmtl.engine.messages`, :mod:`~byzmtl.engine.combine`:
  weighing and combining shard by shard, from the models heard;
- :mod:`~byzmtl.engine.containment`: normal agents stay finite whatever they receive;
- :mod:`~byzmtl.engine.ranks`: the shards split over the processes of a torch.distributed group,
  every round bit for bit the one-process round (stage 1: every process holds everything);
- :mod:`~byzmtl.engine.partition`: each process holds its own agents only and receives its halo
  (stage 2, where the task, the attack and the graph allow), bit for bit the same rounds.
"""

from byzmtl.engine.containment import keep_finite
from byzmtl.engine.sending import AttackOutputError
from byzmtl.engine.shards import SHARD_EDGES, Shard, make_shards
from byzmtl.engine.simulation import Simulation
from byzmtl.engine.state import RoundOutput, SimState
from byzmtl.protocols import LabelFlipping, ParameterTensors, SenderLosses, Task

__all__ = [
    "SHARD_EDGES",
    "AttackOutputError",
    "LabelFlipping",
    "ParameterTensors",
    "RoundOutput",
    "SenderLosses",
    "Shard",
    "SimState",
    "Simulation",
    "Task",
    "keep_finite",
    "make_shards",
]
