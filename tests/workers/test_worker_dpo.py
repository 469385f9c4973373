"""DPO end to end with the openai client and a real worker process: a preference job to
success, its metrics, the adapter served; then a job on top of that adapter, with its
lineage in the manifest, the registry and the model list."""

import json

import pytest
from openai import OpenAI

from tests.conftest import ADMIN_KEY
from tests.files.data import chat_rows, jsonl, preference_rows
from tests.workers.test_worker_jobs import TERMINAL, _events, _wait


@pytest.fixture
def openai_client(live_server: str) -> OpenAI:
    return OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)


DPO = {"n_epochs": 10, "batch_size": 6, "learning_rate_multiplier": 10, "beta": 0.5, "r": 8}


def test_dpo_job_trains_serves_and_can_be_trained_on(
    openai_client: OpenAI, start_worker, settings_env
):
    from app.db import get_sessionmaker
    from app.registry.models import Adapter

    start_worker()
    prefs = openai_client.files.create(
        file=("prefs.jsonl", jsonl(preference_rows(12))), purpose="fine-tune"
    )
    assert prefs.id
    job = openai_client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=prefs.id,
        suffix="prefs",
        seed=1,
        method={"type": "dpo", "dpo": {"hyperparameters": DPO}},
    )
    assert job.status == "queued" and job.method.type == "dpo"
    job = _wait(openai_client, job.id, lambda j: j.status in TERMINAL)
    assert job.status == "succeeded", job.error
    name = f"ft:tiny-llama:prefs:{job.id}"
    assert job.fine_tuned_model == name
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.5

    metrics = [e for e in _events(openai_client, job.id) if e.type == "metrics"]
    assert len(metrics) == 20  # 12 pairs, batch 6, 10 epochs
    first, last = metrics[0].data, metrics[-1].data
    assert {"train_loss", "reward_accuracy", "reward_margin"} <= set(first)
    assert abs(first["train_loss"] - 0.6931) < 0.01  # the policy starts as the reference
    assert last["train_loss"] < first["train_loss"] and last["reward_margin"] > 0
    assert "reward accuracy=" in metrics[-1].message

    manifest = json.loads((settings_env.adapters_dir / job.id / "manifest.json").read_text())
    assert manifest["method"] == "dpo" and manifest["hyperparameters"]["beta"] == 0.5
    assert manifest["parent"] is None and manifest["validation"]["source"] == "none"

    # DPO stays fp32 whatever TRAIN_AUTOCAST says (it applies to supervised jobs only).
    assert not any("autocast" in e.message for e in _events(openai_client, job.id))

    # Served at once, like any adapter.
    reply = openai_client.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": "Say the word for France."}],
        temperature=0,
        max_tokens=4,
    )
    assert reply.model == name and reply.choices[0].message.content is not None

    # A supervised job on top of the DPO adapter: its weights, its LoRA shape, its lineage.
    sft = openai_client.files.create(
        file=("words.jsonl", jsonl(chat_rows(12))), purpose="fine-tune"
    )
    child = openai_client.fine_tuning.jobs.create(
        model=name,
        training_file=sft.id,
        suffix="child",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
    )
    assert child.model == name
    child = _wait(openai_client, child.id, lambda j: j.status in TERMINAL)
    assert child.status == "succeeded", child.error
    assert child.hyperparameters.auto_reason and "batch size" in child.hyperparameters.auto_reason
    child_name = child.fine_tuned_model
    assert child_name == f"ft:tiny-llama:child:{child.id}"
    events = [e.message for e in _events(openai_client, child.id)]
    assert f"Starting from the weights of {name}" in events
    child_manifest = json.loads(
        (settings_env.adapters_dir / child.id / "manifest.json").read_text()
    )
    assert child_manifest["parent"]["name"] == name
    assert child_manifest["parent"]["job_id"] == job.id
    assert child_manifest["hyperparameters"]["r"] == 8  # the parent's shape
    cards = {m.id: m for m in openai_client.models.list().data}
    assert cards[child_name].parent == name and cards[name].parent is None
    with get_sessionmaker()() as session:
        row = session.query(Adapter).filter_by(name=child_name).one()
        assert row.parent == name
