"""The engine's pure functions: which blocks a step reads, the seed of its random draws, and
the batches dev sets are scored in."""

from __future__ import annotations

import pytest
import torch

from tamt_cli.engine import FilledBatches, step_generator, step_indices


def test_steps_read_a_seeded_permutation_per_epoch_one_after_another():
    """Ten blocks, four a step: steps 0-4 read epoch 0's permutation and then epoch 1's, step 2
    straddling the two."""
    seed = 3
    read = torch.cat([step_indices(10, step, 4, seed) for step in range(5)])
    epochs = [
        torch.randperm(10, generator=torch.Generator().manual_seed(seed * 7_919 + e))
        for e in range(2)
    ]
    assert read.tolist() == torch.cat(epochs).tolist()
    assert sorted(read[:10].tolist()) == list(range(10))  # every block once per epoch
    assert sorted(read[10:].tolist()) == list(range(10))
    assert read[:10].tolist() != read[10:].tolist()  # epochs are shuffled differently
    assert step_indices(10, 2, 4, seed).tolist() == read[8:12].tolist()


def test_step_indices_depend_on_the_step_and_seed_only():
    once = step_indices(1000, 7, 16, 0)
    assert once.dtype == torch.long and once.shape == (16,)
    assert torch.equal(once, step_indices(1000, 7, 16, 0))  # a resumed run reads the same
    assert not torch.equal(once, step_indices(1000, 7, 16, 1))
    assert not torch.equal(once, step_indices(1000, 8, 16, 0))
    # a batch larger than the data runs through several epochs within one step
    many = step_indices(3, 0, 7, 0)
    assert sorted(many[:3].tolist()) == sorted(many[3:6].tolist()) == [0, 1, 2]


def test_step_generator_seeds_from_seed_step_process_and_micro_batch():
    gen = step_generator(1, 2, 0)
    assert gen.initial_seed() == (1 * 1_000_003 + 2) * 1_009
    assert step_generator(1, 2, 3, 4).initial_seed() == (1 * 1_000_003 + 2) * 1_009 + 3 * 101 + 4
    draws = {
        tuple(torch.rand(3, generator=step_generator(*args)).tolist())
        for args in [(1, 2, 0, 0), (2, 2, 0, 0), (1, 3, 0, 0), (1, 2, 1, 0), (1, 2, 0, 1)]
    }
    assert len(draws) == 5  # each of seed, step, process and micro-batch changes the draws
    first = torch.rand(3, generator=step_generator(5, 6, 1, 2))
    assert torch.equal(first, torch.rand(3, generator=step_generator(5, 6, 1, 2)))
    huge = step_generator(2**40, 2**40, 7)  # large seeds stay within the generator's range
    assert 0 <= huge.initial_seed() < 2**63 - 1


def test_the_last_batch_to_score_is_filled_up_with_the_first_examples():
    assert list(FilledBatches(11, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 0]]
    assert list(FilledBatches(8, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(FilledBatches(3, 8)) == [[0, 1, 2, 0, 1, 2, 0, 1]]
    assert len(FilledBatches(11, 4)) == 3 and len(FilledBatches(3, 8)) == 1


@pytest.mark.parametrize(("n", "batch", "world"), [(23, 5, 2), (12, 5, 2), (20, 5, 2), (7, 4, 3),
                                                   (3, 8, 2), (40, 4, 4)])  # fmt: skip
def test_on_several_processes_every_example_is_scored_in_the_batch_of_one_process(n, batch, world):
    """Accelerate's split of the batches over processes (what ``Engine.shard_loader`` uses)
    fills the last round with whole batches; gathered round by round and cut at the remainder
    (``gather_for_metrics``), the scores are every example's once, in order, each from the same
    batch as on one process."""
    from accelerate.data_loader import BatchSamplerShard

    one = list(FilledBatches(n, batch))
    shards = [
        list(BatchSamplerShard(FilledBatches(n, batch), world, rank, even_batches=True))
        for rank in range(world)
    ]
    assert len({len(s) for s in shards}) == 1  # every process takes part in every gather
    in_order = [b for batches in zip(*shards, strict=True) for b in batches]
    assert in_order[: len(one)] == one  # the batches of one process, then filling ones
    assert all(len(b) == batch for b in in_order)
    gathered: list[int] = []
    for i, batches in enumerate(zip(*shards, strict=True)):
        round_ = [idx for b in batches for idx in b]
        remainder = n % (batch * world)
        last = i == len(shards[0]) - 1
        gathered += round_[:remainder] if last and remainder else round_
    assert gathered == list(range(n))
