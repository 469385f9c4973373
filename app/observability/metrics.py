"""Prometheus metrics: what each API process counts, what it samples from its engine, and
what the database says about jobs and evaluations.

Several uvicorn workers: set PROMETHEUS_MULTIPROC_DIR (an empty folder, cleared before the
server starts; scripts/run.sh and the Dockerfile do) and every process writes its values
there; a scrape of any one process reads all of them. Without it the values are this
process's own. Labels are bounded: a route template, a status code, a variant kind
(base | template | adapter), a job status. Never a tenant or a model name.
"""

import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.db import get_sessionmaker, utcnow
from app.evals.models import Evaluation
from app.finetune.models import FineTuningJob
from app.status import TERMINAL, Status

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
JOB_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

HTTP_REQUESTS = Counter(
    "adaptd_http_requests", "HTTP requests answered.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "adaptd_http_request_duration_seconds",
    "Time from request to the last byte of the response, by route template.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_LATENCY = Histogram(
    "adaptd_inference_request_duration_seconds",
    "Chat and completion requests, to the last byte (streams included).",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "adaptd_time_to_first_token_seconds",
    "From the request's arrival to its first generated text.",
    ["kind"],
    buckets=TTFT_BUCKETS,
)
TOKENS_PER_SECOND = Histogram(
    "adaptd_request_tokens_per_second",
    "A request's completion tokens over its duration.",
    ["kind"],
    buckets=RATE_BUCKETS,
)
PROMPT_TOKENS = Counter("adaptd_prompt_tokens", "Prompt tokens of answered requests.", ["kind"])
COMPLETION_TOKENS = Counter(
    "adaptd_completion_tokens", "Completion tokens of answered requests.", ["kind"]
)
QUEUE_DEPTH = Gauge(
    "adaptd_engine_queue_depth",
    "Requests waiting for the engine.",
    multiprocess_mode="livesum",
)
RUNNING_ROWS = Gauge(
    "adaptd_engine_running_rows",
    "Sequences being generated now.",
    multiprocess_mode="livesum",
)
BATCH_OCCUPANCY = Gauge(
    "adaptd_engine_batch_occupancy",
    "Running rows over MAX_BATCH_SIZE (the fullest process).",
    multiprocess_mode="livemax",
)
ADAPTER_LOADS = Counter("adaptd_adapter_cache_loads", "LoRA adapters read from disk.")
ADAPTER_HITS = Counter("adaptd_adapter_cache_hits", "Admissions whose adapter was resident.")
ADAPTER_EVICTIONS = Counter(
    "adaptd_adapter_cache_evictions", "Adapters unloaded to make room for another."
)
PREFIX_HITS = Counter("adaptd_prefix_cache_hits", "Prompts whose fixed prefix was cached.")
PREFIX_MISSES = Counter("adaptd_prefix_cache_misses", "Prompts whose prefix was computed.")


def observe_request(
    method: str,
    route: str,
    status: int,
    seconds: float,
    kind: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    ttft: float | None,
) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(route).observe(seconds)
    if kind is None:
        return
    INFERENCE_LATENCY.labels(kind).observe(seconds)
    if ttft is not None:
        TIME_TO_FIRST_TOKEN.labels(kind).observe(ttft)
    if prompt_tokens is not None:
        PROMPT_TOKENS.labels(kind).inc(prompt_tokens)
    if completion_tokens is not None:
        COMPLETION_TOKENS.labels(kind).inc(completion_tokens)
        if seconds > 0:
            TOKENS_PER_SECOND.labels(kind).observe(completion_tokens / seconds)


