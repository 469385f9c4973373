"""Jobs API without a worker: validation of requests, states, cancel, events, tenancy."""

import threading

import pytest

from app.db import get_sessionmaker
from app.files.models import File
from app.finetune import service
from tests.conftest import make_tenant_key
from tests.files.data import chat_rows, jsonl, preference_rows, upload


@pytest.fixture
def training_file(client) -> str:
    r = upload(client, jsonl(chat_rows(12)))
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _create(client, **body):
    return client.post("/v1/fine_tuning/jobs", json=body)


def test_create_is_queued_with_openai_shape(client, training_file, settings_env):
    r = _create(
        client,
        model="tiny-llama",
        training_file=training_file,
        suffix="greeter",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": "auto", "r": 4},
                "lora": {"alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            },
        },
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "queued" and job["seed"] == 7 and job["error"] is None
    assert job["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "learning_rate": None,  # adaptd's: filled in when the worker resolves "auto"
        "auto_reason": None,
    }
    hp = job["method"]["supervised"]["hyperparameters"]
    assert hp["r"] == 4 and hp["alpha"] == 8 and hp["target_modules"] == ["q_proj", "v_proj"]
    assert job["fine_tuned_model"] is None and job["training_file"] == training_file

    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]
    messages = [e["message"] for e in events][::-1]  # oldest first
    assert messages[0] == f"Created fine-tuning job: {job['id']}"
    assert "Files validated, moving job to queued state" in messages
    assert all(e["type"] == "message" and e["level"] == "info" for e in events)
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "queued"


@pytest.mark.both_databases
def test_list_pagination_and_cancel_queued(client, training_file):
    ids = [
        _create(client, model="tiny-llama", training_file=training_file).json()["id"]
        for _ in range(3)
    ]
    listed = client.get("/v1/fine_tuning/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in listed["data"]] == ids[::-1][:2] and listed["has_more"] is True
    rest = client.get("/v1/fine_tuning/jobs", params={"after": ids[1]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False

    r = client.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    again = client.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert client.get(f"/v1/fine_tuning/jobs/{ids[0]}/checkpoints").json()["data"] == []


@pytest.mark.both_databases
def test_unknown_and_other_tenants_files_are_404(client, training_file):
    r = _create(client, model="tiny-llama", training_file="file-nope")
    assert r.status_code == 404 and r.json()["error"]["param"] == "training_file"
    r = _create(
        client, model="tiny-llama", training_file=training_file, validation_file="file-nope"
    )
    assert r.status_code == 404 and r.json()["error"]["param"] == "validation_file"

    other = make_tenant_key(client, "other")
    h = {"Authorization": f"Bearer {other}"}
    r = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": "tiny-llama", "training_file": training_file},
        headers=h,
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"
    job = _create(client, model="tiny-llama", training_file=training_file).json()
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=h).status_code == 404
    assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=h).status_code == 404
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=h).status_code == 404
    assert client.get("/v1/fine_tuning/jobs", headers=h).json()["data"] == []


