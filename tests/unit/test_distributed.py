"""Data-parallel arithmetic: torchrun's environment, batch shards and their loss weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from complex_ner.app import stages
from complex_ner.core.config import ConfigError, load_params
from complex_ner.core.device import pick_device
from complex_ner.core.distributed import World, any_rank, shard, shard_weight, sum_over_ranks

CPU = torch.device("cpu")


def test_world_from_torchrun_environment() -> None:
    assert World.from_env({}) == World(rank=0, size=1, local_rank=0)
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}
    world = World.from_env(env)
    assert (world.rank, world.size, world.local_rank) == (3, 4, 1)
    assert world.distributed and not world.main
    assert World.from_env({"WORLD_SIZE": "2", "RANK": "1"}).local_rank == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "two"}, r"\$WORLD_SIZE: expected a whole number, got 'two'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "rank 2 of 2"),
        ({"WORLD_SIZE": "0"}, "rank 0 of 0"),
    ],
)
def test_world_rejects_bad_environment(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        World.from_env(env)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_shards_are_disjoint_and_cover_the_batch(size: int, n: int) -> None:
    batch = list(range(n))
    shards = [shard(batch, World(rank=r, size=size)) for r in range(size)]
    assert sorted(i for s in shards for i in s) == batch
    # Strided: sizes differ by at most one, and a sorted batch gives every rank short and long.
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shard_weights_make_the_rank_average_the_batch_mean() -> None:
    # Per-sequence losses of a batch of 5, split over 2 ranks as shard() does.
    losses = torch.tensor([1.0, 4.0, 2.0, 8.0, 5.0])
    world_size = 2
    total = 0.0
    for rank in range(world_size):
        world = World(rank=rank, size=world_size)
        mine = shard(list(range(5)), world)
        local_mean = losses[mine].mean()
        total += float(local_mean) * shard_weight(len(mine), 5, world)
    # DDP divides the sum over ranks by the world size.
    assert total / world_size == pytest.approx(float(losses.mean()))
    assert shard_weight(3, 3, World()) == 1.0
    assert shard_weight(0, 3, World(rank=1, size=4)) == 0.0


def test_shard_weight_rejects_impossible_shares() -> None:
    with pytest.raises(ValueError, match="a shard of 4 of 3 loss terms"):
        shard_weight(4, 3, World())
    with pytest.raises(ValueError, match="a shard of 0 of 0"):
        shard_weight(0, 0, World())


def test_one_process_reductions_are_identities() -> None:
    assert sum_over_ranks([1.5, 2.0], World(), CPU) == [1.5, 2.0]
    assert any_rank([True, False], World(), CPU) == [True, False]


def test_devices_in_a_distributed_world() -> None:
    world = World(rank=1, size=2, local_rank=1)
    assert pick_device("cpu", world) == CPU
    if not torch.cuda.is_available():
        assert pick_device("auto", world) == CPU
    with pytest.raises(ValueError, match=r"train.device: 'cuda:0' pins one device, but 2"):
        pick_device("cuda:0", world)
    assert pick_device("cuda:0", World()) == torch.device("cuda:0")  # one process: as asked


def test_train_devices_start_torchrun_unless_already_under_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    two = load_params(root / "params.yaml", ["train.devices=2"])
    assert stages.needs_torchrun(two)
    assert not stages.needs_torchrun(load_params(root / "params.yaml"))  # the default: 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not stages.needs_torchrun(two)  # each process torchrun started trains as its rank
    assert stages.torchrun_command(2, ["train", "--lang", "es"]) == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "complex_ner.cli",
        "train",
        "--lang",
        "es",
    ]


def test_devices_is_one_run_wide_setting(root: Path) -> None:
    with pytest.raises(ConfigError, match="devices cannot differ per language"):
        load_params(root / "params.yaml", ["train.by_language={zh: {devices: 2}}"])
    with pytest.raises(ConfigError, match="train.devices"):
        load_params(root / "params.yaml", ["train.devices=0"])