class EngineSampler:
    """Copies one engine's queue, batch and cache figures into the metrics: every
    `interval` seconds on a thread, and on demand just before this process is scraped."""

    def __init__(self, app_state, interval: float = 1.0) -> None:
        self.app_state = app_state
        self.interval = interval
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "EngineSampler":
        prune_dead_processes()
        engine = getattr(self.app_state, "engine", None)
        if hasattr(engine, "adapters") and hasattr(engine, "prefixes"):  # tests share one
            self._seen = self._totals(engine)
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # metrics must never take the API down
                log.exception("sampling engine metrics failed")

    def sample(self) -> None:
        engine = getattr(self.app_state, "engine", None)
        # Only the built-in engine has these figures; a vLLM backend reports its own.
        if engine is None or not hasattr(engine, "adapters") or not hasattr(engine, "prefixes"):
            return
        scheduler = getattr(engine, "scheduler", None)
        waiting = len(scheduler.waiting) if scheduler is not None else 0
        # A long prompt in chunked prefill holds a batch slot already: it counts as running.
        rows = len(scheduler.rows) + len(scheduler.prefilling) if scheduler is not None else 0
        QUEUE_DEPTH.set(engine.queued + waiting)
        RUNNING_ROWS.set(rows)
        BATCH_OCCUPANCY.set(rows / max(1, engine.config.max_batch_size))
        totals = self._totals(engine)
        counters = {
            "loads": ADAPTER_LOADS,
            "hits": ADAPTER_HITS,
            "evictions": ADAPTER_EVICTIONS,
            "prefix_hits": PREFIX_HITS,
            "prefix_misses": PREFIX_MISSES,
        }
        with self._lock:  # the engine's counters only grow: add what is new since last time
            for name, total in totals.items():
                delta = total - self._seen.get(name, 0)
                if delta > 0:
                    counters[name].inc(delta)
                self._seen[name] = total

    @staticmethod
    def _totals(engine) -> dict[str, int]:
        return {
            "loads": engine.adapters.loads,
            "hits": getattr(engine.adapters, "hits", 0),
            "evictions": getattr(engine.adapters, "evictions", 0),
            "prefix_hits": engine.prefixes.hits,
            "prefix_misses": engine.prefixes.misses,
        }


def prune_dead_processes() -> None:
    """Live gauges of API processes that are gone (a restarted uvicorn worker) stop counting."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder or not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if not name.startswith("gauge_live") or not name.endswith(".db"):
            continue
        pid = int(name.rsplit("_", 1)[1].removesuffix(".db"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:
            pass


class JobsCollector(Collector):
    """Fine-tuning jobs and evaluations as the database has them, read at scrape time: the
    workers that ran them may be in other containers, but the database is shared."""

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        with get_sessionmaker()() as session:
            for table, noun, started in (
                (FineTuningJob, "fine_tuning_jobs", FineTuningJob.started_at),
                (Evaluation, "evaluations", Evaluation.created_at),
            ):
                counts = GaugeMetricFamily(
                    f"adaptd_{noun}", f"{noun.replace('_', ' ')} by status", labels=["status"]
                )
                for status, n in session.execute(
                    select(table.status, func.count()).group_by(table.status)
                ):
                    counts.add_metric([status], n)
                yield counts
                durations = HistogramMetricFamily(
                    f"adaptd_{noun}_duration_seconds",
                    f"Start to finish of {noun.replace('_', ' ')} that ended, by final status.",
                    labels=["status"],
                )
                rows = session.execute(
                    select(table.status, started, table.finished_at).where(
                        table.status.in_(TERMINAL),
                        table.finished_at.is_not(None),
                        started.is_not(None),
                    )
                ).all()
                for status in sorted({r[0] for r in rows}):
                    seconds = [(f - s).total_seconds() for st, s, f in rows if st == status]
                    durations.add_metric([status], _buckets(seconds), sum_value=sum(seconds))
                yield durations
                heartbeat = session.scalar(
                    select(func.min(table.heartbeat_at)).where(table.status == Status.RUNNING)
                )
                age = GaugeMetricFamily(
                    f"adaptd_{noun}_heartbeat_age_seconds",
                    f"Age of the oldest worker heartbeat among running {noun.replace('_', ' ')}"
                    " (0 when none runs).",
                )
                age.add_metric([], _age(now, heartbeat))
                yield age


def _age(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else max(0.0, (now - then).total_seconds())


def _buckets(values: list[float]) -> list[tuple[str, float]]:
    out = [(str(float(b)), float(sum(v <= b for v in values))) for b in JOB_BUCKETS]
    out.append(("+Inf", float(len(values))))
    return out


def render(sampler: EngineSampler | None) -> bytes:
    """The text exposition of every process's metrics plus the database's."""
    if sampler is not None:
        sampler.sample()  # this process's engine figures, fresh
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(JobsCollector())
    return generate_latest(registry)


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return self.registry.collect()
