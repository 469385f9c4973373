"""The running batch's key/value cache: rows of different lengths side by side.

All rows share one time axis. Columns a row does not use (left padding, or the gap between
a cached template prefix and the rest of its prompt) are zero in `mask`, so attention never
sees them; each row's rotary position is tracked in `positions`, so padding never shifts a
token's position. Rows join (`merge`) and leave (`select`) between forward passes.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [rows, heads, time, dim]


def cache_from(kv: KV) -> DynamicCache:
    """A DynamicCache holding `kv` as is (no copy)."""
    cache = DynamicCache()
    layers = []
    for keys, values in kv:
        layer = DynamicLayer()
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        layers.append(layer)
    cache.layers = layers
    return cache


def kv_of(cache: DynamicCache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def check_supported(config) -> None:  # noqa: ANN001 - a transformers config
    """The batch keeps whole-history layers; sliding-window or linear-attention layers would
    need their own bookkeeping, so such models are refused early with a clear message."""
    layers = DynamicCache(config=config).layers
    odd = {type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer}
    if odd:
        raise NotImplementedError(
            f"The serving engine supports full-attention models only; this one has {sorted(odd)}"
        )


def pad_left(t: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    if columns == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [columns, 0]
    return F.pad(t, pad)


@dataclass
class KVBatch:
    cache: DynamicCache
    mask: torch.Tensor  # [rows, time] long, 1 where the row has a real token
    positions: torch.Tensor  # [rows] long, the position of each row's next token

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def select(self, keep: list[int]) -> None:
        """Keep only these rows (in this order), then drop columns no row uses any more."""
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache = cache_from([(k[index], v[index]) for k, v in kv_of(self.cache)])
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        self.compact()

    def compact(self) -> None:
        used = self.mask.bool().any(dim=0)
        if bool(used.all()):
            return
        cols = used.nonzero().squeeze(1)
        self.cache = cache_from(
            [(k.index_select(2, cols), v.index_select(2, cols)) for k, v in kv_of(self.cache)]
        )
        self.mask = self.mask[:, cols]

    def merge(self, other: "KVBatch") -> None:
        """Append `other`'s rows; the shorter side is padded on the left."""
        length = max(self.length, other.length)
        mine, theirs = length - self.length, length - other.length
        self.cache = cache_from(
            [
                (
                    torch.cat([pad_left(k1, mine, 2), pad_left(k2, theirs, 2)]),
                    torch.cat([pad_left(v1, mine, 2), pad_left(v2, theirs, 2)]),
                )
                for (k1, v1), (k2, v2) in zip(kv_of(self.cache), kv_of(other.cache), strict=True)
            ]
        )
        self.mask = torch.cat([pad_left(self.mask, mine, 1), pad_left(other.mask, theirs, 1)])
        self.positions = torch.cat([self.positions, other.positions])
