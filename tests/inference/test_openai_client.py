"""The official openai client against the app served by uvicorn on a local port."""

import openai
import pytest

from tests.conftest import ADMIN_KEY


@pytest.fixture
def oai(live_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)


def test_models_list(oai: openai.OpenAI, app) -> None:  # noqa: ANN001
    ids = [m.id for m in oai.models.list()]
    assert app.state.engine.name in ids


def test_chat_plain_and_stream_agree(oai: openai.OpenAI, app) -> None:  # noqa: ANN001
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


def test_completions_create(oai: openai.OpenAI, app) -> None:  # noqa: ANN001
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
