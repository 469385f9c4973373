"""The README's template example on the real default model (SmolLM2-135M-Instruct)."""

import pytest
from fastapi.testclient import TestClient

from tests.e2e.test_default_model import default_client  # noqa: F401

SENTIMENT = {
    "name": "sentiment",
    "system_prompt": "Classify the sentiment of the review as positive or negative.",
    "instruction": "Review: {{ input }}",
    "examples": [
        {"input": "A wonderful, moving film.", "output": "positive"},
        {"input": "Two hours I will never get back.", "output": "negative"},
    ],
    "example_selection": {"rule": "all"},
    "params": {"temperature": 0, "max_tokens": 5},
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_few_shot_sentiment(default_client: TestClient) -> None:  # noqa: F811
    r = default_client.post("/v1/templates", json=SENTIMENT)
    assert r.status_code == 201, r.text
    answers = {}
    for review in ("Loved every minute.", "I hated it, a waste of time."):
        r = default_client.post(
            "/v1/chat/completions",
            json={"model": "tmpl:sentiment", "messages": [{"role": "user", "content": review}]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["examples_used"] == 2
        answers[review] = r.json()["choices"][0]["message"]["content"].strip().lower()
    # The examples teach the answer format; a 135M model is not a reliable judge of the
    # negative case, so only the clear positive one is checked for its label.
    assert all(a.split()[0] in ("positive", "negative") for a in answers.values()), answers
    assert answers["Loved every minute."].startswith("positive"), answers
