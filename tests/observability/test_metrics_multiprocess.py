"""Two uvicorn worker processes behind one port: whichever process answers a scrape, the
counters are the sum over both, exact to the request (PROMETHEUS_MULTIPROC_DIR), on the API
port and on METRICS_PORT."""

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, ROOT, free_port

N = 40


def models_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == "adaptd_http_requests_total"
                and s.labels.get("route") == "/v1/models"
                and s.labels.get("status") == "200"
            ):
                return s.value
    return 0.0


def per_process_counts(folder: Path, tmp: Path) -> list[float]:
    """Each process's own file, read on its own."""
    counts = []
    for db in sorted(folder.glob("counter_*.db")):
        alone = tmp / db.stem
        alone.mkdir()
        shutil.copy(db, alone / db.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(alone))
        counts.append(models_count(generate_latest(registry).decode()))
    return counts


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_counts_are_exact_across_two_workers(settings_env, tmp_path: Path) -> None:
    from tests.conftest import clean_database

    clean_database()
    prom = tmp_path / "prom"
    prom.mkdir()
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(prom), METRICS_PORT=str(metrics_port))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.asgi:app",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        deadline = time.monotonic() + 180
        ready = 0
        while ready < 10:  # both workers up: several readiness answers in a row
            try:
                ok = httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                ok = False
            ready = ready + 1 if ok else 0
            assert proc.poll() is None and time.monotonic() < deadline, "API did not start"
            time.sleep(0.1 if ok else 0.5)

        def one(_: int) -> int:
            # A new connection each time, so the kernel may hand it to either process.
            return httpx.get(f"{base}/v1/models", headers=auth, timeout=60).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(N))) == [200] * N
        for _ in range(6):
            on_api = httpx.get(f"{base}/metrics", headers=auth, timeout=30)
            assert on_api.status_code == 200
            assert models_count(on_api.text) == N
            on_port = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
            assert models_count(on_port.text) == N
        split = per_process_counts(prom, tmp_path)
        assert sum(split) == N and sum(c > 0 for c in split) == 2, split
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
