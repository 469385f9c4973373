from app.engine.prompts import encode


def test_completion_plain_prompt(client) -> None:
    name = client.app.state.engine.name
    r = client.post(
        "/v1/completions",
        json={
            "model": name,
            "prompt": "The capital of France is",
            "max_tokens": 6,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["usage"]["prompt_tokens"] == len(
        encode(client.app.state.engine.tokenizer, "The capital of France is")
    )
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_completion_list_of_prompts_and_echo(client) -> None:
    name = client.app.state.engine.name
    r = client.post(
        "/v1/completions",
        json={
            "model": name,
            "prompt": ["a b", "c d"],
            "max_tokens": 3,
            "temperature": 0,
            "echo": True,
        },
    )
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["text"].startswith("a b")
    assert body["choices"][1]["text"].startswith("c d")


def test_completion_errors(client) -> None:
    name = client.app.state.engine.name
    assert client.post("/v1/completions", json={"model": name}).json()["error"]["param"] == "prompt"
    r = client.post("/v1/completions", json={"model": name, "prompt": []})
    assert r.status_code == 400
    r = client.post("/v1/completions", json={"model": "ft:nope:x:y", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
