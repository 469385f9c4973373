"""Disk full while the adapter is saved: the job fails cleanly, nothing is registered and no
partial files are left. The adapters folder is a real 64 KiB tmpfs, so the write really
fails with ENOSPC."""

import subprocess
import time

import pytest

from tests.files.data import chat_rows, jsonl, upload
from tests.processes import ApiProcess, WorkerProcess

QUICK = {
    "n_epochs": 1,
    "batch_size": 12,
    "learning_rate_multiplier": 1,
    "r": 16,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@pytest.fixture
def full_disk_data_dir(tmp_path):
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(adapters)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield tmp_path
    subprocess.run(["umount", "-l", str(adapters)], check=False)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_disk_full_fails_the_job_and_registers_nothing(
    settings_env, monkeypatch, full_disk_data_dir, tmp_path
) -> None:
    from tests.conftest import clean_database

    clean_database()
    monkeypatch.setenv("DATA_DIR", str(full_disk_data_dir))
    api = ApiProcess()
    worker = WorkerProcess(tmp_path).start()
    try:
        http = api.http
        base = http.get("/v1/models").json()["data"][0]["id"]
        file_id = upload(http, jsonl(chat_rows(12)), "a.jsonl").json()["id"]
        job = http.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": base,
                "training_file": file_id,
                "suffix": "full",
                "method": {"type": "supervised", "supervised": {"hyperparameters": QUICK}},
            },
        ).json()
        deadline = time.monotonic() + 300
        while (state := http.get(f"/v1/fine_tuning/jobs/{job['id']}").json())["status"] not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["status"] == "failed", state
        assert state["fine_tuned_model"] is None
        assert state["error"]["code"] == "disk_full", state["error"]
        models = [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert models == [base]
        assert list((full_disk_data_dir / "adapters").iterdir()) == []
        # The service itself is fine: the base model still answers.
        r = http.post(
            "/v1/chat/completions",
            json={"model": base, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 200
    finally:
        worker.stop()
        api.kill()
