"""Secrets at rest and in logs: keys only as hashes, no key, prompt or training text in logs
at INFO."""

import logging

from sqlalchemy import text

from app.db import get_engine
from tests.conftest import make_tenant_key
from tests.files.data import jsonl


def test_no_key_prompt_or_training_text_in_logs(client, caplog) -> None:
    caplog.set_level(logging.INFO)
    key = make_tenant_key(client, "quiet")
    hdr = {"Authorization": f"Bearer {key}"}
    prompt = "ZEBRA-PROMPT-7731 please answer"
    training = "OKAPI-TRAINING-5521"
    base = client.app.state.engine.name
    client.post(
        "/v1/chat/completions",
        headers=hdr,
        json={"model": base, "max_tokens": 3, "messages": [{"role": "user", "content": prompt}]},
    )
    client.post(
        "/v1/completions", headers=hdr, json={"model": base, "max_tokens": 3, "prompt": prompt}
    )
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{training} {i}"},
                {"role": "assistant", "content": "x"},
            ]
        }
        for i in range(12)
    ]
    assert client.post(
        "/v1/files",
        headers=hdr,
        files={"file": ("t.jsonl", jsonl(rows))},
        data={"purpose": "fine-tune"},
    ).status_code in (200, 201)
    client.post("/v1/templates", headers=hdr, json={"name": "t", "system_prompt": training})
    client.get("/v1/models", headers={"Authorization": "Bearer sk-wrong-LEAK-9999"})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (key, "ZEBRA-PROMPT", "OKAPI-TRAINING", "LEAK-9999"):
        assert secret not in logged, secret


def test_keys_are_stored_only_as_hashes(client) -> None:
    key = make_tenant_key(client, "hashed")
    with get_engine().connect() as conn:
        dump = " ".join(str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row)
    assert key not in dump and key[14:] not in dump  # at most the display prefix is kept
