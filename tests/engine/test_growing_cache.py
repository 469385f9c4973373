"""The batch's cache layers append in place into reserved room, and give exactly what the
stock concatenating layer gives."""

import torch
from transformers.cache_utils import DynamicLayer

from app.engine.batch import ROOM, GrowingLayer, KVBatch, cache_from


def random_kv(rows: int, steps: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, 2, steps, 4, generator=torch.Generator().manual_seed(seed))


def test_appends_equal_concatenation_across_regrowth() -> None:
    ours, stock = GrowingLayer(), DynamicLayer()
    sizes = [7] + [1] * (ROOM + 5) + [3]  # a prefill, more decode steps than the room, a chunk
    for step, size in enumerate(sizes):
        k, v = random_kv(3, size, step), random_kv(3, size, 1000 + step)
        got_k, got_v = ours.update(k, v)
        want_k, want_v = stock.update(k, v)
        assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
        assert ours.get_seq_length() == stock.get_seq_length()
    assert ours._buffers[0].shape[2] > ours.get_seq_length()  # room left for later steps


def test_assigned_tensors_are_never_written_into() -> None:
    shared = random_kv(2, 5, 0)  # e.g. a prefix cache entry held elsewhere
    before = shared.clone()
    layer = cache_from([(shared, shared)]).layers[0]
    layer.update(random_kv(2, 1, 1), random_kv(2, 1, 2))
    assert torch.equal(shared, before)
    assert layer.get_seq_length() == 6


def test_rows_leave_with_their_room() -> None:
    layer = GrowingLayer()
    k, v = random_kv(4, 6, 0), random_kv(4, 6, 1)
    layer.update(k, v)
    capacity = layer._buffers[0].shape[2]
    layer.take_rows(torch.tensor([3, 1]))
    assert torch.equal(layer.keys, k[[3, 1]]) and torch.equal(layer.values, v[[3, 1]])
    assert layer._buffers[0].shape[2] == capacity  # no reallocation for the next step
    step_k, step_v = random_kv(2, 1, 2), random_kv(2, 1, 3)
    got_k, _ = layer.update(step_k, step_v)
    assert torch.equal(got_k, torch.cat([k[[3, 1]], step_k], dim=2))


def test_batch_drops_unused_columns_only_when_worth_a_copy() -> None:
    kv = [(random_kv(2, 40, 0), random_kv(2, 40, 1))]
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :30] = 0  # row 1 is 10 tokens long, left-padded
    batch = KVBatch(cache_from(kv), mask.clone(), torch.tensor([40, 10]))
    batch.select([1])  # 30 unused columns of 40: dropped
    assert batch.length == 10
    assert torch.equal(batch.cache.layers[0].keys, kv[0][0][1:2, :, 30:])

    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :4] = 0
    batch = KVBatch(cache_from(kv), mask, torch.tensor([40, 36]))
    batch.select([1])  # 4 unused columns: kept (masked), no copy of the whole cache
    assert batch.length == 40
    assert torch.equal(batch.cache.layers[0].keys, kv[0][0][1:2])


def test_merged_rows_are_padded_with_zeros_and_keep_room_to_grow() -> None:
    a = [(random_kv(2, 5, 0), random_kv(2, 5, 1))]
    b = [(random_kv(1, 8, 2), random_kv(1, 8, 3))]
    first = KVBatch(cache_from(a), torch.ones(2, 5, dtype=torch.long), torch.tensor([5, 5]))
    second = KVBatch(cache_from(b), torch.ones(1, 8, dtype=torch.long), torch.tensor([8]))
    first.merge(second)
    layer = first.cache.layers[0]
    want_k = torch.cat([torch.cat([torch.zeros(2, 2, 3, 4), a[0][0]], dim=2), b[0][0]])
    want_v = torch.cat([torch.cat([torch.zeros(2, 2, 3, 4), a[0][1]], dim=2), b[0][1]])
    assert torch.equal(layer.keys, want_k) and torch.equal(layer.values, want_v)
    assert first.mask.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1]] * 2 + [[1] * 8]
    assert first.positions.tolist() == [5, 5, 8]
    buffer = layer._buffers[0]
    step_k, step_v = random_kv(3, 1, 4), random_kv(3, 1, 5)
    got_k, got_v = layer.update(step_k, step_v)
    assert layer._buffers[0] is buffer  # appended into the room: no copy at the next step
    assert torch.equal(got_k, torch.cat([want_k, step_k], dim=2))
    assert torch.equal(got_v, torch.cat([want_v, step_v], dim=2))
    # The sources are left alone (a prefix cache may hold them).
    assert torch.equal(a[0][0], random_kv(2, 5, 0)) and torch.equal(b[0][0], random_kv(1, 8, 2))
