"""VllmEngine: the engine interface on vLLM OpenAI servers.

adaptd keeps the control plane: it resolves the variant, renders the prompt to token ids
(chat template, templates, trimming) exactly as for the built-in engine, and this engine
sends those ids to a server's /v1/completions (`prompt` as a token id list), reads the
streamed token ids back and turns them into text with adaptd's own detokenizer
(output.py). Adapters are loaded into the server that serves them on first use, under their
registry name; a server that no longer knows one (it restarted) gets it again, once, and the
request is retried. A server that fails before a request has produced anything is skipped and
the request goes to the next healthy one; one that fails mid-generation is continued on
another server from the tokens already produced (greedy or sampled without penalties), else
the request ends with a 503. No healthy server: 503 with Retry-After.

All HTTP runs on one event loop thread owned by the engine, so callers on any loop (the API,
TestClient portals, a worker's asyncio.run) share the connection pool and the health poller.
"""

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
)

from app.engine.adapters import AdapterRef
from app.engine.checks import check_request
from app.engine.errors import (
    AdapterLoadError,
    EngineBusy,
    EngineError,
    EngineOverloaded,
    GenerationFailed,
    InvalidInput,
)
from app.engine.grammar_rules import GrammarLimits
from app.engine.loader import end_of_sequence_ids, model_name, resolve_source, window_of
from app.engine.lora_targets import lora_target_names
from app.engine.metrics_snapshot import EngineMetrics
from app.engine.requests import Event, Failed, Finished, RequestHandle, TokenLogprob
from app.engine.sampling import SamplingParams
from app.engine.structured import EngineGrammars, Grammars, OutputConstraint
from app.engine.vllm.client import (
    AdapterMissing,
    ServerDown,
    ServerRefused,
    completion_body,
    scored_logprob,
    scoring_body,
    token_logprobs,
)
from app.engine.vllm.output import OutputAssembler
from app.engine.vllm.servers import Server, ServerPool
from app.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")  # what one attempt on a server returns (`_on_servers`)

MAX_LOGPROBS = 20  # vLLM's default --max-logprobs


@dataclass
class VllmConfig:
    urls: list[str]
    api_key: str | None = None
    adapter_store: Path | None = None  # where adaptd keeps adapters
    vllm_adapter_store: Path | None = None  # the same folder as the servers see it
    health_interval_s: float = 2.0
    timeout_s: float = 120.0
    affinity: int = 2
    max_in_flight: int = 256
    # Structured outputs: size limits and the compile deadline (GRAMMAR_* settings).
    grammar_limits: GrammarLimits = field(default_factory=GrammarLimits)

    @classmethod
    def from_settings(cls, settings: Settings) -> "VllmConfig":
        return cls(
            urls=settings.vllm_url_list,
            api_key=settings.vllm_api_key,
            adapter_store=settings.adapters_dir,
            vllm_adapter_store=settings.vllm_adapter_store,
            health_interval_s=settings.vllm_health_interval_s,
            timeout_s=settings.vllm_timeout_s,
            affinity=settings.vllm_affinity,
            max_in_flight=settings.max_queue,
            grammar_limits=GrammarLimits.from_settings(settings),
        )


class VllmHandle(RequestHandle):
    """A request handle whose cancel also stops the HTTP stream (vLLM aborts the request
    when its client goes away)."""

    future: concurrent.futures.Future | None = None

    def cancel(self) -> None:
        super().cancel()
        if self.future is not None:
            self.future.cancel()


def _generation_config(source: str) -> GenerationConfig | None:
    try:
        return GenerationConfig.from_pretrained(source)
    except OSError:  # no generation_config.json
        return None


class NoServer(EngineBusy):
    code = "engine_unavailable"
    retry_after_s = 5


def no_server() -> NoServer:
    return NoServer("No vLLM server is available. Retry shortly.")


