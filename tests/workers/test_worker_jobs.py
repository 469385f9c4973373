"""End to end with a real worker process and Redis: train and serve an adapter, cancel a
running job, and survive a worker killed mid-job."""

import json
import time

import httpx
import pytest
import torch
from openai import NotFoundError, OpenAI

from app.engine.loader import training_autocast
from tests.charts.curves import curve_point_counts
from tests.conftest import ADMIN_KEY
from tests.files.data import QA, chat_rows, jsonl

TERMINAL = {"succeeded", "failed", "cancelled"}
# The tiny random model memorises 12 answers with LoRA on every projection and the output
# layer (its frozen output embeddings alone cannot make a confident prediction).
MEMORISE = {
    "n_epochs": 150,
    "batch_size": 12,
    "learning_rate_multiplier": 10,
    "r": 16,
    "alpha": 32,
    "dropout": 0.0,
    "target_modules": [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "lm_head",
    ],
}
LONG = {"n_epochs": 200, "batch_size": 1, "learning_rate_multiplier": 1, "r": 4}


@pytest.fixture
def openai_client(live_server: str) -> OpenAI:
    return OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)


def _upload(client: OpenAI) -> str:
    f = client.files.create(file=("words.jsonl", jsonl(chat_rows(12))), purpose="fine-tune")
    return f.id


def _create(client: OpenAI, file_id: str, hyperparameters: dict, **kw):
    return client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        **kw,
    )


def _wait(client: OpenAI, job_id: str, until, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck in {job.status}")


def _events(client: OpenAI, job_id: str) -> list:
    return list(client.fine_tuning.jobs.list_events(job_id, limit=1000).data)[::-1]


def _answer(client: OpenAI, model: str, question: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Say the word for {question}."}],
        temperature=0,
        max_tokens=8,
    )
    return (reply.choices[0].message.content or "").strip()


def test_train_then_serve_the_adapter_at_once(openai_client, start_worker, settings_env):
    start_worker()
    file_id = _upload(openai_client)
    valid_id = _upload(openai_client)
    job = _create(
        openai_client, file_id, MEMORISE, suffix="words", seed=3, validation_file=valid_id
    )
    assert job.status == "queued" and job.validation_file == valid_id
    job = _wait(openai_client, job.id, lambda j: j.status in TERMINAL)
    assert job.status == "succeeded", job.error
    name = f"ft:tiny-llama:words:{job.id}"
    assert job.fine_tuned_model == name and job.trained_tokens > 0
    assert job.hyperparameters.n_epochs == 150 and job.finished_at is not None

    events = _events(openai_client, job.id)
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(1, 151))
    assert {"train_loss", "tokens_per_second", "eta_seconds"} <= set(metrics[0].data)
    assert metrics[-1].data["train_loss"] < metrics[0].data["train_loss"] / 10
    # The validation file (here the same examples) is scored at every logged step.
    valid = [e.data["valid_loss"] for e in metrics]
    assert all(isinstance(v, float) for v in valid) and valid[-1] < valid[0] / 10
    assert "validation loss=" in metrics[-1].message
    # The same numbers as a picture: one training and one validation curve of 150 points.
    picture = openai_client.get(f"/fine_tuning/jobs/{job.id}/loss.svg", cast_to=httpx.Response).text
    assert curve_point_counts(picture) == [150, 150]
    infos = [e.message for e in events if e.type == "message"]
    assert "Fine-tuning job started" in infos
    # TRAIN_AUTOCAST=auto: supervised training autocasts to bf16 where this CPU has native bf16.
    autocast = training_autocast("auto", torch.device("cpu")) is not None
    assert any("bf16 autocast" in m for m in infos) == autocast
    assert infos[-2:] == [
        f"New fine-tuned model created: {name}",
        "The job has successfully completed",
    ]
    folder = settings_env.adapters_dir / job.id
    assert {p.name for p in folder.iterdir()} >= {
        "adapter_model.safetensors",
        "adapter_config.json",
        "manifest.json",
    }
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["job_id"] == job.id and manifest["base_model"] == "tiny-llama"
    assert manifest["training_file"]["id"] == file_id and len(manifest["data_sha256"]) == 64
    assert manifest["validation_file"]["id"] == valid_id
    assert manifest["hyperparameters"]["r"] == 16 and "train_loss" in manifest["metrics"]
    assert manifest["validation"]["source"] == "file" and manifest["validation"]["examples"] == 12
    # The fine-tuned model is the epoch with the lowest validation loss, measured every epoch.
    selected = manifest["selected"]
    losses = [e["valid_loss"] for e in selected["epochs"]]
    assert len(losses) == 150 and selected["valid_loss"] == min(losses)
    chosen = selected["epoch"]
    assert losses[chosen - 1] == min(losses) and "lowest validation loss" in selected["reason"]
    # Checkpoints: the final model and the two latest other epochs (one step per epoch).
    others = [e for e in (150, 149, 148) if e != chosen][:2]
    earlier = [f"{name}:ckpt-step-{e}" for e in others]
    checkpoints = openai_client.fine_tuning.jobs.checkpoints.list(job.id).data
    expected_ckpts = sorted(
        [(chosen, name)] + list(zip(others, earlier, strict=True)), reverse=True
    )
    assert [(c.step_number, c.fine_tuned_model_checkpoint) for c in checkpoints] == expected_ckpts
    assert all(c.metrics.train_loss is not None for c in checkpoints)
    assert not list(settings_env.adapters_dir.glob(".tmp-*"))
    ckpt = json.loads(
        (settings_env.adapters_dir / f"{job.id}-step-{others[0]}" / "manifest.json").read_text()
    )
    assert ckpt["name"] == earlier[0]
    assert ckpt["checkpoint"] == {"epoch": others[0], "step": others[0]}

    # Served by the running API with no restart: listed, and it learned the answers.
    assert name in [m.id for m in openai_client.models.list().data]
    tuned = [_answer(openai_client, name, q) for q, _ in QA]
    base = [_answer(openai_client, "tiny-llama", q) for q, _ in QA]
    expected = [a for _, a in QA]
    assert tuned == expected
    assert sum(b == e for b, e in zip(base, expected, strict=True)) <= 1

    # An earlier epoch's checkpoint is a model of its own, served the same way.
    assert set(earlier) <= {m.id for m in openai_client.models.list().data}
    assert [_answer(openai_client, earlier[0], q) for q, _ in QA[:3]] == expected[:3]

    openai_client.models.delete(name)
    with pytest.raises(NotFoundError):
        _answer(openai_client, name, "France")
    assert not folder.exists()
    assert _answer(openai_client, earlier[1], QA[0][0]) == expected[0]  # checkpoints stay


