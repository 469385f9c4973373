"""A long prompt's prefill, run a chunk per scheduler step (vLLM's "chunked prefill").

Prefilling an 8k-token prompt in one forward pass takes tens of seconds on a CPU, and every
other request (running rows' next tokens, a two-token question) would wait for all of it.
Instead the scheduler runs at most `prefill_chunk` of its tokens per step, between the running
batch's decode steps; the row's keys and values build up in a cache of its own and it joins
the batch when its last chunk gives the logits of its first new token.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

from app.engine.batch import KV, cache_from, kv_of

if TYPE_CHECKING:
    from app.engine.scheduler import Sequence


@dataclass(eq=False)  # compared by identity
class PartialPrefill:
    seq: "Sequence"
    # The leading tokens that are a cacheable template prefix (0: none). When the prefix was
    # not cached, the chunks stop at its end once, so its keys and values can be stored.
    prefix_len: int
    done: int = 0  # prompt tokens whose keys and values are in `cache`
    cache: DynamicCache | None = None

    @property
    def total(self) -> int:
        return len(self.seq.prompt_ids)

    def next_span(self, chunk: int) -> tuple[int, int]:
        end = min(self.done + chunk, self.total)
        if self.done < self.prefix_len:
            end = min(end, self.prefix_len)
        return self.done, end

    def advance(self, out_cache: DynamicCache, end: int) -> None:
        # The first chunk's cache is the model's own: re-held in layers that grow in place.
        self.cache = cache_from(kv_of(out_cache)) if self.cache is None else out_cache
        self.done = end

    def prefix_kv(self) -> KV:
        """The prefix's keys and values, copied out of the row's cache (a view would keep
        the whole prompt's buffer alive in the prefix cache)."""
        assert self.cache is not None
        p = self.prefix_len
        return [(k[:, :, :p].clone(), v[:, :, :p].clone()) for k, v in kv_of(self.cache)]

    def inputs(self, start: int, end: int, device: torch.device):
        """ids, attention mask and positions for the span [start, end): one row, no padding."""
        ids = torch.tensor([self.seq.prompt_ids[start:end]], device=device)
        mask = torch.ones((1, end), dtype=torch.long, device=device)
        positions = torch.arange(start, end, device=device)[None]
        return ids, mask, positions
