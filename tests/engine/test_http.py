"""Through the API: adapter variants stream, and a template's prefix reaches the engine."""

import json

from tests.registry_util import register_random_adapter


def chat(client, model: str, stream: bool):
    return client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 12,
            "stream": stream,
        },
    )


def streamed_text(response) -> str:
    text = ""
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def test_adapter_and_base_stream_the_same_text_as_whole_answers(client) -> None:
    adapter = register_random_adapter("default", "stream", seed=3)
    answers = {}
    for model in (client.app.state.engine.name, adapter):
        whole = chat(client, model, stream=False)
        assert whole.status_code == 200, whole.text
        streamed = chat(client, model, stream=True)
        assert streamed.status_code == 200
        assert streamed.headers["x-adaptd-variant"] == model
        assert streamed.text.rstrip().endswith("data: [DONE]")
        content = whole.json()["choices"][0]["message"]["content"]
        assert streamed_text(streamed) == content
        answers[model] = content
    assert len(set(answers.values())) == 2  # the adapter really changed the answer


def test_template_requests_reuse_the_cached_prefix(client) -> None:
    from tests.templates.util import create

    assert create(client).status_code == 201
    engine = client.app.state.engine
    hits, misses = engine.prefixes.hits, engine.prefixes.misses
    texts = []
    for review in ("what a great film", "a terrible movie", "a great review"):
        r = client.post(
            "/v1/chat/completions",
            json={
                "model": "tmpl:sentiment",
                "messages": [{"role": "user", "content": review}],
                "max_tokens": 4,
            },
        )
        assert r.status_code == 200, r.text
        texts.append(r.json()["choices"][0]["message"]["content"])
    # The first request computed the template's prefix (or found it from an earlier test on
    # this shared engine); the other two reused it.
    assert engine.prefixes.misses - misses <= 1
    assert engine.prefixes.hits - hits >= 2
