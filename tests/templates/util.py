"""Helpers shared by the template tests."""

from typing import Any

SENTIMENT: dict[str, Any] = {
    "name": "sentiment",
    "system_prompt": "Classify the sentiment.",
    "instruction": "Review: {{ input }}",
    "examples": [
        {"input": "great film", "output": "positive"},
        {"input": "terrible movie", "output": "negative"},
    ],
    "params": {"temperature": 0, "max_tokens": 8},
}


def create(client, **overrides: Any):
    body = {**SENTIMENT, **overrides}
    return client.post("/v1/templates", json=body)


def error_of(response) -> dict[str, Any]:
    body = response.json()
    assert "error" in body, body
    return body["error"]
