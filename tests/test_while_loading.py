"""While the model still loads (app.state.engine is None until the loader thread sets it),
the routes that need only the base model's name answer; those that run the model say 503."""

from tests.files.data import chat_rows, jsonl, upload


def test_aliases_and_evaluations_are_created_while_the_model_loads(client) -> None:
    base = client.app.state.engine.name
    r = upload(client, jsonl(chat_rows(4)), name="eval.jsonl", purpose="evals")
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    engine, client.app.state.engine = client.app.state.engine, None  # as before it has loaded
    try:
        chat = {"model": base, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        r = client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"

        r = client.post("/v1/aliases", json={"name": "prod", "targets": [{"model": base}]})
        assert r.status_code == 201, r.text
        r = client.put("/v1/aliases/prod", json={"targets": [{"model": base}]})
        assert r.status_code == 200, r.text
        r = client.post("/v1/evals", json={"file_id": file_id, "variants": [base, "prod"]})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "queued"
        # Targets are checked as before: an unknown model is refused.
        r = client.post("/v1/aliases", json={"name": "x", "targets": [{"model": "nope"}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "targets.0.model"
    finally:
        client.app.state.engine = engine
