"""/metrics parsed with prometheus_client's own parser: known traffic moves each counter by
exactly what was sent; job and evaluation figures come from the database; the page needs a
platform admin key; labels stay bounded."""

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.db import get_sessionmaker, utcnow
from app.finetune.models import FineTuningJob
from tests.conftest import make_tenant_key
from tests.registry_util import register_random_adapter


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def chat(client, model: str, **extra) -> dict:
    r = client.post(
        "/v1/chat/completions",
        json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        | extra,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_counters_move_by_exactly_the_traffic_sent(client) -> None:
    base = client.app.state.engine.name
    adapter = register_random_adapter("default", "metrics")
    r = client.post("/v1/templates", json={"name": "t", "system_prompt": "Be brief, always."})
    assert r.status_code == 201
    before = scrape(client)
    usages = {"base": [], "adapter": [], "template": []}
    for _ in range(3):
        usages["base"].append(chat(client, base)["usage"])
    for _ in range(2):
        usages["adapter"].append(chat(client, adapter)["usage"])
    for _ in range(2):
        usages["template"].append(chat(client, "tmpl:t")["usage"])
    with client.stream(
        "POST",
        "/v1/completions",
        json={
            "model": base,
            "max_tokens": 3,
            "prompt": "hello",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as r:
        assert r.status_code == 200
        body = "".join(r.iter_text())
    assert '"usage"' in body
    for _ in range(2):
        assert client.get("/v1/files/file-nope").status_code == 404
    after = scrape(client)

    assert (
        delta(
            before,
            after,
            "adaptd_http_requests_total",
            method="POST",
            route="/v1/chat/completions",
            status="200",
        )
        == 7
    )
    assert (
        delta(
            before,
            after,
            "adaptd_http_requests_total",
            method="POST",
            route="/v1/completions",
            status="200",
        )
        == 1
    )
    assert (
        delta(
            before,
            after,
            "adaptd_http_requests_total",
            method="GET",
            route="/v1/files/{file_id}",
            status="404",
        )
        == 2
    )
    assert (
        delta(
            before,
            after,
            "adaptd_http_requests_total",
            method="GET",
            route="/metrics",
            status="200",
        )
        == 1
    )  # the first scrape
    for kind, usage in usages.items():
        extra = 1 if kind == "base" else 0  # the streamed completion
        n = len(usage) + extra
        assert (
            delta(before, after, "adaptd_inference_request_duration_seconds_count", kind=kind) == n
        ), kind
        assert delta(before, after, "adaptd_time_to_first_token_seconds_count", kind=kind) == n
        assert delta(before, after, "adaptd_request_tokens_per_second_count", kind=kind) == n
        if kind != "base":
            assert delta(before, after, "adaptd_prompt_tokens_total", kind=kind) == sum(
                u["prompt_tokens"] for u in usage
            )
            assert delta(before, after, "adaptd_completion_tokens_total", kind=kind) == sum(
                u["completion_tokens"] for u in usage
            )
    streamed = [line for line in body.splitlines() if '"usage":{' in line]
    assert len(streamed) == 1
    import json

    s_usage = json.loads(streamed[0].removeprefix("data: "))["usage"]
    assert (
        delta(before, after, "adaptd_prompt_tokens_total", kind="base")
        == sum(u["prompt_tokens"] for u in usages["base"]) + s_usage["prompt_tokens"]
    )
    assert (
        delta(before, after, "adaptd_completion_tokens_total", kind="base")
        == sum(u["completion_tokens"] for u in usages["base"]) + s_usage["completion_tokens"]
    )
    # The adapter was read once, then found resident; the template's prefix was computed
    # once, then reused.
    assert delta(before, after, "adaptd_adapter_cache_loads_total") == 1
    assert delta(before, after, "adaptd_adapter_cache_hits_total") == 1
    assert delta(before, after, "adaptd_prefix_cache_hits_total") >= 1
    # Idle now: nothing queued or running.
    assert after[("adaptd_engine_queue_depth", ())] == 0
    assert after[("adaptd_engine_running_rows", ())] == 0


def test_labels_are_bounded(client) -> None:
    chat(client, client.app.state.engine.name)
    samples = scrape(client)
    allowed = {"method", "route", "status", "kind", "le"}
    for name, labels in samples:
        if not name.startswith("adaptd_"):
            continue
        keys = {k for k, _ in labels}
        assert keys <= allowed, (name, keys)
        kinds = {v for k, v in labels if k == "kind"}
        assert kinds <= {"base", "template", "adapter"}, (name, kinds)


@pytest.mark.both_databases
def test_job_figures_come_from_the_database(client) -> None:
    now = utcnow()
    with get_sessionmaker()() as s:
        for i, (status, seconds) in enumerate(
            [("succeeded", 50), ("succeeded", 700), ("failed", 5), ("running", None)]
        ):
            s.add(
                FineTuningJob(
                    id=f"ftjob-m{i}",
                    tenant="default",
                    model="m",
                    training_file="f",
                    status=status,
                    started_at=now - timedelta(seconds=1000),
                    finished_at=None
                    if seconds is None
                    else now - timedelta(seconds=1000 - seconds),
                    heartbeat_at=now - timedelta(seconds=30) if seconds is None else None,
                )
            )
        s.commit()
    m = scrape(client)
    assert m[("adaptd_fine_tuning_jobs", (("status", "succeeded"),))] == 2
    assert m[("adaptd_fine_tuning_jobs", (("status", "failed"),))] == 1
    assert m[("adaptd_fine_tuning_jobs", (("status", "running"),))] == 1
    ok = (("status", "succeeded"),)
    assert m[("adaptd_fine_tuning_jobs_duration_seconds_count", ok)] == 2
    assert abs(m[("adaptd_fine_tuning_jobs_duration_seconds_sum", ok)] - 750) < 1e-6
    assert m[("adaptd_fine_tuning_jobs_duration_seconds_bucket", (("le", "60.0"), *ok))] == 1
    assert m[("adaptd_fine_tuning_jobs_duration_seconds_bucket", (("le", "+Inf"), *ok))] == 2
    assert 29 <= m[("adaptd_fine_tuning_jobs_heartbeat_age_seconds", ())] < 300
    assert m[("adaptd_evaluations_heartbeat_age_seconds", ())] == 0


def test_metrics_need_a_platform_admin_key(client) -> None:
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    plain = make_tenant_key(client, "acme")
    r = client.get("/metrics", headers={"Authorization": f"Bearer {plain}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    tenant_admin = client.post(
        "/v1/admin/keys", json={"tenant": "acme", "scopes": ["admin"]}
    ).json()["key"]
    r = client.get("/metrics", headers={"Authorization": f"Bearer {tenant_admin}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"


def test_grafana_dashboard_names_only_metrics_that_exist(client) -> None:
    import json
    import re

    from tests.conftest import ROOT

    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"adaptd_[a-z_]+", e)}
    chat(client, client.app.state.engine.name)
    # Families with no samples yet (no jobs in this database) still declare their type.
    families = [f.name for f in text_string_to_metric_families(client.get("/metrics").text)]
    exposed = {f + suffix for f in families for suffix in ("", "_total", "_bucket", "_count")}
    assert used and used <= exposed, used - exposed


def test_the_engine_figures_come_through_its_metrics_method(client) -> None:
    """What the built-in engine reports is what /metrics shows; running rows and the queue
    add up to the requests in flight."""
    engine = client.app.state.engine
    chat(client, engine.name)
    figures = engine.metrics()
    m = scrape(client)
    assert figures.in_flight == figures.queued + figures.running == 0
    assert figures.max_running == engine.config.max_batch_size
    assert m[("adaptd_engine_requests_in_flight", ())] == 0
    assert m[("adaptd_engine_batch_occupancy", ())] == 0
    assert figures.adapter_loads == engine.adapters.loads
    assert figures.prefix_hits == engine.prefixes.hits
    assert figures.prefix_misses == engine.prefixes.misses


def test_a_vllm_engine_reports_only_its_requests_in_flight(tiny_model_dir, monkeypatch) -> None:
    """The vLLM backend cannot see its servers' queues or caches: those metrics are left
    alone (not set to a made-up 0); its requests in flight are reported. No server is
    started: metrics() reads only adaptd's own count."""
    from types import SimpleNamespace

    from app.engine.vllm.engine import VllmConfig, VllmEngine
    from app.observability import metrics

    engine = VllmEngine(str(tiny_model_dir), "tiny", VllmConfig(urls=["http://127.0.0.1:9"]))
    engine.in_flight = 3
    figures = engine.metrics()
    assert figures.in_flight == 3
    assert figures.queued is figures.running is figures.adapter_loads is figures.prefix_hits
    assert figures.queued is None

    metrics.QUEUE_DEPTH.set(7)
    before = metrics.ADAPTER_LOADS._value.get()
    metrics.EngineSampler(SimpleNamespace(engine=engine)).sample()
    assert metrics.IN_FLIGHT._value.get() == 3
    assert metrics.QUEUE_DEPTH._value.get() == 7
    assert metrics.ADAPTER_LOADS._value.get() == before
    metrics.QUEUE_DEPTH.set(0)


@pytest.mark.both_databases
def test_job_durations_per_bucket_and_status(client) -> None:
    """The database's aggregate puts each duration in every bucket at or above it, at the
    bucket edges too, by final status; rows without a start, unfinished or active ones are
    left out."""
    now = utcnow()
    rows = [
        ("succeeded", 10.0),  # on an edge: counted in le=10
        ("succeeded", 10.5),
        ("succeeded", 90_000.0),  # above the last bound: only +Inf
        ("cancelled", 0.25),
        ("running", 40.0),  # finished_at set by mistake on a running row: not a final status
    ]
    with get_sessionmaker()() as s:
        for i, (status, seconds) in enumerate(rows):
            start = now - timedelta(seconds=100_000)
            s.add(
                FineTuningJob(
                    id=f"ftjob-d{i}",
                    tenant="default",
                    model="m",
                    training_file="f",
                    status=status,
                    started_at=start,
                    finished_at=start + timedelta(seconds=seconds),
                )
            )
        s.add(
            FineTuningJob(
                id="ftjob-never-started",
                tenant="default",
                model="m",
                training_file="f",
                status="failed",
                started_at=None,
                finished_at=now,
            )
        )
        s.commit()
    m = scrape(client)
    ok, cancelled = (("status", "succeeded"),), (("status", "cancelled"),)
    name = "adaptd_fine_tuning_jobs_duration_seconds"

    def bucket(le: str, labels: tuple) -> float:
        return m[(f"{name}_bucket", (("le", le), *labels))]

    assert bucket("10.0", ok) == 1 and bucket("30.0", ok) == 2 and bucket("86400.0", ok) == 2
    assert bucket("+Inf", ok) == m[(f"{name}_count", ok)] == 3
    assert abs(m[(f"{name}_sum", ok)] - 90_020.5) < 1e-6
    assert bucket("10.0", cancelled) == 1 and m[(f"{name}_count", cancelled)] == 1
    assert abs(m[(f"{name}_sum", cancelled)] - 0.25) < 1e-6
    assert not any(k[0].startswith(name) and ("status", "failed") in k[1] for k in m)
    assert not any(k[0].startswith(name) and ("status", "running") in k[1] for k in m)
