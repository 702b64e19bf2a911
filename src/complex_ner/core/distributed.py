"""Data-parallel rules: which process this is, its backend, its share of a batch, reductions.

``torchrun`` (``torch.distributed.run``) starts one process per device and tells each its place
through ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them the world is this process
alone and nothing here communicates. One global batch is split across the ranks (not one batch
per rank), so a run on N devices makes the updates a single process makes at the same
``train.batch_size``: each rank's mean loss is weighted by its share of the batch's loss terms
(:func:`shard_weight`) and DDP's gradient average then equals the whole batch's gradient.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: The variables torchrun sets for every process it starts.
WORLD_SIZE_ENV, RANK_ENV, LOCAL_RANK_ENV = "WORLD_SIZE", "RANK", "LOCAL_RANK"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size or self.local_rank < 0:
            raise ValueError(
                f"invalid process world: rank {self.rank} of {self.size} "
                f"(local rank {self.local_rank})"
            )

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, saves models and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> World:
        """The world torchrun describes in ``environ`` (default: this process's environment).

        Raises:
            ValueError: a variable that is not a whole number, or ranks outside the world.
        """
        env = os.environ if environ is None else environ

        def read(key: str, default: int) -> int:
            raw = env.get(key, "").strip()
            if not raw:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"${key}: expected a whole number, got {raw!r}") from None

        rank = read(RANK_ENV, 0)
        return cls(rank=rank, size=read(WORLD_SIZE_ENV, 1), local_rank=read(LOCAL_RANK_ENV, rank))


def shard(items: Sequence[T], world: World) -> list[T]:
    """This rank's disjoint share of one global batch: every ``size``-th item from ``rank``.

    Strided rather than contiguous: the trainer's batches are length-sorted, so every rank gets
    windows of about the same length (and about the same time per step).
    """
    return list(items[world.rank :: world.size])


def shard_weight(local_units: int, total_units: int, world: World) -> float:
    """The factor on this rank's mean loss that makes DDP's gradient average exact.

    DDP averages gradients over ranks; a rank whose mean is over ``local_units`` of the batch's
    ``total_units`` loss terms (sequences for a CRF, words for a token loss) must count
    ``size * local_units / total_units`` times for the average to equal the gradient of the
    whole batch's mean. One process: 1.0.

    Raises:
        ValueError: a batch without loss terms, or a share larger than the batch.
    """
    if total_units <= 0 or not 0 <= local_units <= total_units:
        raise ValueError(f"a shard of {local_units} of {total_units} loss terms")
    return world.size * local_units / total_units


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the block (nothing for a single process).

    The group is left at the end only when this block joined it (a caller that already did
    keeps it).
    """
    if not world.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend_for(device))
    try:
        yield
    finally:
        dist.destroy_process_group()


def sum_over_ranks(values: Sequence[float], world: World, device: torch.device) -> list[float]:
    """Each value summed over all ranks (the values themselves for one process)."""
    if not world.distributed:
        return [float(v) for v in values]
    # float64: token counts and summed losses stay exact far beyond float32's 2**24.
    buf = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return [float(v) for v in buf.tolist()]


def any_rank(flags: Sequence[bool], world: World, device: torch.device) -> list[bool]:
    """Each flag true on at least one rank: every process takes the same decision."""
    return [v > 0 for v in sum_over_ranks([float(f) for f in flags], world, device)]
