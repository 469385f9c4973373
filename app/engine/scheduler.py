"""The scheduler thread: continuous batching of every variant, one forward pass per step.

Each step: take new requests (when idle, wait up to batch_wait_ms so a burst shares a
batch), make their adapters resident, prefill them together (reusing cached template
prefixes), merge them into the running batch, then run one decode forward for all rows,
whatever adapter each names (the adapter cache's row plan, "__base__" for the base model).
Finished and cancelled rows leave at once; their slots go to waiting requests.

No step's prefill is unbounded: short prompts are prefilled together up to prefill_chunk
tokens a step, and a prompt longer than that is prefilled a chunk per step on its own
(app/engine/chunked.py), so a long prompt delays the others by one chunk, not by all of it.
"""

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from app.engine.adapters import AdapterCache
from app.engine.batch import KV, KVBatch, cache_from, kv_of, pad_left
from app.engine.chunked import ChunkPacer, PartialPrefill
from app.engine.errors import EngineError, EngineShuttingDown, GenerationFailed
from app.engine.grammar_rules import GrammarLimits
from app.engine.prefix_cache import PrefixCache
from app.engine.requests import Delta, Event, Failed, Finished, RequestHandle, TokenLogprob
from app.engine.sampling import (
    adjust_logits,
    greedy_tokens,
    sample_rows,
)
from app.engine.sequence import Sequence
from app.engine.structured import mask_logits
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    max_batch_size: int = 16
    batch_wait_ms: float = 5.0
    max_queue: int = 256
    max_loaded_adapters: int = 8
    prefix_cache_entries: int = 16
    # Prompt tokens one step may prefill (short prompts together, or one chunk of a longer
    # one); 0: no limit, every prompt in one forward.
    prefill_chunk: int = 512
    # Structured outputs: size limits and the compile deadline (GRAMMAR_* settings).
    grammar_limits: GrammarLimits = field(default_factory=GrammarLimits)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "EngineConfig":
        return cls(
            max_batch_size=settings.max_batch_size,
            batch_wait_ms=settings.batch_wait_ms,
            max_queue=settings.max_queue,
            max_loaded_adapters=settings.max_loaded_adapters,
            prefix_cache_entries=settings.prefix_cache_entries,
            prefill_chunk=settings.prefill_chunk,
            grammar_limits=GrammarLimits.from_settings(settings),
        )


@dataclass
class EngineStats:
    """Counters tests and the benchmark read to see what the scheduler actually did."""

    forwards: int = 0
    max_rows: int = 0  # the most rows one forward pass carried
    mixed_forwards: int = 0  # forward passes whose rows named more than one variant
    joins: int = 0  # requests admitted while other rows were mid-generation
    deferred: int = 0  # admissions put off because every adapter slot was in use
    prompt_tokens_run: int = 0  # prompt tokens actually run through the model
    prefill_chunks: int = 0  # forward passes that ran one chunk of a long prompt


def token_logprob(logprobs: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """`logprobs`: one row's log-softmax over the vocabulary."""
    alternatives: tuple[tuple[int, float], ...] = ()
    if top > 0:
        values, ids = logprobs.topk(top)
        alternatives = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), alternatives)


def internal_error(exc: Exception) -> GenerationFailed:
    return GenerationFailed(f"Generation failed: {type(exc).__name__}")


