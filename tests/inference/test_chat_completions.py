"""Chat completions on the base model, through the HTTP API."""

import json

from app.engine.prompts import encode, render_chat


def base_name(client) -> str:
    return client.app.state.engine.name


def chat(client, **body):
    body.setdefault("model", base_name(client))
    body.setdefault("messages", [{"role": "user", "content": "What is the capital of France?"}])
    return client.post("/v1/chat/completions", json=body)


def test_chat_completion_shape_and_usage(client) -> None:
    r = chat(client, max_tokens=8, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == base_name(client)
    assert r.headers["x-adaptd-variant"] == base_name(client)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    engine = client.app.state.engine
    prompt = render_chat(
        engine.tokenizer, [{"role": "user", "content": "What is the capital of France?"}]
    )
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(encode(engine.tokenizer, prompt))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 8


def test_max_tokens_gives_length(client) -> None:
    # Random weights rarely pick the end token within 5 steps; if they do, finish is "stop".
    r = chat(client, max_tokens=5, temperature=0)
    body = r.json()
    if body["choices"][0]["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 5
    else:
        assert body["usage"]["completion_tokens"] < 5


def test_greedy_is_deterministic_and_seeded_sampling_repeats(client) -> None:
    a = chat(client, max_tokens=12, temperature=0).json()["choices"][0]["message"]["content"]
    b = chat(client, max_tokens=12, temperature=0).json()["choices"][0]["message"]["content"]
    assert a == b
    s1 = chat(client, max_tokens=12, temperature=1.0, seed=7).json()["choices"][0]["message"][
        "content"
    ]
    s2 = chat(client, max_tokens=12, temperature=1.0, seed=7).json()["choices"][0]["message"][
        "content"
    ]
    assert s1 == s2


def test_n_choices(client) -> None:
    r = chat(client, max_tokens=6, temperature=1.0, seed=1, n=3)
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert 3 <= body["usage"]["completion_tokens"] <= 18  # each choice has 1..6 tokens
    texts = {c["message"]["content"] for c in body["choices"]}
    assert len(texts) >= 2  # different seeds per choice


def test_stop_sequence_truncates(client) -> None:
    full = chat(client, max_tokens=20, temperature=0).json()["choices"][0]["message"]["content"]
    assert len(full) >= 4
    stop = full[2:4]
    r = chat(client, max_tokens=20, temperature=0, stop=[stop]).json()
    text = r["choices"][0]["message"]["content"]
    assert stop not in text
    assert full.startswith(text)
    assert r["choices"][0]["finish_reason"] == "stop"


def test_stream_sends_role_deltas_finish_and_done(client) -> None:
    full = chat(client, max_tokens=10, temperature=0).json()["choices"][0]["message"]["content"]
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": base_name(client),
            "max_tokens": 10,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        },
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == full
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


def test_unknown_model_is_404_model_not_found(client) -> None:
    r = chat(client, model="no-such-model")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert set(err) >= {"message", "type", "param", "code"}


def test_context_length_exceeded(client) -> None:
    ctx = client.app.state.engine.context_window
    r = chat(client, max_tokens=ctx)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    long = "hello " * (ctx * 2)
    r = chat(client, messages=[{"role": "user", "content": long}])
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_malformed_bodies_name_the_field(client) -> None:
    cases = [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": base_name(client)}, "messages"),
        ({"model": base_name(client), "messages": []}, "messages"),
        (
            {"model": base_name(client), "messages": [{"role": "wizard", "content": "x"}]},
            "messages",
        ),
        (
            {
                "model": base_name(client),
                "messages": [{"role": "user", "content": "x"}],
                "temperature": 5,
            },
            "temperature",
        ),
        (
            {
                "model": base_name(client),
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 0,
            },
            "max_tokens",
        ),
        (
            {"model": base_name(client), "messages": [{"role": "user", "content": "x"}], "n": 100},
            "n",
        ),
        (
            {
                "model": base_name(client),
                "messages": [{"role": "user", "content": "x"}],
                "stop": ["a"] * 5,
            },
            "stop",
        ),
    ]
    for body, field in cases:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert field in (err["param"] or "") or field in err["message"], (body, err)
    r = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "error" in r.json()


def test_max_tokens_above_cap(client) -> None:
    r = chat(client, max_tokens=10**6)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "max_tokens"


def test_fields_the_server_cannot_honour_are_refused_not_ignored(client) -> None:
    refused = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "required",
        "functions": [{"name": "f"}],
    }
    for name, value in refused.items():
        r = chat(client, max_tokens=2, **{name: value})
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"] | {"message": ""} == {
            "message": "",
            "type": "invalid_request_error",
            "param": name,
            "code": "unsupported_parameter",
        }
    # What clients send by default (empty, zero, "auto", plain text) is fine.
    defaults = {
        "tools": [],
        "tool_choice": "auto",
        "response_format": {"type": "text"},
        "functions": [],
        "parallel_tool_calls": True,
    }
    assert chat(client, max_tokens=2, **defaults).status_code == 200
    r = client.post(
        "/v1/completions",
        json={"model": base_name(client), "prompt": "hi", "max_tokens": 2, "suffix": "end"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "suffix"


def test_bad_penalties_and_biases_are_400(client) -> None:
    vocab = client.app.state.engine.model.config.vocab_size
    cases = [
        ({"presence_penalty": 2.5}, "presence_penalty", "invalid_request"),
        ({"frequency_penalty": -3}, "frequency_penalty", "invalid_request"),
        ({"logit_bias": {"abc": 1}}, "logit_bias", "invalid_request"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "invalid_request"),
        ({"logit_bias": {str(vocab): 5}}, "logit_bias", "invalid_logit_bias"),
    ]
    for body, param, code in cases:
        r = chat(client, max_tokens=2, **body)
        assert r.status_code == 400, (body, r.text)
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == (param, code), body
