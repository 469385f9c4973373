"""The engine: accepts token ids for a variant, schedules them, streams text back.

One scheduler thread owns the model; callers only enqueue work and read events, so the
event loop never blocks on a forward pass.
"""

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field

import torch

from app.engine.adapters import AdapterCache, AdapterRef
from app.engine.detokenizer import TextAssembler
from app.engine.loader import LoadedModel, context_window, eos_token_ids
from app.engine.requests import Delta, Failed, Finished, RequestHandle
from app.engine.sampling import Sampler, SamplingParams
from app.errors import APIError, ServiceUnavailable

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    max_batch_size: int = 16
    batch_wait_ms: float = 5.0
    max_queue: int = 256
    max_loaded_adapters: int = 8
    prefix_cache_entries: int = 16


@dataclass
class Sequence:
    """One row of work: a prompt, how to sample it, where its events go."""

    prompt_ids: list[int]
    params: SamplingParams
    handle: RequestHandle
    adapter: AdapterRef | None = None
    sampler: Sampler = field(init=False)
    assembler: TextAssembler = field(init=False)

    def __post_init__(self) -> None:
        self.sampler = Sampler(self.params)


class Engine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None) -> None:
        self.loaded = loaded
        self.config = config or EngineConfig()
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.name = loaded.name
        self.device = loaded.device
        self.context_window = context_window(self.model)
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self.adapters = AdapterCache(self.model, self.config.max_loaded_adapters)
        self._queue: queue.Queue[Sequence | None] = queue.Queue(maxsize=self.config.max_queue)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- API for callers -------------------------------------------------------------------
    def submit(
        self, prompt_ids: list[int], params: SamplingParams, adapter: AdapterRef | None = None
    ) -> RequestHandle:
        handle = RequestHandle(asyncio.get_running_loop())
        seq = Sequence(prompt_ids, params, handle, adapter)
        seq.assembler = TextAssembler(self.tokenizer, params.stop)
        try:
            self._queue.put_nowait(seq)
        except queue.Full:
            raise ServiceUnavailable(
                "The server is busy: too many requests queued. Retry shortly.",
                code="server_overloaded",
                headers={"Retry-After": "1"},
            ) from None
        return handle

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, adapter: AdapterRef | None = None
    ) -> Finished:
        return await self.submit(prompt_ids, params, adapter).result()

    # -- scheduler thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            seq = self._queue.get()
            if seq is None:
                return
            try:
                self._generate_one(seq)
            except APIError as err:
                seq.handle.push(Failed(err))
            except Exception as exc:  # keep serving the other requests
                log.exception("generation failed")
                err = APIError(f"Generation failed: {type(exc).__name__}")
                err.status_code, err.type, err.code = 500, "server_error", "generation_failed"
                seq.handle.push(Failed(err))

    def _forward_module(self, adapter: AdapterRef | None):  # noqa: ANN202
        if adapter is None:
            return self.adapters.peft, True
        self.adapters.ensure(adapter)
        assert self.adapters.peft is not None
        self.adapters.peft.set_adapter(adapter.name)
        return self.adapters.peft, False

    @torch.inference_mode()
    def _generate_one(self, seq: Sequence) -> None:
        peft, base_only = self._forward_module(seq.adapter)
        if peft is not None and base_only:
            with peft.disable_adapter():
                self._decode(seq, self.model)
        else:
            self._decode(seq, peft if peft is not None else self.model)

    def _decode(self, seq: Sequence, module: torch.nn.Module) -> None:
        ids = torch.tensor([seq.prompt_ids], device=self.device)
        out = module(input_ids=ids, use_cache=True, logits_to_keep=1)
        finish = "length"
        generated = 0
        while generated < seq.params.max_tokens:
            if seq.handle.cancelled.is_set():
                finish = "cancelled"
                break
            token = seq.sampler(out.logits[0, -1])
            if token in self.eos_ids:
                finish = "stop"
                break
            generated += 1
            delta = seq.assembler.add(token)
            if delta:
                seq.handle.push(Delta(delta))
            if seq.assembler.stopped:
                finish = "stop"
                break
            if generated >= seq.params.max_tokens:
                break
            step = torch.tensor([[token]], device=self.device)
            out = module(input_ids=step, cache=out.cache, use_cache=True, logits_to_keep=1)
        tail = seq.assembler.flush()
        if tail:
            seq.handle.push(Delta(tail))
        seq.handle.push(Finished(finish, len(seq.prompt_ids), generated, seq.assembler.text))