class VllmEngine:
    kind = "vllm"

    def __init__(self, source: str, name: str, config: VllmConfig) -> None:
        if not config.urls:
            raise ValueError("ENGINE=vllm needs VLLM_URLS (or `make run` to start a server)")
        self.source = source
        self.name = name
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self._model_config = AutoConfig.from_pretrained(source)
        self.context_window = window_of(self._model_config)
        self.vocab_size = int(self._model_config.vocab_size)
        self.eos_ids = end_of_sequence_ids(_generation_config(source), self.tokenizer)
        self._module_names: set[str] | None = None
        self._meta_model: PreTrainedModel | None = None
        # The same xgrammar compiler the built-in engine uses, here only to check a
        # constraint before it is sent: both engines refuse the same schemas with the same
        # 400. Checked only (compiled once, in the compile child): vLLM's own xgrammar
        # backend compiles it on the server.
        self.constraints = EngineGrammars(
            self.tokenizer, self.vocab_size, self.eos_ids, config.grammar_limits, compile_here=False
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None
        self._poller: asyncio.Task | None = None
        self.pool: ServerPool | None = None
        self.in_flight = 0  # counted from callers' threads and the engine loop: under a lock
        self._count_lock = threading.Lock()
        self.moved = 0  # requests that went on on another server after one failed them

    @classmethod
    def from_settings(cls, settings: Settings) -> "VllmEngine":
        source = resolve_source(settings.base_model, settings.model_cache)
        return cls(source, model_name(settings.base_model), VllmConfig.from_settings(settings))

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm", daemon=True)
        self._thread.start()
        self._call(self._open(), timeout=30)

    async def _open(self) -> None:
        timeout = httpx.Timeout(self.config.timeout_s, connect=5.0)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits)
        self.pool = ServerPool(
            self.config.urls, self._http, self.config.api_key, self.config.affinity
        )
        await self.pool.check_all()  # so the first request finds the servers that are up
        self._poller = asyncio.create_task(self.pool.poll(self.config.health_interval_s))

    async def _close(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:  # the poller and any request still running
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert self._loop is not None
        await self._loop.shutdown_asyncgens()
        if self._http is not None:
            await self._http.aclose()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        try:
            self._call(self._close(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _call(self, coro, timeout: float):  # run on the engine loop
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- the engine interface -----------------------------------------------------------------
    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: AdapterRef | None = None,
        *,
        prefix_len: int = 0,
        forced_tokens: list[int] | None = None,
    ) -> RequestHandle:
        """As the built-in engine's submit. `forced_tokens`: score exactly these tokens after
        the prompt (their log-probabilities, from one-step requests that may only pick each
        token: client.scoring_body) instead of generating."""
        self._check(prompt_ids, params, forced_tokens)
        if self.pool is None or self._loop is None or not self.running:
            raise no_server()
        if not self.pool.any_healthy():
            raise no_server()
        if self.in_flight >= self.config.max_in_flight:
            raise EngineOverloaded(
                "The server is busy: too many requests in flight. Retry shortly."
            )
        handle = VllmHandle(asyncio.get_running_loop())
        with self._count_lock:
            self.in_flight += 1
        if forced_tokens is not None:
            work = self._score(list(prompt_ids), list(forced_tokens), adapter, prefix_len, handle)
            job = self._answered(handle, work, "Scoring")
        else:
            work = self._generate(list(prompt_ids), params, adapter, max(0, prefix_len), handle)
            job = self._answered(handle, work, "Generation")
        handle.future = asyncio.run_coroutine_threadsafe(job, self._loop)
        handle.future.add_done_callback(self._done)
        if handle.cancelled.is_set():
            handle.future.cancel()
        return handle

    def _done(self, _: concurrent.futures.Future) -> None:
        with self._count_lock:
            self.in_flight -= 1

    # -- structured outputs ------------------------------------------------------------------
    @property
    def grammars(self) -> Grammars:
        return self.constraints.grammars

    def check_constraint(
        self, constraint: OutputConstraint, cancelled: threading.Event | None = None
    ) -> None:
        # The same limits and deadline as the built-in engine: what passes here is what the
        # vLLM server then compiles (with the same xgrammar), so its cost is bounded alike.
        self.constraints.check(constraint, cancelled)

    def forget_adapter(self, name: str) -> None:
        """Unloads the adapter from every server that answers (any API replica may have
        loaded it anywhere); a server that is down has lost it anyway."""
        if self.running:
            self._call(self._unload_everywhere(name), timeout=30)

    def _structure(self) -> PreTrainedModel:
        """The base model's modules without weights (on the meta device): what its module
        names and parameter count are read from."""
        if self._meta_model is None:
            with torch.device("meta"):
                self._meta_model = AutoModelForCausalLM.from_config(self._model_config)
        return self._meta_model

    def lora_target_names(self) -> set[str]:
        if self._module_names is None:
            self._module_names = lora_target_names(self._structure())
        return self._module_names

    def base_parameters(self) -> int:
        return sum(p.numel() for p in self._structure().parameters())

    def health(self) -> dict[str, Any]:
        servers = self.pool.report() if self.pool is not None else []
        return {
            "engine": self.kind,
            "ready": any(s["healthy"] for s in servers),
            "servers": servers,
        }

    def metrics(self) -> EngineMetrics:
        """Only what adaptd itself sees: its requests in flight. The servers' queues, batches
        and caches are vLLM's (its own /metrics on each server reports them)."""
        return EngineMetrics(in_flight=self.in_flight)

    # -- inside the engine loop ----------------------------------------------------------------
    def _check(
        self, prompt_ids: list[int], params: SamplingParams, forced: list[int] | None
    ) -> None:
        check_request(prompt_ids, params, self.vocab_size)
        if forced is not None and (not forced or not all(0 <= t < self.vocab_size for t in forced)):
            raise InvalidInput(
                f"Forced tokens must be 1 or more token ids from 0 to {self.vocab_size - 1}.",
                param="prompt",
                code="invalid_prompt",
            )
        if params.constraint is not None and forced is None:
            self.check_constraint(params.constraint)
        if params.logprobs is not None and params.logprobs > MAX_LOGPROBS:
            raise InvalidInput(
                f"The vLLM engine returns at most {MAX_LOGPROBS} log-probabilities per token.",
                param="logprobs",
                code="unsupported_parameter",
            )

    @staticmethod
    def _affinity_key(adapter: AdapterRef | None, prompt_ids: list[int], prefix_len: int):
        if adapter is not None:
            return f"adapter:{adapter.name}"
        if prefix_len > 0:  # a template's fixed prefix: keep it on the servers that cached it
            digest = hashlib.sha256(str(prompt_ids[:prefix_len]).encode()).hexdigest()
            return f"prefix:{digest}"
        return None  # plain base traffic: the least busy server

    def _vllm_path(self, path: Path) -> str:
        store, seen_as = self.config.adapter_store, self.config.vllm_adapter_store
        if store is not None and seen_as is not None:
            try:
                return str(seen_as / path.resolve().relative_to(store.resolve()))
            except ValueError:
                pass
        return str(path)

    async def _ensure_loaded(self, server: Server, adapter: AdapterRef) -> None:
        if adapter.name in server.loaded:
            return
        lock = server.loading.setdefault(adapter.name, asyncio.Lock())
        async with lock:
            if adapter.name in server.loaded:
                return
            try:
                await server.client.load_adapter(adapter.name, self._vllm_path(adapter.path))
            except ServerRefused as exc:
                raise AdapterLoadError(
                    f"vLLM could not load adapter '{adapter.name}': {exc.message}",
                    param="model",
                ) from exc
            server.loaded.add(adapter.name)

    async def _unload_everywhere(self, name: str) -> None:
        assert self.pool is not None

        async def unload(server: Server) -> None:
            server.loaded.discard(name)
            if server.healthy:
                try:
                    await server.client.unload_adapter(name)
                except ServerDown as exc:
                    self.pool.mark_down(server, str(exc))

        await asyncio.gather(*(unload(s) for s in self.pool.servers))

    async def _answered(self, handle: RequestHandle, job: Awaitable[None], what: str) -> None:
        """Runs `job` (which pushes its own events); any failure reaches the caller as a
        Failed event. Cancellation passes through: the caller went away, and closing the
        HTTP stream aborted the vLLM request."""
        try:
            await job
        except EngineError as err:
            handle.push(Failed(err))
        except Exception as exc:  # the caller must get an answer
            log.exception("vLLM %s request failed", what.lower())
            handle.push(Failed(GenerationFailed(f"{what} failed: {type(exc).__name__}")))

    async def _score(
        self,
        prompt_ids: list[int],
        tokens: list[int],
        adapter: AdapterRef | None,
        prefix_len: int,
        handle: RequestHandle,
    ) -> None:
        """A forced row: one Finished whose logprobs are the tokens' own, as the built-in
        engine's forced rows give. One single-step request per token (the prompt plus the
        tokens before it), all at once: vLLM batches them and its prefix cache shares the
        prompt."""
        model = adapter.name if adapter is not None else self.name
        key = self._affinity_key(adapter, prompt_ids, prefix_len)

        async def one(k: int) -> TokenLogprob:
            body = scoring_body(model, prompt_ids + tokens[:k], tokens[k])

            async def attempt(server: Server) -> TokenLogprob:
                return scored_logprob(await server.client.complete(body), tokens[k])

            return await self._on_servers(key, adapter, attempt)

        scored = await asyncio.gather(*(one(k) for k in range(len(tokens))))
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        finished = Finished(
            "stop", len(prompt_ids), len(tokens), text, tuple(tokens), tuple(scored)
        )
        handle.push(finished)

    async def _on_servers(
        self,
        key: str | None,
        adapter: AdapterRef | None,
        attempt: Callable[[Server], Awaitable[T]],
    ) -> T:
        """`attempt`'s result on a server picked for `key`, with the adapter loaded there: a server
        that fails is marked down and the next one tried; an adapter the server lost is
        loaded again, once."""
        assert self.pool is not None
        failed: set[Server] = set()
        reloaded = False
        while True:
            server = self.pool.pick(key, exclude=failed)
            if server is None:
                raise no_server()
            server.in_flight += 1
            try:
                if adapter is not None:
                    await self._ensure_loaded(server, adapter)
                return await attempt(server)
            except AdapterMissing:
                assert adapter is not None
                server.loaded.discard(adapter.name)
                if reloaded:
                    raise AdapterLoadError(
                        f"vLLM does not serve adapter '{adapter.name}' after loading it.",
                        param="model",
                    ) from None
                reloaded = True
            except ServerDown as exc:
                self.pool.mark_down(server, str(exc))
                failed.add(server)
                self.moved += 1
            except ServerRefused as exc:
                raise InvalidInput(
                    f"vLLM refused the request: {exc.message}", param="prompt", code="vllm_refused"
                ) from exc
            finally:
                server.in_flight -= 1

    async def _generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: AdapterRef | None,
        prefix_len: int,
        handle: RequestHandle,
    ) -> None:
        model = adapter.name if adapter is not None else self.name
        stop_ids = sorted(self.eos_ids)
        out = OutputAssembler(self.tokenizer, params, len(prompt_ids), self.eos_ids)

        async def attempt(server: Server) -> None:
            # After a failure mid-generation, go on from the tokens already produced; not
            # where the next server could not pick up the state: penalties and seeds, and a
            # grammar (it would restart at the top of the structure).
            done = len(out.generated)
            if done and (
                params.adjusts_logits
                or params.constraint is not None
                or (params.seed is not None and not params.greedy)
            ):
                raise no_server()
            body = completion_body(
                model,
                prompt_ids + out.generated,
                replace(params, max_tokens=params.max_tokens - done),
                stop_ids,
            )
            # aclosing: leaving early closes the HTTP stream at once, and vLLM stops.
            async with contextlib.aclosing(server.client.stream_completion(body)) as chunks:
                async for ids, logprobs, finish in chunks:
                    events: list[Event] = []
                    for token, entry in zip(
                        ids, token_logprobs(logprobs, ids, params.logprobs), strict=True
                    ):
                        events += out.add(token, entry)
                    if finish is not None and out.finished is None:
                        events += out.finish("length" if finish == "length" else "stop")
                    if events:
                        RequestHandle.push_many([(handle, e) for e in events])
                    if out.finished is not None:
                        return
            raise ServerDown("the stream ended without a finish reason")

        await self._on_servers(
            self._affinity_key(adapter, prompt_ids, prefix_len), adapter, attempt
        )
