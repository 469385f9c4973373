"""Key/value cache of fixed prompt prefixes (a template's system prompt and static examples).

Keyed by (adapter, prefix token ids): an adapter changes the keys and values, so the same text
on two variants is two entries. Bounded by entry count, least recently used evicted first.
Used only by the scheduler thread; `drop_adapter` is called from that thread as well.
"""

from collections import OrderedDict

from app.engine.batch import KV

PrefixKey = tuple[str, tuple[int, ...]]


class PrefixCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[PrefixKey, KV] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._entries)

    def contains(self, key: PrefixKey) -> bool:
        """Whether `key` is cached, without counting a hit or a miss."""
        return key in self._entries

    def get(self, key: PrefixKey) -> KV | None:
        kv = self._entries.get(key)
        if kv is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return kv

    def put(self, key: PrefixKey, kv: KV) -> None:
        if not self.enabled:
            return
        self._entries[key] = kv
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def drop_adapter(self, label: str) -> None:
        """The adapter was deleted: its prefixes must never be served again."""
        for key in [k for k in self._entries if k[0] == label]:
            del self._entries[key]

    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for kv in self._entries.values() for k, v in kv)
