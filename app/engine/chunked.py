"""A long prompt's prefill, run a chunk per scheduler step (vLLM's "chunked prefill").

Prefilling an 8k-token prompt in one forward pass takes tens of seconds on a CPU, and every
other request (running rows' next tokens, a two-token question) would wait for all of it.
Instead the scheduler runs at most `prefill_chunk` of its tokens per step, between the running
batch's decode steps; the row's keys and values build up in a cache of its own and it joins
the batch when its last chunk gives the logits of its first new token.

`ChunkPacer` sizes each chunk: a whole `prefill_chunk` while the long prompts have the engine
to themselves, and about one decode step's time while other requests are running, so those
wait for a short chunk between their tokens instead of a full one.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from app.engine.batch import KV, cache_from, kv_of
from app.engine.sequence import Sequence


@dataclass(eq=False)  # compared by identity
class PartialPrefill:
    seq: Sequence
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


# A chunk never shrinks below this, so a long prompt keeps moving whatever else runs.
MIN_CHUNK = 32
# Chunks stay short this long after the last other request ran: a client's next request, or
# the next of a steady stream, should not find a full chunk under way when it comes.
QUIET_S = 0.5


class ChunkPacer:
    """How many prompt tokens the next chunk runs.

    A full chunk at thousands of positions takes many decode steps' time (seconds on a CPU),
    and the scheduler runs one chunk per step: every running row's next token, and every new
    request's prefill, would wait for it. So while other requests run (or ran in the last
    QUIET_S), a chunk is sized from the last chunk's time per token to take about as long as
    the last decode step: running rows then get half the engine, at worst, instead of a small
    share of it, and the long prompts the other half."""

    def __init__(self, full: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.full = full
        self.clock = clock
        self.step_s = 0.0  # the last decode step's time
        self.token_s = 0.0  # the last chunk's time per token
        self.busy_until = 0.0

    def other_work(self, step_s: float | None = None) -> None:
        """Other requests ran this step (a decode step of `step_s` seconds, or a prefill)."""
        self.busy_until = self.clock() + QUIET_S
        if step_s is not None:
            self.step_s = step_s

    def ran(self, tokens: int, seconds: float) -> None:
        self.token_s = seconds / max(1, tokens)

    def next_tokens(self) -> int:
        if self.clock() >= self.busy_until or not self.step_s or not self.token_s:
            return self.full
        return max(min(MIN_CHUNK, self.full), min(self.full, int(self.step_s / self.token_s)))