class Scheduler:
    def __init__(
        self,
        *,
        model: PreTrainedModel,
        adapters: AdapterCache,
        prefixes: PrefixCache,
        config: EngineConfig,
        inbox: "queue.Queue[Sequence | None]",
        eos_ids: set[int],
        pad_id: int,
        device: torch.device,
        stats: EngineStats,
        stopping: threading.Event,
    ) -> None:
        self.model = model
        self.adapters = adapters
        self.prefixes = prefixes
        self.config = config
        self.inbox = inbox
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.device = device
        self.stats = stats
        self.stopping = stopping
        self.max_rows = max(1, config.max_batch_size)
        self.waiting: deque[Sequence] = deque()
        self.rows: list[Sequence] = []
        self.prefilling: deque[PartialPrefill] = deque()  # long prompts, oldest first
        self.pacer = ChunkPacer(config.prefill_chunk)
        self.batch: KVBatch | None = None
        self._outbox: list[tuple[RequestHandle, Event]] = []  # sent once per step
        # Test hooks (None: no cost), so tests wait on what the scheduler does instead of
        # sleeping or patching its methods: each step's logits, row by row; each model
        # forward's input ids, before it runs (a hook that blocks holds the scheduler there);
        # each row's end, with its finish reason.
        self.observe_logits: Callable[[list[Sequence], torch.Tensor], None] | None = None
        self.before_forward: Callable[[torch.Tensor], None] | None = None
        self.observe_finish: Callable[[Sequence, str], None] | None = None

    def load(self) -> tuple[int, int]:
        """(waiting, running) now, read from another thread: lengths only, which the
        scheduler's own thread may change a moment later. A long prompt in chunked prefill
        holds a batch slot already, so it counts as running."""
        return len(self.waiting), len(self.rows) + len(self.prefilling)

    # -- main loop ---------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self) -> None:
        try:
            while self._gather():
                self._admit()
                if self.rows:
                    started = time.perf_counter()
                    self._decode()
                    self.pacer.other_work(time.perf_counter() - started)
                # A long prompt's chunk runs last, after this step's tokens have gone out:
                # a short answer finished now is not held back by the chunk.
                self._flush()
                self._prefill_chunk()
                self._flush()
        finally:
            self._flush()
            self._fail_everything()

    def _flush(self) -> None:
        if self._outbox:
            events, self._outbox = self._outbox, []
            RequestHandle.push_many(events)

    def _take(self, timeout: float | None) -> bool:
        """Move one request from the inbox to `waiting`. False: nothing came in time, or
        stop was asked for (a None in the inbox, or the event)."""
        try:
            item = self.inbox.get(timeout=timeout) if timeout else self.inbox.get_nowait()
        except queue.Empty:
            return False
        if item is None:
            # A None wakes the scheduler for stop(), which sets the event first; one left over
            # from an earlier stop (the engine restarted since) is ignored.
            return False
        self.waiting.append(item)
        return True

    def _gather(self) -> bool:
        if not self.rows and not self.waiting and not self.prefilling:
            while not self.stopping.is_set() and not self._take(0.5):
                pass
            # Idle until now: give a burst a moment to arrive, so it shares one batch.
            deadline = time.monotonic() + self.config.batch_wait_ms / 1000
            while len(self.waiting) < self.max_rows and not self.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._take(remaining):
                    break
        # Mid-generation: whatever has arrived joins at this step, without waiting. Only a
        # batch's worth leaves the bounded inbox, so back-pressure stays where clients see it.
        while len(self.waiting) < self.max_rows and self._take(None):
            pass
        return not self.stopping.is_set()

    # -- admission and prefill ---------------------------------------------------------------
    def _admit(self) -> None:
        busy = [*self.rows, *(p.seq for p in self.prefilling)]
        pinned = {r.adapter.name for r in busy if r.adapter is not None}
        self.adapters.apply_pending_unloads(pinned)
        free = self.max_rows - len(busy)
        chunk = self.config.prefill_chunk
        budget = chunk if chunk > 0 else None  # prompt tokens this step's prefill may run
        admitted: list[Sequence] = []
        deferred: deque[Sequence] = deque()
        while self.waiting:
            seq = self.waiting.popleft()
            work = self._prefill_work(seq)
            long = budget is not None and work > chunk
            if seq.handle.cancelled.is_set():
                self._finish(seq, "cancelled")
            elif len(admitted) >= free:
                deferred.append(seq)
            elif seq.params.max_tokens <= 0:
                self._finish(seq, "length")
            elif not long and admitted and budget is not None and work > budget:
                deferred.append(seq)  # this step's prefill is full: next step
            else:
                state = self._make_resident(seq, pinned)
                if state == "ready" and long:
                    free -= 1
                    self.prefilling.append(self._start_partial(seq))
                elif state == "ready":
                    admitted.append(seq)
                    if budget is not None:
                        budget -= work
                elif state == "wait":
                    self.stats.deferred += 1
                    deferred.append(seq)  # every adapter slot is in use by running rows
        self.waiting = deferred
        if not admitted:
            return
        if self.rows:
            self.stats.joins += len(admitted)
        self.pacer.other_work()
        try:
            batch, logits = self._prefill(admitted)
        except Exception as exc:  # fail these requests, keep serving the running ones
            log.exception("prefill failed")
            for seq in admitted:
                self._outbox.append((seq.handle, Failed(internal_error(exc))))
            return
        keep = self._accept_all(admitted, logits)
        if not keep:
            return
        if len(keep) < len(admitted):
            batch.select(keep)
        if self.batch is None:
            self.batch = batch
        else:
            self.batch.merge(batch)
        self.rows.extend(admitted[i] for i in keep)

    def _make_resident(self, seq: Sequence, pinned: set[str]) -> str:
        """ "ready", "wait" (no free adapter slot yet) or "failed" (already answered)."""
        if seq.adapter is None:
            return "ready"
        try:
            if not self.adapters.ensure(seq.adapter, pinned):
                return "wait"
        except Exception as exc:  # missing or corrupt files: this request only
            err = exc if isinstance(exc, EngineError) else internal_error(exc)
            self._outbox.append((seq.handle, Failed(err)))
            return "failed"
        pinned.add(seq.adapter.name)
        return "ready"

    def _prefill_work(self, seq: Sequence) -> int:
        """Prompt tokens admitting `seq` would run: all but a cached prefix."""
        p = self._usable_prefix(seq)
        cached = p > 0 and self.prefixes.contains((seq.label, tuple(seq.prompt_ids[:p])))
        return len(seq.prompt_ids) - (p if cached else 0)

    def _usable_prefix(self, seq: Sequence) -> int:
        if not self.prefixes.enabled or seq.prefix_len <= 0:
            return 0
        # At least one prompt token must run, to give the logits of the first new token.
        return min(seq.prefix_len, len(seq.prompt_ids) - 1)

    def _prefix_kv(self, seq: Sequence, length: int) -> KV:
        key = (seq.label, tuple(seq.prompt_ids[:length]))
        kv = self.prefixes.get(key)
        if kv is None:
            ids = torch.tensor([seq.prompt_ids[:length]], device=self.device)
            out = self._forward(ids, None, None, None, [seq.label])
            self.stats.prompt_tokens_run += length
            kv = kv_of(out.cache)
            self.prefixes.put(key, kv)
        return kv

    def _prefill(self, seqs: list[Sequence]) -> tuple[KVBatch, torch.Tensor]:
        """One forward over the new rows. Row layout on the time axis:
        [left pad | cached prefix | gap | rest of prompt], pads and gaps masked out."""
        plans: list[tuple[int, KV | None]] = []
        for seq in seqs:
            p = self._usable_prefix(seq)
            plans.append((p, self._prefix_kv(seq, p) if p else None))
        width_p = max(p for p, _ in plans)
        width_s = max(len(seq.prompt_ids) - p for seq, (p, _) in zip(seqs, plans, strict=True))
        rows = len(seqs)
        ids = torch.full((rows, width_s), self.pad_id, dtype=torch.long)
        pos = torch.zeros((rows, width_s), dtype=torch.long)
        mask = torch.zeros((rows, width_p + width_s), dtype=torch.long)
        for i, (seq, (p, _)) in enumerate(zip(seqs, plans, strict=True)):
            n = len(seq.prompt_ids)
            s = n - p
            ids[i, width_s - s :] = torch.tensor(seq.prompt_ids[p:])
            pos[i, width_s - s :] = torch.arange(p, n)
            mask[i, width_p - p : width_p] = 1
            mask[i, width_p + width_s - s :] = 1
        cache = None
        if width_p:
            cache = cache_from(self._stack_prefixes(plans, width_p))
        self.stats.prompt_tokens_run += int(mask[:, width_p:].sum())
        mask = mask.to(self.device)
        out = self._forward(
            ids.to(self.device), mask, pos.to(self.device), cache, [s.label for s in seqs]
        )
        lengths = torch.tensor([len(s.prompt_ids) for s in seqs], device=self.device)
        # The model made its own cache when it had none: re-held in layers that grow in place.
        return KVBatch(cache_from(kv_of(out.cache)), mask, lengths), out.logits[:, -1]

    @staticmethod
    def _stack_prefixes(plans: list[tuple[int, KV | None]], width: int) -> KV:
        sample = next(kv for _, kv in plans if kv is not None)
        stacked: KV = []
        for layer, (k0, v0) in enumerate(sample):
            keys, values = [], []
            for p, kv in plans:
                if kv is None:
                    shape = (1, k0.shape[1], width, k0.shape[3])
                    keys.append(k0.new_zeros(shape))
                    values.append(v0.new_zeros((1, v0.shape[1], width, v0.shape[3])))
                else:
                    keys.append(pad_left(kv[layer][0], width - p, 2))
                    values.append(pad_left(kv[layer][1], width - p, 2))
            stacked.append((torch.cat(keys), torch.cat(values)))
        return stacked

    # -- chunked prefill of long prompts -------------------------------------------------------
    def _start_partial(self, seq: Sequence) -> PartialPrefill:
        p = self._usable_prefix(seq)
        partial = PartialPrefill(seq, prefix_len=p)
        kv = self.prefixes.get((seq.label, tuple(seq.prompt_ids[:p]))) if p else None
        if kv is not None:
            # Held as is: the first chunk's append reallocates, never writing into it.
            partial.cache, partial.done, partial.prefix_len = cache_from(kv), p, 0
        return partial

    def _prefill_chunk(self) -> None:
        """Run one chunk of the oldest long prompt; on its last chunk it joins the batch."""
        gone = [p for p in self.prefilling if p.seq.handle.cancelled.is_set()]
        for partial in gone:
            self._finish(partial.seq, "cancelled")  # the client went away: free its slot
        if gone:
            self.prefilling = deque(p for p in self.prefilling if p not in gone)
        if not self.prefilling:
            return
        partial = self.prefilling[0]
        seq = partial.seq
        start, end = partial.next_span(self.pacer.next_tokens())
        try:
            ids, mask, positions = partial.inputs(start, end, self.device)
            started = time.perf_counter()
            out = self._forward(ids, mask, positions, partial.cache, [seq.label])
            self.pacer.ran(end - start, time.perf_counter() - started)
        except Exception as exc:  # fail this request, keep serving the others
            log.exception("chunked prefill failed")
            self.prefilling.popleft()
            self._outbox.append((seq.handle, Failed(internal_error(exc))))
            return
        self.stats.prefill_chunks += 1
        self.stats.prompt_tokens_run += end - start
        partial.advance(out.cache, end)
        if end == partial.prefix_len and self.prefixes.enabled:
            self.prefixes.put((seq.label, tuple(seq.prompt_ids[:end])), partial.prefix_kv())
        if end < partial.total:
            return
        self.prefilling.popleft()
        if not self._accept_all([seq], out.logits[:, -1]):
            return  # finished at its first token
        assert partial.cache is not None
        batch = KVBatch(partial.cache, mask, torch.tensor([end], device=self.device))
        if self.batch is None:
            self.batch = batch
        else:
            self.batch.merge(batch)
        self.rows.append(seq)

    # -- decoding ----------------------------------------------------------------------------
    def _decode(self) -> None:
        live = [i for i, r in enumerate(self.rows) if not r.handle.cancelled.is_set()]
        if len(live) < len(self.rows):
            for i, row in enumerate(self.rows):
                if i not in live:
                    self._finish(row, "cancelled")  # the client went away: free the row now
            self._keep(live)
        if not self.rows:
            return
        assert self.batch is not None
        batch = self.batch
        try:
            ids = torch.tensor([[r.generated[-1]] for r in self.rows], device=self.device)
            ones = torch.ones((batch.rows, 1), dtype=batch.mask.dtype, device=self.device)
            mask = torch.cat([batch.mask, ones], dim=1)
            out = self._forward(
                ids, mask, batch.positions[:, None], batch.cache, [r.label for r in self.rows]
            )
        except Exception as exc:
            log.exception("decode step failed")
            for row in self.rows:
                self._outbox.append((row.handle, Failed(internal_error(exc))))
            self.rows, self.batch = [], None
            return
        batch.cache, batch.mask, batch.positions = out.cache, mask, batch.positions + 1
        keep = self._accept_all(self.rows, out.logits[:, -1])
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _keep(self, indices: list[int]) -> None:
        self.rows = [self.rows[i] for i in indices]
        if not self.rows:
            self.batch = None
        elif self.batch is not None:
            self.batch.select(indices)

    def _forward(self, ids, mask, positions, cache, labels: list[str]):
        if self.before_forward is not None:
            self.before_forward(ids)
        stats = self.stats
        stats.forwards += 1
        stats.max_rows = max(stats.max_rows, len(labels))
        if len(set(labels)) > 1:
            stats.mixed_forwards += 1
        rows = (
            self.adapters.rows(labels, self.device, ids.shape[1])
            if self.adapters.has_adapters
            else nullcontext()
        )
        with rows:
            return self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )

    # -- tokens out --------------------------------------------------------------------------
    def _accept_all(self, rows: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Sample one token per row, stream it; returns the indices of rows still going."""
        if self.observe_logits is not None:
            self.observe_logits(rows, logits)
        wanted = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        # Log-probabilities are the model's own distribution, before penalties and biases.
        logprobs: dict[int, torch.Tensor] = {}
        if wanted:
            values = torch.log_softmax(logits[wanted].float(), dim=-1).cpu()
            logprobs = dict(zip(wanted, values, strict=True))
        adjusted = [i for i, r in enumerate(rows) if r.params.adjusts_logits]
        constrained = [(i, r.constraint) for i, r in enumerate(rows) if r.constraint is not None]
        if adjusted or constrained:
            logits = logits.float().clone()
            for i in adjusted:
                logits[i] = adjust_logits(logits[i], rows[i].params, rows[i].generated)
            if constrained:
                mask_logits(logits, constrained)  # last, so no bias can lift a masked token
        tokens = self._pick(rows, logits)
        keep: list[int] = []
        for i, row in enumerate(rows):
            token = tokens[i]
            entry = None
            if i in logprobs and row.params.logprobs is not None:
                entry = token_logprob(logprobs[i], token, row.params.logprobs)
            reason = self._accept(row, token, entry)
            if reason is None:
                keep.append(i)
            else:
                self._finish(row, reason)
        return keep

    @staticmethod
    def _pick(rows: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Every row's next token: greedy rows from one batched max, sampled rows from one
        batched softmax (and top_p cut), each drawn with the row's own generator."""
        sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
        if not sampled:
            return greedy_tokens(logits)
        tokens = greedy_tokens(logits) if len(sampled) < len(rows) else [0] * len(rows)
        part = logits if len(sampled) == len(rows) else logits[sampled]
        draws = sample_rows(part, [rows[i].sampler for i in sampled])
        for i, token in zip(sampled, draws, strict=True):
            tokens[i] = token
        return tokens

    def _accept(self, row: Sequence, token: int, entry: TokenLogprob | None) -> str | None:
        if token in self.eos_ids:
            return "stop"
        if row.constraint is not None and not row.constraint.accept(token):
            log.error("constrained row picked a token its grammar refuses: %d", token)
            return "stop"
        row.generated.append(token)
        if entry is not None:
            row.pending_logprobs.append(entry)
        delta = row.assembler.add(token)
        if delta:
            self._outbox.append((row.handle, Delta(delta, self._hand_out(row))))
        if row.assembler.stopped:
            return "stop"
        if len(row.generated) >= row.params.max_tokens:
            return "length"
        return None

    @staticmethod
    def _hand_out(row: Sequence) -> tuple[TokenLogprob, ...]:
        out = tuple(row.pending_logprobs)
        row.logprobs.extend(out)
        row.pending_logprobs.clear()
        return out

    def _finish(self, row: Sequence, reason: str) -> None:
        if self.observe_finish is not None:
            self.observe_finish(row, reason)
        if row.assembler.stopped:
            row.pending_logprobs.clear()  # a stop sequence's tokens: not in the text
        tail = row.assembler.flush()
        if tail or row.pending_logprobs:
            self._outbox.append((row.handle, Delta(tail, self._hand_out(row))))
        self._outbox.append(
            (
                row.handle,
                Finished(
                    reason,
                    len(row.prompt_ids),
                    len(row.generated),
                    row.assembler.text,
                    tuple(row.generated),
                    tuple(row.logprobs) if row.params.logprobs is not None else None,
                ),
            )
        )

    def _fail_everything(self) -> None:
        err = EngineShuttingDown("The engine is shutting down.")
        pending = [*self.rows, *(p.seq for p in self.prefilling), *self.waiting]
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.append(item)
        for seq in pending:
            seq.handle.push(Failed(err))
        self.rows, self.waiting, self.batch = [], deque(), None
        self.prefilling.clear()
