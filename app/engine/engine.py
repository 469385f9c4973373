"""The engine: accepts token ids for a variant, schedules them, streams text back.

One scheduler thread owns the model (app/engine/scheduler.py); callers only enqueue work and
read events, so the event loop never blocks on a forward pass. Requests for every variant
(the base model, any adapter, any template) share one batch.
"""

import asyncio
import contextlib
import logging
import queue
import threading

import torch
from transformers import PreTrainedModel

from app.engine.adapters import AdapterCache, AdapterRef, adapter_dtype, peft_label
from app.engine.attention import use_decode_attention
from app.engine.batch import check_supported
from app.engine.checks import check_request
from app.engine.detokenizer import TextAssembler
from app.engine.errors import EngineOverloaded
from app.engine.loader import LoadedModel, context_window, dtype_name, eos_token_ids
from app.engine.lora_targets import lora_target_names
from app.engine.metrics_snapshot import EngineMetrics
from app.engine.prefix_cache import PrefixCache
from app.engine.prompts import shared_chat_prefix
from app.engine.requests import RequestHandle
from app.engine.sampling import SamplingParams
from app.engine.scheduler import EngineConfig, EngineStats, Scheduler
from app.engine.sequence import Sequence
from app.engine.structured import EngineGrammars, ForcedTokens, Grammars, OutputConstraint

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineConfig", "EngineStats", "Sequence"]


class Engine:
    kind = "local"

    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None) -> None:
        self.loaded = loaded
        self.config = config or EngineConfig()
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.name = loaded.name
        self.device = loaded.device
        self.dtype = loaded.dtype
        check_supported(self.model.config)
        prepare_for_serving(self.model)
        self.context_window = context_window(self.model)
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self.adapters = AdapterCache(
            self.model, self.config.max_loaded_adapters, adapter_dtype(self.device, self.dtype)
        )
        self.prefixes = PrefixCache(self.config.prefix_cache_entries)
        # A deleted adapter's cached prefixes go with it.
        self.adapters.on_forget.append(lambda name: self.prefixes.drop_adapter(peft_label(name)))
        self.stats = EngineStats()
        self._queue: queue.Queue[Sequence | None] = queue.Queue(maxsize=self.config.max_queue)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.scheduler: Scheduler | None = None
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        # The chat template's default system prompt and user header open every chat prompt
        # that brings no system message of its own: cached like a template's fixed prefix.
        self.chat_prefix = shared_chat_prefix(self.tokenizer)
        self.constraints = EngineGrammars(
            self.tokenizer, self.model.config.vocab_size, self.eos_ids, self.config.grammar_limits
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self.scheduler = scheduler = Scheduler(
            model=self.model,
            adapters=self.adapters,
            prefixes=self.prefixes,
            config=self.config,
            inbox=self._queue,
            eos_ids=self.eos_ids,
            pad_id=self._pad_id,
            device=self.device,
            stats=self.stats,
            stopping=self._stopping,
        )
        self._thread = threading.Thread(target=scheduler.run, name="engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            # A None wakes an idle scheduler at once; a busy one sees the event next step.
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- structured outputs ------------------------------------------------------------------
    @property
    def grammars(self) -> Grammars:
        return self.constraints.grammars

    def check_constraint(
        self, constraint: OutputConstraint, cancelled: threading.Event | None = None
    ) -> None:
        self.constraints.check(constraint, cancelled)

    # -- API for callers -------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: AdapterRef | None = None,
        *,
        prefix_len: int = 0,
        forced_tokens: list[int] | None = None,
    ) -> RequestHandle:
        """Queue a request. `prefix_len`: how many leading tokens are a fixed template prefix
        whose key/value cache may be shared with other requests of the same variant (a prompt
        that opens with the chat template's shared header gets at least that much).
        `forced_tokens`: the row generates exactly these (to score them: ask for logprobs)."""
        check_request(prompt_ids, params, self.model.config.vocab_size)
        shared = len(self.chat_prefix)
        if prefix_len < shared and shared and list(prompt_ids[:shared]) == self.chat_prefix:
            prefix_len = shared
        handle = RequestHandle(asyncio.get_running_loop())
        seq = Sequence(list(prompt_ids), params, handle, adapter, max(0, prefix_len))
        seq.assembler = TextAssembler(self.tokenizer, params.stop)
        if forced_tokens is not None:
            seq.constraint = ForcedTokens(list(forced_tokens), min(self.eos_ids, default=0))
        elif params.constraint is not None:
            seq.constraint = self.constraints.row(params.constraint)
        try:
            self._queue.put_nowait(seq)
        except queue.Full:
            raise EngineOverloaded(
                "The server is busy: too many requests queued. Retry shortly."
            ) from None
        return handle

    def forget_adapter(self, name: str) -> None:
        self.adapters.forget(name)

    def lora_target_names(self) -> set[str]:
        return lora_target_names(self.model)

    def base_parameters(self) -> int:
        # Adapters loaded into the model add their LoRA weights: not the base's.
        return sum(p.numel() for n, p in self.model.named_parameters() if "lora_" not in n)

    def health(self) -> dict:
        return {"engine": self.kind, "device": str(self.device), "dtype": dtype_name(self.dtype)}

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def metrics(self) -> EngineMetrics:
        scheduler = self.scheduler
        waiting, running = scheduler.load() if scheduler is not None else (0, 0)
        queued = self.queued + waiting  # in the inbox, or taken and not yet admitted
        return EngineMetrics(
            in_flight=queued + running,
            queued=queued,
            running=running,
            max_running=self.config.max_batch_size,
            adapter_loads=self.adapters.loads,
            adapter_hits=self.adapters.hits,
            adapter_evictions=self.adapters.evictions,
            prefix_hits=self.prefixes.hits,
            prefix_misses=self.prefixes.misses,
        )


def prepare_for_serving(model: PreTrainedModel) -> None:
    """What the engine does to a loaded model before it serves it (benchmarks that time the
    bare model call this too, so they time what the engine runs)."""
    contiguous_output_inputs(model)
    use_decode_attention(model)


def contiguous_output_inputs(model: torch.nn.Module) -> None:
    """The output layer gets a contiguous input. transformers hands it a slice of the last
    hidden states (the last position of each row); once peft freezes the weights
    (requires_grad False), PyTorch's CPU bf16 linear on such a slice takes a path 300x
    slower: 3.3 s against 11 ms for 16 rows of the default model, measured here. A copy of
    the slice costs microseconds."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda _module, args: tuple(a.contiguous() for a in args))