def test_cancel_stops_a_running_job(openai_client, start_worker, settings_env):
    start_worker()
    job = _create(openai_client, _upload(openai_client), LONG, suffix="long")
    _wait(openai_client, job.id, lambda j: j.status == "running", timeout=300)
    deadline = time.monotonic() + 300
    while not any(e.type == "metrics" for e in _events(openai_client, job.id)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelled = openai_client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"

    def stopped() -> list:
        return [e for e in _events(openai_client, job.id) if "Training stopped" in e.message]

    while not stopped():
        assert time.monotonic() < deadline, "the worker did not stop training"
        time.sleep(0.2)
    step = stopped()[0].data["step"]
    assert 0 < step < 2400  # 12 examples x 200 epochs: it stopped long before the end
    final = openai_client.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "cancelled" and final.fine_tuned_model is None
    assert not any(m.id.startswith("ft:") for m in openai_client.models.list().data)
    # Nothing left on disk: no adapter, and the epoch checkpoints' staging folder is gone.
    assert [p for p in settings_env.adapters_dir.iterdir() if job.id in p.name] == []


def test_killed_worker_job_is_retried_and_succeeds(openai_client, start_worker):
    worker = start_worker()
    job = _create(openai_client, _upload(openai_client), {**LONG, "n_epochs": 20}, suffix="kill")
    _wait(openai_client, job.id, lambda j: j.status == "running", timeout=300)
    worker.kill()  # SIGKILL mid-job: no cleanup, no ack
    # The API's reaper notices the silent heartbeat and re-queues; a new worker finishes it.
    requeued = _wait(openai_client, job.id, lambda j: j.status != "running", timeout=120)
    assert requeued.status == "queued"
    start_worker()
    done = _wait(openai_client, job.id, lambda j: j.status in TERMINAL)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2  # type: ignore[attr-defined]
    messages = [e.message for e in _events(openai_client, job.id)]
    assert any("stopped sending heartbeats" in m for m in messages)
    assert "Fine-tuning job started (attempt 2 of 2)" in messages


def test_killed_worker_job_fails_when_no_attempts_left(
    openai_client, start_worker, settings_env, monkeypatch
):
    monkeypatch.setattr(settings_env, "job_max_attempts", 1)
    worker = start_worker()
    job = _create(openai_client, _upload(openai_client), LONG, suffix="kill")
    _wait(openai_client, job.id, lambda j: j.status == "running", timeout=300)
    worker.kill()
    done = _wait(openai_client, job.id, lambda j: j.status != "running", timeout=120)
    assert done.status == "failed"
    assert done.error.code == "worker_lost" and "heartbeats" in done.error.message