@pytest.mark.parametrize(
    ("hyperparameters", "param"),
    [
        ({"n_epochs": 0}, "n_epochs"),
        ({"n_epochs": "lots"}, "n_epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"learning_rate_multiplier": 0}, "learning_rate_multiplier"),
        ({"r": 0}, "r"),
        ({"dropout": 1.5}, "dropout"),
        ({"target_modules": []}, "target_modules"),
        ({"learning_rate": 0.1}, "learning_rate"),  # not a field: typos are rejected
    ],
)
def test_bad_hyperparameters_are_400(client, training_file, hyperparameters, param):
    r = _create(
        client,
        model="tiny-llama",
        training_file=training_file,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    )
    assert r.status_code == 400, r.text
    assert param in r.json()["error"]["param"]


@pytest.mark.parametrize(
    "module",
    [
        "input_layernorm",  # a norm: exists, but LoRA cannot adapt it
        "model",  # the whole decoder
        "self_attn",  # an attention block (its projections can take LoRA, not the block)
        "layers",  # a module list
    ],
)
def test_target_modules_that_cannot_take_lora_are_400(client, training_file, module):
    r = _create(
        client,
        model="tiny-llama",
        training_file=training_file,
        method={"supervised": {"lora": {"target_modules": ["q_proj", module]}}},
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_hyperparameters"
    assert error["param"] == "method.supervised.hyperparameters.target_modules"
    assert f"not found: {module} " in error["message"] and "q_proj" in error["message"]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_unknown_target_module_model_and_suffix_are_400(client, training_file):
    r = _create(
        client,
        model="tiny-llama",
        training_file=training_file,
        method={"supervised": {"lora": {"target_modules": ["qq_proj"]}}},
    )
    assert r.status_code == 400 and "qq_proj" in r.json()["error"]["message"]
    r = _create(client, model="gpt-4o", training_file=training_file)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_available"
    r = _create(client, model="tiny-llama", training_file=training_file, suffix="Bad:Suffix")
    assert r.status_code == 400 and r.json()["error"]["param"] == "suffix"


@pytest.mark.both_databases
def test_evals_file_cannot_train_and_in_use_file_cannot_be_deleted(client, training_file):
    evals = upload(client, jsonl(chat_rows(3)), purpose="evals").json()["id"]
    r = _create(client, model="tiny-llama", training_file=evals)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file_purpose"
    job = _create(client, model="tiny-llama", training_file=training_file).json()
    assert client.delete(f"/v1/files/{training_file}").status_code == 409
    client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert client.delete(f"/v1/files/{training_file}").status_code == 200


@pytest.mark.both_databases
def test_active_job_quota(client, training_file, settings_env, monkeypatch):
    monkeypatch.setattr(settings_env, "max_active_jobs_per_tenant", 2)
    for _ in range(2):
        assert _create(client, model="tiny-llama", training_file=training_file).status_code == 200
    r = _create(client, model="tiny-llama", training_file=training_file)
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"


def test_loss_curve_picture_grows_with_the_metrics_events(client, training_file):
    from app.finetune.lifecycle import event
    from tests.charts.curves import curve_point_counts

    job_id = _create(client, model="tiny-llama", training_file=training_file).json()["id"]
    empty = client.get(f"/v1/fine_tuning/jobs/{job_id}/loss.svg")
    assert empty.status_code == 200 and empty.headers["content-type"] == "image/svg+xml"
    assert "No training steps logged yet." in empty.text

    for step, (train, valid) in enumerate([(2.0, 2.2), (1.2, 1.5), (0.6, 1.1)], start=1):
        data = {"step": step, "total_steps": 10, "train_loss": train, "valid_loss": valid}
        event(job_id, f"Step {step}", type="metrics", data=data)
    r = client.get(f"/v1/fine_tuning/jobs/{job_id}/loss.svg")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert "training loss" in r.text and "validation loss" in r.text
    assert "3 of 10 steps" in r.text
    assert curve_point_counts(r.text) == [3, 3]

    missing = client.get("/v1/fine_tuning/jobs/ftjob-nope/loss.svg")
    assert missing.status_code == 404 and missing.json()["error"]["code"]


@pytest.mark.both_databases
def test_a_job_on_top_of_an_adapter_checks_the_parent(client, training_file, settings_env):
    from tests.registry_util import register_random_adapter

    parent = register_random_adapter("default", "parent")
    r = _create(client, model=parent, training_file=training_file, suffix="child")
    assert r.status_code == 200, r.text
    assert r.json()["model"] == parent and r.json()["status"] == "queued"

    # Missing, another tenant's, or with a LoRA shape of its own: refused, nothing stored.
    before = len(client.get("/v1/fine_tuning/jobs").json()["data"])
    r = _create(client, model="ft:tiny-llama::ftjob-nope", training_file=training_file)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["param"] == "model"
    other = make_tenant_key(client, "other")
    theirs = client.post(
        "/v1/files",
        files={"file": ("t.jsonl", jsonl(chat_rows(12)))},
        data={"purpose": "fine-tune"},
        headers={"Authorization": f"Bearer {other}"},
    )
    r = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": parent, "training_file": theirs.json()["id"]},
        headers={"Authorization": f"Bearer {other}"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"
    for lora in ({"r": 16}, {"target_modules": ["q_proj"]}):
        r = _create(
            client,
            model=parent,
            training_file=training_file,
            method={"type": "supervised", "supervised": {"hyperparameters": lora}},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_hyperparameters"
        assert next(iter(lora)) in r.json()["error"]["message"]
    assert len(client.get("/v1/fine_tuning/jobs").json()["data"]) == before


def test_dpo_jobs_need_preference_files_and_sft_jobs_refuse_them(client, training_file):
    prefs = upload(client, jsonl(preference_rows(12)), name="prefs.jsonl").json()["id"]
    r = _create(client, model="tiny-llama", training_file=training_file, method={"type": "dpo"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file_format"
    assert r.json()["error"]["param"] == "training_file"
    r = _create(client, model="tiny-llama", training_file=prefs)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file_format"
    r = _create(
        client,
        model="tiny-llama",
        training_file=prefs,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}},
    )
    assert r.status_code == 400 and "beta" in r.json()["error"]["param"]
    r = _create(
        client,
        model="tiny-llama",
        training_file=prefs,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}},
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["method"]["type"] == "dpo"
    assert job["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    assert job["hyperparameters"]["n_epochs"] == 2


@pytest.mark.both_databases
def test_concurrent_creations_stay_within_the_quota(
    client, training_file, settings_env, monkeypatch
):
    """Twelve creations at once, limit 4: exactly four jobs, the others 429."""
    limit, attempts = 4, 12
    monkeypatch.setattr(settings_env, "max_active_jobs_per_tenant", limit)
    # Every request waits here (file checks, before the quota check) until all have arrived,
    # so they reach the quota check together rather than one after another.
    arrived = threading.Barrier(attempts)
    check_file = service._training_file

    def together(*args, **kwargs):
        arrived.wait()
        return check_file(*args, **kwargs)

    monkeypatch.setattr(service, "_training_file", together)
    statuses: list[int] = []

    def create() -> None:
        r = _create(client, model="tiny-llama", training_file=training_file)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=create) for _ in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * limit + [429] * (attempts - limit)
    jobs = client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert len([j for j in jobs if j["status"] == "queued"]) == limit


def _longest_example(file_id: str) -> int:
    """Tokens of the file's longest example, as counted at upload (a pair: its longer side)."""
    with get_sessionmaker()() as session:
        return session.get(File, file_id).stats["max_tokens"]


def test_an_example_too_large_for_one_forward_pass_is_refused(client, settings_env, monkeypatch):
    """An example (a DPO pair: both sides) over TRAIN_MICROBATCH_TOKENS cannot be split into
    micro-batches: 400 at creation, nothing stored."""
    rows = chat_rows(12)
    rows[3]["messages"][-1]["content"] = "The capital of France is Paris. " * 12  # the longest
    file = upload(client, jsonl(rows)).json()
    longest = _longest_example(file["id"])
    assert longest > 50
    monkeypatch.setattr(settings_env, "train_microbatch_tokens", longest - 1)
    r = _create(client, model="tiny-llama", training_file=file["id"])
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "example_too_large" and error["param"] == "training_file"
    assert f"{longest} tokens" in error["message"] and str(longest - 1) in error["message"]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []

    monkeypatch.setattr(settings_env, "train_microbatch_tokens", longest)  # fits exactly
    assert _create(client, model="tiny-llama", training_file=file["id"]).status_code == 200

    prefs = upload(client, jsonl(preference_rows(12)), name="prefs.jsonl").json()["id"]
    side = _longest_example(prefs)
    monkeypatch.setattr(settings_env, "train_microbatch_tokens", 2 * side - 1)  # one side fits
    r = _create(client, model="tiny-llama", training_file=prefs, method={"type": "dpo"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "example_too_large"
    assert "preference pair" in r.json()["error"]["message"]
    monkeypatch.setattr(settings_env, "train_microbatch_tokens", 2 * side)
    r = _create(client, model="tiny-llama", training_file=prefs, method={"type": "dpo"})
    assert r.status_code == 200, r.text
