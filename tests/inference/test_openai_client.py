"""The official openai client against the app served by uvicorn on a local port."""

import openai
import pytest

from tests.conftest import ADMIN_KEY


@pytest.fixture
def oai(live_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)


def test_models_list(oai: openai.OpenAI, app) -> None:
    ids = [m.id for m in oai.models.list()]
    assert app.state.engine.name in ids


def test_chat_plain_and_stream_agree(oai: openai.OpenAI, app) -> None:
    name = app.state.engine.name
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    plain = oai.chat.completions.create(model=name, messages=messages, max_tokens=10, temperature=0)
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens >= 1
    stream = oai.chat.completions.create(
        model=name, messages=messages, max_tokens=10, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == plain.choices[0].message.content


def test_completions_create(oai: openai.OpenAI, app) -> None:
    out = oai.completions.create(
        model=app.state.engine.name, prompt="Hello", max_tokens=4, temperature=0
    )
    assert out.object == "text_completion"
    assert out.usage.prompt_tokens >= 1


def test_errors_surface_as_openai_exceptions(oai: openai.OpenAI, live_server: str) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        oai.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=f"{live_server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_chat_logprobs_plain_and_streamed(oai: openai.OpenAI, app) -> None:
    name = app.state.engine.name
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    kw = {"model": name, "messages": messages, "max_tokens": 6, "temperature": 0}
    plain = oai.chat.completions.create(**kw, logprobs=True, top_logprobs=2)
    content = plain.choices[0].logprobs.content
    assert len(content) == plain.usage.completion_tokens
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
        assert token.top_logprobs[0].token == token.token  # greedy: the most likely one
        assert bytes(token.bytes).decode() == token.token

    streamed = [
        t
        for chunk in oai.chat.completions.create(**kw, logprobs=True, top_logprobs=2, stream=True)
        if chunk.choices and chunk.choices[0].logprobs
        for t in chunk.choices[0].logprobs.content
    ]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]
    assert oai.chat.completions.create(**kw).choices[0].logprobs is None  # only when asked


def test_completion_logprobs_legacy_shape(oai: openai.OpenAI, app) -> None:
    out = oai.completions.create(
        model=app.state.engine.name,
        prompt="Hello",
        max_tokens=5,
        temperature=0,
        logprobs=2,
        echo=True,
    )
    lp = out.choices[0].logprobs
    n = out.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    assert lp.text_offset[0] == len("Hello")  # after the echoed prompt
    assert lp.text_offset == sorted(lp.text_offset)
    assert all(
        len(top) <= 2 and max(top.values()) >= lp_
        for top, lp_ in zip(lp.top_logprobs, lp.token_logprobs, strict=True)
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"top_logprobs": 2},
        {"logprobs": True, "top_logprobs": 21},
        {"logprobs": True, "top_logprobs": -1},
    ],
)
def test_bad_logprobs_requests_are_400(oai: openai.OpenAI, app, extra) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(
            model=app.state.engine.name,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            **extra,
        )
    assert err.value.status_code == 400
    assert err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model=app.state.engine.name, prompt="hi", max_tokens=2, logprobs=6)
