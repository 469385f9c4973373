"""The one interface every serving engine implements: the built-in engine
(app/engine/engine.py) and the vLLM backend (app/engine/vllm/). Callers (the inference
router, evaluations, templates) see only this."""

import threading
from typing import Any, Protocol, runtime_checkable

from transformers import PreTrainedTokenizerBase

from app.engine.adapters import AdapterRef
from app.engine.metrics_snapshot import EngineMetrics
from app.engine.requests import Finished, RequestHandle
from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint


@runtime_checkable
class InferenceEngine(Protocol):
    kind: str  # "local" | "vllm": what /readyz reports
    name: str  # the base model's public name
    tokenizer: PreTrainedTokenizerBase  # adaptd renders prompts to token ids with it
    context_window: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def running(self) -> bool: ...

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: AdapterRef | None = None,
        *,
        prefix_len: int = 0,
        forced_tokens: list[int] | None = None,
    ) -> RequestHandle:
        """Queue one generation (n = 1) and return its event stream at once. Must be called
        on a running event loop; the handle's events arrive on that loop."""
        ...

    def check_constraint(
        self, constraint: OutputConstraint, cancelled: threading.Event | None = None
    ) -> None:
        """A structured-output constraint this engine can run, or an InvalidInput (too large,
        unsupported keyword, no compile within the deadline). Blocks while it compiles: call
        it off the event loop; setting `cancelled` stops the compile (CompileCancelled)."""
        ...

    def forget_adapter(self, name: str) -> None:
        """The adapter was deleted: drop it wherever it is loaded."""
        ...

    def lora_target_names(self) -> set[str]:
        """The base model's module names LoRA can target (engine/lora_targets.py); a job's
        target modules are checked against them."""
        ...

    def base_parameters(self) -> int:
        """The base model's parameter count, adapters' LoRA weights left out (the automatic
        learning rate depends on it)."""
        ...

    def health(self) -> dict[str, Any]:
        """Details for /readyz."""
        ...

    def metrics(self) -> EngineMetrics:
        """Load and cache figures for /metrics: cheap, callable from any thread, at any
        time (before start() too)."""
        ...


async def generate(
    engine: InferenceEngine,
    prompt_ids: list[int],
    params: SamplingParams,
    adapter: AdapterRef | None = None,
    *,
    prefix_len: int = 0,
) -> Finished:
    """One whole generation (no streaming): submit it and wait for its end, on any engine."""
    return await engine.submit(prompt_ids, params, adapter, prefix_len=prefix_len).result()
