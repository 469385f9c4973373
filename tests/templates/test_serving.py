"""Serving `tmpl:` variants: the prompt a template renders is exactly what the model sees."""

import json

import openai
import pytest

from tests.conftest import ADMIN_KEY
from tests.registry_util import register_random_adapter
from tests.templates.util import create, error_of

MESSAGES = [{"role": "user", "content": "what a great film"}]


@pytest.fixture
def oai(live_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)


def base_completion(client, prompt: str, max_tokens: int = 8) -> str:
    r = client.post(
        "/v1/completions",
        json={
            "model": client.app.state.engine.name,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "seed": 7,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_chat_through_openai_client_matches_base_model_on_rendered_prompt(
    client, oai: openai.OpenAI
) -> None:
    assert create(client).status_code == 201
    rendered = client.post("/v1/templates/sentiment/render", json={"messages": MESSAGES}).json()
    assert rendered["examples_used"] == 2
    prompt = rendered["prompt"]
    # Examples are user/assistant turns through the chat template, then the request's turn.
    assert prompt == (
        "<|im_start|>system\nClassify the sentiment.<|im_end|>\n"
        "<|im_start|>user\nReview: great film<|im_end|>\n"
        "<|im_start|>assistant\npositive<|im_end|>\n"
        "<|im_start|>user\nReview: terrible movie<|im_end|>\n"
        "<|im_start|>assistant\nnegative<|im_end|>\n"
        "<|im_start|>user\nReview: what a great film<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    reply = oai.chat.completions.create(
        model="tmpl:sentiment", messages=MESSAGES, temperature=0, seed=7, max_tokens=8
    )
    assert reply.model == "tmpl:sentiment"
    assert reply.usage.prompt_tokens == rendered["prompt_tokens"]
    assert reply.model_extra["examples_used"] == 2
    direct = base_completion(client, prompt)
    assert direct  # the tiny model says something, so the comparison means something
    assert reply.choices[0].message.content == direct

    # Streaming gives the same text.
    stream = oai.chat.completions.create(
        model="tmpl:sentiment", messages=MESSAGES, temperature=0, seed=7, max_tokens=8, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == direct


def test_template_defaults_apply_and_request_overrides(client) -> None:
    assert create(client, params={"temperature": 0, "max_tokens": 3}).status_code == 201
    r = client.post("/v1/chat/completions", json={"model": "tmpl:sentiment", "messages": MESSAGES})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 3
    assert r.headers["x-adaptd-variant"] == "tmpl:sentiment"
    r = client.post(
        "/v1/chat/completions",
        json={"model": "tmpl:sentiment", "messages": MESSAGES, "max_tokens": 1},
    )
    assert r.json()["usage"]["completion_tokens"] <= 1


def test_completions_endpoint_uses_the_text_block(client, oai: openai.OpenAI) -> None:
    assert create(client).status_code == 201
    rendered = client.post(
        "/v1/templates/sentiment/render", json={"prompt": "what a great film"}
    ).json()
    assert rendered["mode"] == "completion"
    assert rendered["prompt"] == (
        "Classify the sentiment.\n\n"
        "Review: great film\npositive\n\n"
        "Review: terrible movie\nnegative\n\n"
        "Review: what a great film\n"
    )
    out = oai.completions.create(
        model="tmpl:sentiment", prompt="what a great film", temperature=0, seed=7, max_tokens=8
    )
    assert out.choices[0].text == base_completion(client, rendered["prompt"])
    assert out.model_extra["examples_used"] == 2


def test_old_version_keeps_serving(client) -> None:
    assert create(client).status_code == 201
    client.put("/v1/templates/sentiment/tags/stable", json={"version": 1})
    r = client.post(
        "/v1/templates/sentiment/versions",
        json={"examples": [{"input": "dull", "output": "negative"}]},
    )
    assert r.status_code == 201

    def chat(model: str) -> dict:
        r = client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": 4},
        )
        assert r.status_code == 200, r.text
        return r.json()

    assert chat("tmpl:sentiment@1")["examples_used"] == 2
    assert chat("tmpl:sentiment@stable")["examples_used"] == 2
    assert chat("tmpl:sentiment")["examples_used"] == 1
    assert chat("tmpl:sentiment@2")["model"] == "tmpl:sentiment@2"
    r = client.post(
        "/v1/chat/completions", json={"model": "tmpl:sentiment@3", "messages": MESSAGES}
    )
    assert r.status_code == 404 and error_of(r)["code"] == "model_not_found"


def test_variables_fill_the_instruction_and_missing_one_is_400(client) -> None:
    r = create(
        client,
        name="translate",
        instruction="Translate to {{ language }}: {{ input }}",
        examples=[{"input": "hello", "output": "bonjour", "language": "French"}],
        variables=["language"],
    )
    assert r.status_code == 201, r.text
    ok = client.post(
        "/v1/chat/completions",
        json={
            "model": "tmpl:translate",
            "messages": [{"role": "user", "content": "thank you"}],
            "variables": {"language": "Italian"},
            "max_tokens": 2,
        },
    )
    assert ok.status_code == 200, ok.text
    rendered = client.post(
        "/v1/templates/translate/render",
        json={"input": "thank you", "variables": {"language": "Italian"}},
    ).json()
    assert "Translate to French: hello" in rendered["prompt"]
    assert "Translate to Italian: thank you" in rendered["prompt"]

    missing = client.post(
        "/v1/chat/completions",
        json={"model": "tmpl:translate", "messages": [{"role": "user", "content": "x"}]},
    )
    assert missing.status_code == 400
    err = error_of(missing)
    assert err["code"] == "missing_template_variable"
    assert err["param"] == "variables.language"
    assert "'language'" in err["message"]
    r = client.post("/v1/completions", json={"model": "tmpl:translate", "prompt": "x"})
    assert r.status_code == 400 and error_of(r)["param"] == "variables.language"


def test_variable_default_is_used_when_not_sent(client) -> None:
    r = create(
        client,
        name="tone",
        instruction="Answer in a {{ tone }} tone: {{ input }}",
        examples=[],
        variables={"tone": "formal"},
    )
    assert r.status_code == 201, r.text
    out = client.post("/v1/templates/tone/render", json={"input": "hi"}).json()
    assert "Answer in a formal tone: hi" in out["prompt"]
    out = client.post(
        "/v1/templates/tone/render", json={"input": "hi", "variables": {"tone": "casual"}}
    ).json()
    assert "Answer in a casual tone: hi" in out["prompt"]


def test_conversation_history_and_system_messages_are_kept(client) -> None:
    assert create(client).status_code == 201
    messages = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    out = client.post("/v1/templates/sentiment/render", json={"messages": messages}).json()
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"] + [
        "user",
        "assistant",
        "user",
    ]
    assert out["messages"][0]["content"] == "Classify the sentiment.\n\nAnswer in one word."
    assert out["messages"][-3]["content"] == "first"  # history stays as sent
    assert out["messages"][-1]["content"] == "Review: second"  # only the last user turn
    r = client.post(
        "/v1/chat/completions",
        json={"model": "tmpl:sentiment", "messages": [{"role": "system", "content": "x"}]},
    )
    assert r.status_code == 400 and error_of(r)["param"] == "messages"


def test_examples_are_trimmed_to_fit_the_context_window(client) -> None:
    window = client.app.state.engine.context_window  # 256 for the tiny model
    examples = [{"input": f"review number {i} was fine", "output": "neutral"} for i in range(40)]
    r = create(client, name="many", examples=examples, params={})
    assert r.status_code == 201, r.text

    def render(max_tokens: int) -> dict:
        r = client.post("/v1/templates/many/render", json={"input": "ok", "max_tokens": max_tokens})
        assert r.status_code == 200, r.text
        return r.json()

    small, large = render(16), render(128)
    assert 0 < large["examples_used"] < small["examples_used"] < len(examples)
    # Examples are near-identical in length: about this many tokens each.
    per_example = (small["prompt_tokens"] - large["prompt_tokens"]) / (
        small["examples_used"] - large["examples_used"]
    )
    for out, budget in ((small, 16), (large, 128)):
        assert out["prompt_tokens"] + budget <= window
        # The kept examples are the first ones; dropped ones are the last.
        assert out["examples"] == list(range(out["examples_used"]))
        # One more example would not have fit: the trim is as small as it can be.
        assert window - (out["prompt_tokens"] + budget) < 1.5 * per_example
    served = client.post(
        "/v1/chat/completions",
        json={
            "model": "tmpl:many",
            "messages": [{"role": "user", "content": "ok"}],
            "max_tokens": 16,
            "temperature": 0,
        },
    )
    assert served.status_code == 200, served.text
    assert served.json()["examples_used"] == small["examples_used"]
    assert served.json()["usage"]["prompt_tokens"] == small["prompt_tokens"]
    # Too little room even with no examples: the usual context error.
    r = client.post("/v1/templates/many/render", json={"input": "ok", "max_tokens": window})
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"


def test_first_k_and_prefix_len(client) -> None:
    from app.inference.prompting import prepare_chat
    from app.protocol.chat import ChatCompletionRequest
    from app.routing.resolve import Variant
    from app.templates.service import resolve_reference

    examples = [{"input": f"item {i}", "output": str(i)} for i in range(5)]
    r = create(
        client, name="firstk", examples=examples, example_selection={"rule": "first_k", "k": 2}
    )
    assert r.status_code == 201, r.text
    out = client.post("/v1/templates/firstk/render", json={"input": "abc"}).json()
    assert out["examples"] == [0, 1]
    other = client.post("/v1/templates/firstk/render", json={"input": "zzz qqq"}).json()
    n = out["prefix_tokens"]
    assert n > 0 and n == other["prefix_tokens"]
    engine = client.app.state.engine
    ids_a = engine.tokenizer(out["prompt"], add_special_tokens=False)["input_ids"]
    ids_b = engine.tokenizer(other["prompt"], add_special_tokens=False)["input_ids"]
    static = out["prompt"][: out["prompt"].rindex("<|im_start|>user\n")]
    assert n == len(engine.tokenizer(static, add_special_tokens=False)["input_ids"])
    assert ids_a[:n] == ids_b[:n]
    # The served path reports the same prefix and the template's defaults.
    from app.db import get_sessionmaker

    with get_sessionmaker()() as session:
        tmpl = resolve_reference(session, "default", "firstk")
    req = ChatCompletionRequest(model="tmpl:firstk", messages=[{"role": "user", "content": "abc"}])
    prepared = prepare_chat(
        engine, Variant(model="tmpl:firstk", kind="template", template=tmpl), req
    )
    assert prepared.prefix_len == n
    assert prepared.examples_used == 2
    assert prepared.defaults == {"temperature": 0, "max_tokens": 8}
    assert prepared.token_ids == ids_a


def test_template_on_an_adapter_runs_the_adapter(client) -> None:
    ft = register_random_adapter("default", "tmplft")
    assert create(client, model=ft).status_code == 201
    body = {"messages": MESSAGES, "temperature": 0, "max_tokens": 6, "seed": 1}
    on_ft = client.post("/v1/chat/completions", json={"model": "tmpl:sentiment", **body})
    assert on_ft.status_code == 200, on_ft.text
    prompt = client.post("/v1/templates/sentiment/render", json={"messages": MESSAGES}).json()
    direct = client.post(
        "/v1/completions",
        json={
            "model": ft,
            "prompt": prompt["prompt"],
            "temperature": 0,
            "max_tokens": 6,
            "seed": 1,
        },
    )
    assert on_ft.json()["choices"][0]["message"]["content"] == direct.json()["choices"][0]["text"]
    assert json.dumps(on_ft.json()["usage"]) == json.dumps(direct.json()["usage"])


def test_static_prefix_is_served_from_the_engine_prefix_cache(client) -> None:
    engine = client.app.state.engine
    assert create(client, name="cached").status_code == 201
    rendered = client.post("/v1/templates/cached/render", json={"messages": MESSAGES}).json()
    assert rendered["prefix_tokens"] > 0
    body = {"model": "tmpl:cached", "messages": MESSAGES, "temperature": 0, "max_tokens": 8}
    hits = engine.prefixes.hits
    first = client.post("/v1/chat/completions", json=body).json()
    again = client.post(
        "/v1/chat/completions",
        json={**body, "messages": [{"role": "user", "content": "a dull film"}]},
    ).json()
    repeat = client.post("/v1/chat/completions", json=body).json()
    assert engine.prefixes.hits >= hits + 2  # the later requests reuse the first one's prefix
    # Reusing cached keys/values changes nothing in what the model says.
    assert repeat["choices"] == first["choices"]
    assert first["choices"][0]["message"]["content"] == base_completion(client, rendered["prompt"])
    assert again["examples_used"] == 2
