"""An evaluation over the base model, a template and an adapter trained in the test, run by a
real worker process; the report's numbers are checked against answers computed here."""

import time

import httpx
import pytest

from app.evals.metrics import label
from app.evals.stats import mcnemar_exact, wilson_interval
from tests.conftest import ADMIN_KEY
from tests.files.data import chat_rows, jsonl
from tests.workers.test_worker_jobs import MEMORISE

MAX_TOKENS = 8


def _wait(http: httpx.Client, path: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(path).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{path} stuck in {body['status']}")


def _upload(http: httpx.Client, purpose: str) -> str:
    r = http.post(
        "/v1/files",
        files={"file": ("words.jsonl", jsonl(chat_rows(12)))},
        data={"purpose": purpose},
    )
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def test_eval_report_matches_answers_computed_here(live_server: str, start_worker) -> None:
    start_worker()
    http = httpx.Client(
        base_url=live_server, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
    )
    base = "tiny-llama"
    job = http.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": base,
            "training_file": _upload(http, "fine-tune"),
            "suffix": "words",
            "seed": 3,
            "method": {"type": "supervised", "supervised": {"hyperparameters": MEMORISE}},
        },
    ).json()
    job = _wait(http, f"/v1/fine_tuning/jobs/{job['id']}")
    assert job["status"] == "succeeded", job
    adapter = job["fine_tuned_model"]
    r = http.post(
        "/v1/templates",
        json={
            "name": "words",
            "system_prompt": "Answer with one word.",
            "examples": [{"input": "Say the word for sky.", "output": "blue"}],
        },
    )
    assert r.status_code == 201, r.text
    variants = [base, "tmpl:words", adapter]

    eval_file = _upload(http, "evals")
    r = http.post(
        "/v1/evals",
        json={
            "file_id": eval_file,
            "variants": variants,
            "metric": "label",
            "generation": {"max_tokens": MAX_TOKENS, "temperature": 0},
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "queued"
    result = _wait(http, f"/v1/evals/{r.json()['id']}")
    assert result["status"] == "succeeded", result
    report = result["report"]
    events = http.get(f"/v1/evals/{result['id']}/events").json()["data"]
    assert any("Variant 3/3 done" in e["message"] for e in events)

    rows = chat_rows(12)
    assert [ex["input"] for ex in report["examples"]] == [r["messages"][0]["content"] for r in rows]
    correct: dict[str, list[bool]] = {}
    for v in variants:
        answers, prompt_tokens = [], []
        for row in rows:
            reply = http.post(
                "/v1/chat/completions",
                json={
                    "model": v,
                    "messages": row["messages"][:1],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0,
                    "seed": 0,
                },
            ).json()
            answers.append(reply["choices"][0]["message"]["content"])
            prompt_tokens.append(reply["usage"]["prompt_tokens"])
        assert [ex["answers"][v]["answer"] for ex in report["examples"]] == answers, v
        correct[v] = [
            label(a, row["messages"][1]["content"]) for a, row in zip(answers, rows, strict=True)
        ]
        summary = report["variants"][v]
        assert summary["n"] == 12 and summary["failures"] == 0
        assert summary["correct"] == sum(correct[v])
        assert summary["accuracy"] == pytest.approx(sum(correct[v]) / 12)
        assert summary["ci95"] == pytest.approx(list(wilson_interval(sum(correct[v]), 12)))
        assert summary["mean_prompt_tokens"] == pytest.approx(sum(prompt_tokens) / 12)
        assert summary["latency_ms_p95"] >= summary["latency_ms_p50"] > 0

    # The adapter learned the answers; the base model and the one-shot template did not.
    assert all(correct[adapter])
    assert sum(correct[base]) <= 1
    assert (
        report["variants"]["tmpl:words"]["mean_prompt_tokens"]
        > report["variants"][base]["mean_prompt_tokens"]
    )
    pair = next(p for p in report["pairwise"] if {p["a"], p["b"]} == {base, adapter})
    only_adapter = sum(a and not b for a, b in zip(correct[adapter], correct[base], strict=True))
    only_base = sum(b and not a for a, b in zip(correct[adapter], correct[base], strict=True))
    expected_p = mcnemar_exact(only_base, only_adapter)
    assert pair["p_value"] == pytest.approx(expected_p) and pair["significant"]
    assert report["recommendation"]["variant"] == adapter


def test_bad_eval_requests(client) -> None:
    r = client.post(
        "/v1/files", files={"file": ("e.jsonl", jsonl(chat_rows(3)))}, data={"purpose": "evals"}
    )
    file_id = r.json()["id"]
    base = client.app.state.engine.name
    cases = [
        ({"file_id": "file-missing", "variants": [base]}, 404, "file_id"),
        ({"file_id": file_id, "variants": []}, 400, "variants"),
        ({"file_id": file_id, "variants": ["nope"]}, 400, "variants.0"),
        ({"file_id": file_id, "variants": [base, base]}, 400, "variants"),
        ({"file_id": file_id, "variants": [base], "metric": "bleu"}, 400, "metric"),
        (
            {"file_id": file_id, "variants": [base], "generation": {"max_tokens": 0}},
            400,
            "generation.max_tokens",
        ),
        # Unknown keys would silently run with the defaults.
        (
            {"file_id": file_id, "variants": [base], "generation": {"max_token": 3}},
            400,
            "generation.max_token",
        ),
        ({"file_id": file_id, "variants": [base], "limits": 3}, 400, "limits"),
    ]
    for body, status, param in cases:
        r = client.post("/v1/evals", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.json())
    assert client.get("/v1/evals").json()["data"] == []
    assert client.get("/v1/evals/eval_missing").status_code == 404
