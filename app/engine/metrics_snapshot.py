"""What an engine reports about its load and caches, for /metrics
(app/observability/metrics.py samples it through `InferenceEngine.metrics()`)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineMetrics:
    """One reading of an engine's figures. A field left None is one this engine cannot know
    (the vLLM backend sees its requests, not the servers' queues or caches): the sampler
    leaves that metric alone rather than report a made-up 0. The cache figures are totals
    since the engine was built: they only grow."""

    in_flight: int  # requests submitted and not yet finished
    queued: int | None = None  # requests waiting for a batch slot
    running: int | None = None  # rows being generated (a prompt in chunked prefill included)
    max_running: int | None = None  # batch slots (MAX_BATCH_SIZE)
    adapter_loads: int | None = None  # adapter files read (an eviction shows as a reload)
    adapter_hits: int | None = None  # admissions whose adapter was resident
    adapter_evictions: int | None = None  # adapters unloaded to make room for another
    prefix_hits: int | None = None  # prompts whose fixed prefix was cached
    prefix_misses: int | None = None  # prompts whose fixed prefix was computed
