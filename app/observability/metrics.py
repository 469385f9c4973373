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
from typing import Any

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
from sqlalchemy import ColumnElement, case, extract, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db import get_sessionmaker, utcnow
from app.engine.metrics_snapshot import EngineMetrics
from app.engine.protocol import InferenceEngine
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
IN_FLIGHT = Gauge(
    "adaptd_engine_requests_in_flight",
    "Requests submitted to the engine and not yet finished (queued or running; with vLLM,"
    " sent to its servers).",
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
# EngineMetrics' cache totals and the counters they feed.
CACHE_COUNTERS = {
    "adapter_loads": ADAPTER_LOADS,
    "adapter_hits": ADAPTER_HITS,
    "adapter_evictions": ADAPTER_EVICTIONS,
    "prefix_hits": PREFIX_HITS,
    "prefix_misses": PREFIX_MISSES,
}


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
    """Copies one engine's figures (`InferenceEngine.metrics()`) into the metrics: every
    `interval` seconds on a thread, and on demand just before this process is scraped. A
    figure the engine cannot know (None) leaves its metric alone."""

    def __init__(self, app_state, interval: float = 1.0) -> None:
        self.app_state = app_state
        self.interval = interval
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "EngineSampler":
        prune_dead_processes()
        engine = self._engine()
        if engine is not None:  # tests share one engine: count only what is new from here
            self._seen = _cache_totals(engine.metrics())
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _engine(self) -> InferenceEngine | None:
        # None until the engine has loaded (create_app loads it in the background).
        return getattr(self.app_state, "engine", None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # metrics must never take the API down
                log.exception("sampling engine metrics failed")

    def sample(self) -> None:
        engine = self._engine()
        if engine is None:
            return
        figures = engine.metrics()
        IN_FLIGHT.set(figures.in_flight)
        if figures.queued is not None:
            QUEUE_DEPTH.set(figures.queued)
        if figures.running is not None:
            RUNNING_ROWS.set(figures.running)
            if figures.max_running is not None:
                BATCH_OCCUPANCY.set(figures.running / max(1, figures.max_running))
        with self._lock:  # the engine's totals only grow: add what is new since last time
            for name, total in _cache_totals(figures).items():
                delta = total - self._seen.get(name, 0)
                if delta > 0:
                    CACHE_COUNTERS[name].inc(delta)
                self._seen[name] = total


def _cache_totals(figures: EngineMetrics) -> dict[str, int]:
    """The cache totals this engine reports, by EngineMetrics field name."""
    totals = {name: getattr(figures, name) for name in CACHE_COUNTERS}
    return {name: total for name, total in totals.items() if total is not None}


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
    """Fine-tuning jobs and evaluations as the database has them, read at scrape time.

    Jobs end in Celery workers (other processes, often other containers) and in the API's
    reaper; the database is the one place all of them share, so the figures come from it
    rather than from histograms observed in the process that finished the job (a worker's
    observation would never reach an API process's /metrics). Each scrape sends a few
    aggregate queries: counts by status, and the duration histogram computed inside the
    database (count, sum and one sum per bucket, one row per final status), so no job's
    timestamps leave it. The database still reads every finished row (the status index
    finds them); a window over recent jobs would make the histogram's counts fall, which
    Prometheus reads as a counter reset."""

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
                yield _durations(session, table, started, noun)
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


def _durations(
    session: Session, table: Any, started: InstrumentedAttribute, noun: str
) -> HistogramMetricFamily:
    """Start to finish of the rows that ended, by final status, aggregated by the database."""

    family = HistogramMetricFamily(
        f"adaptd_{noun}_duration_seconds",
        f"Start to finish of {noun.replace('_', ' ')} that ended, by final status.",
        labels=["status"],
    )
    # Each row's duration once (MATERIALIZED: not recomputed in every bucket's sum).
    ended = (
        select(
            table.status.label("status"),
            _seconds_between(session, started, table.finished_at).label("seconds"),
        )
        .where(table.status.in_(TERMINAL), table.finished_at.is_not(None), started.is_not(None))
        .cte(f"ended_{noun}")
        .prefix_with("MATERIALIZED")
    )
    seconds = ended.c.seconds
    query = (
        select(
            ended.c.status,
            func.count(),
            func.sum(seconds),
            *(func.sum(case((seconds <= bound, 1), else_=0)) for bound in JOB_BUCKETS),
        )
        .group_by(ended.c.status)
        .order_by(ended.c.status)
    )
    for status, count, total, *in_buckets in session.execute(query):
        buckets = [(str(float(b)), float(n)) for b, n in zip(JOB_BUCKETS, in_buckets, strict=True)]
        buckets.append(("+Inf", float(count)))
        family.add_metric([status], buckets, sum_value=float(total))
    return family


def _seconds_between(session: Session, start: Any, end: Any) -> ColumnElement[float]:
    """`end - start` in seconds, as SQL. PostgreSQL: exact to the microsecond. SQLite keeps
    times to the millisecond in its date functions; the difference of two Julian days (a
    double near 2.46 million) is rounded to whole milliseconds so that it stays exact."""
    if session.get_bind().dialect.name == "sqlite":
        return func.round((func.julianday(end) - func.julianday(start)) * 86_400_000) / 1000.0
    return extract("epoch", end - start)


def _age(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else max(0.0, (now - then).total_seconds())


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
