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

# Time steps of room reserved whenever a layer's buffer is (re)allocated.
ROOM = 64


class GrowingLayer(DynamicLayer):
    """A cache layer that appends into reserved room instead of concatenating.

    The stock DynamicLayer copies its whole history at every decode step (torch.cat), which
    for 16 rows of a few hundred tokens costs as much as a tenth of the step. This one writes
    each step's keys and values into spare columns and copies only when the room runs out
    (every ROOM steps). `keys`/`values` are views of the filled part. A tensor assigned to
    them is held as is, with no room, so the first append reallocates: nothing is ever
    written into a tensor this layer did not allocate (the prefix cache shares its tensors).
    """

    def __init__(self, **kwargs: object) -> None:
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._filled = [0, 0]
        super().__init__(**kwargs)

    def _view(self, i: int) -> torch.Tensor | None:
        buffer = self._buffers[i]
        return None if buffer is None else buffer[:, :, : self._filled[i]]

    def _hold(self, i: int, tensor: torch.Tensor | None) -> None:
        if tensor is None or tensor.dim() != 4:  # lazy_initialization's empty placeholder
            self._buffers[i], self._filled[i] = None, 0
        else:
            self._buffers[i], self._filled[i] = tensor, tensor.shape[2]

    keys = property(lambda self: self._view(0), lambda self, t: self._hold(0, t))
    values = property(lambda self: self._view(1), lambda self, t: self._hold(1, t))

    def _append(self, i: int, new: torch.Tensor) -> None:
        buffer, filled, steps = self._buffers[i], self._filled[i], new.shape[2]
        if buffer is None or filled + steps > buffer.shape[2]:
            shape = (new.shape[0], new.shape[1], filled + steps + ROOM, new.shape[3])
            grown = new.new_empty(shape)
            if buffer is not None:
                grown[:, :, :filled] = buffer[:, :, :filled]
            buffer = self._buffers[i] = grown
        buffer[:, :, filled : filled + steps] = new
        self._filled[i] = filled + steps

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._append(0, key_states)
        self._append(1, value_states)
        return self.keys, self.values

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
        """Hold buffers this layer may write into (their first `filled` steps in use)."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        self._buffers, self._filled = [keys, values], [filled, filled]

    def take_rows(self, index: torch.Tensor) -> None:
        """Keep only these rows; the reserved room goes with them."""
        for i, buffer in enumerate(self._buffers):
            if buffer is not None:
                self._buffers[i] = buffer.index_select(0, index)


def cache_from(kv: KV) -> DynamicCache:
    """A DynamicCache holding `kv` as is (no copy), in layers that grow in place."""
    cache = DynamicCache()
    layers = []
    for keys, values in kv:
        layer = GrowingLayer()
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        layers.append(layer)
    cache.layers = layers
    return cache


def kv_of(cache: DynamicCache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def check_supported(config) -> None:  # a transformers config
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
        for layer in self.cache.layers:
            if isinstance(layer, GrowingLayer):
                layer.take_rows(index)
            else:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        self.compact()

    def compact(self, min_unused: int = 16) -> None:
        """Drop the columns no row uses, once there are enough of them to be worth a copy
        (masked columns cost attention time, but dropping them copies the whole cache)."""
        used = self.mask.bool().any(dim=0)
        if int((~used).sum()) < max(1, min_unused, self.length // 4):
            return
        cols = used.nonzero().squeeze(1)
        self.cache = cache_from(
            [(k.index_select(2, cols), v.index_select(2, cols)) for k, v in kv_of(self.cache)]
        )
        self.mask = self.mask[:, cols]

    def merge(self, other: "KVBatch") -> None:
        """Append `other`'s rows; the shorter side is padded on the left. Written straight
        into new buffers with room to grow, so the next decode step appends without a copy
        (a join used to copy every row's cache twice: once here, once at that append)."""
        length = max(self.length, other.length)
        mine, theirs = length - self.length, length - other.length
        layers = []
        for (k1, v1), (k2, v2) in zip(kv_of(self.cache), kv_of(other.cache), strict=True):
            layer = GrowingLayer()
            layer.adopt(_stacked(k1, k2, mine, theirs), _stacked(v1, v2, mine, theirs), length)
            layers.append(layer)
        cache = DynamicCache()
        cache.layers = layers
        self.cache = cache
        self.mask = torch.cat([pad_left(self.mask, mine, 1), pad_left(other.mask, theirs, 1)])
        self.positions = torch.cat([self.positions, other.positions])


def _stacked(a: torch.Tensor, b: torch.Tensor, pad_a: int, pad_b: int) -> torch.Tensor:
    """[a; b] on the row axis, each left-padded with zeros on the time axis to one length,
    in a buffer with ROOM spare steps. Padding is zeroed: masked columns must hold finite
    numbers (attention weighs them by zero, and 0 * NaN is NaN)."""
    rows_a, heads, time_a, dim = a.shape
    length = time_a + pad_a
    out = a.new_empty((rows_a + b.shape[0], heads, length + ROOM, dim))
    out[:rows_a, :, :pad_a].zero_()
    out[:rows_a, :, pad_a:length] = a
    out[rows_a:, :, :pad_b].zero_()
    out[rows_a:, :, pad_b:length] = b
    return out
