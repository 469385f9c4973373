"""similar_k with the real all-MiniLM-L6-v2 encoder, on a case whose answer is known."""

import numpy as np
import pytest

from app import embeddings
from tests.templates.util import create

EXAMPLES = [
    {"input": "The stock market fell sharply after the interest rate rise.", "output": "finance"},
    {"input": "My dog loves chasing the ball in the park.", "output": "dog"},
    {"input": "Quarterly earnings beat analyst expectations.", "output": "finance"},
    {"input": "The cat curled up and purred on my lap.", "output": "cat"},
    {"input": "The puppy barked at the mailman all morning.", "output": "dog"},
]


def test_encoder_gives_unit_vectors_and_sensible_similarity() -> None:
    vectors = embeddings.embed(["a kitten is a young cat", "a small cat", "bond yields rose"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    blob = embeddings.to_bytes(vectors)
    assert np.array_equal(embeddings.from_bytes(blob, 3), vectors)


@pytest.mark.both_databases
def test_similar_k_picks_the_closest_examples(client, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.db import get_sessionmaker
    from app.templates.models import TemplateVersion

    r = create(
        client,
        name="topics",
        system_prompt="Name the topic.",
        instruction="Text: {{ input }}",
        examples=EXAMPLES,
        example_selection={"rule": "similar_k", "k": 2},
    )
    assert r.status_code == 201, r.text
    # Embeddings were computed once, on save, one row per example.
    with get_sessionmaker()() as session:
        row = session.query(TemplateVersion).one()
        assert row.embeddings is not None and len(row.embeddings) == len(EXAMPLES) * 384 * 4

    embedded: list[str] = []
    real_embed = embeddings.embed

    def counting_embed(texts: list[str]) -> np.ndarray:
        embedded.extend(texts)
        return real_embed(texts)

    monkeypatch.setattr(embeddings, "embed", counting_embed)

    out = client.post(
        "/v1/templates/topics/render", json={"input": "How do I look after a new kitten?"}
    ).json()
    assert out["examples"][0] == 3  # the cat example, most similar first
    assert out["examples_used"] == 2
    assert out["prompt"].index("purred") < out["prompt"].index("Text: How do I look after")
    assert embedded == ["How do I look after a new kitten?"]  # only the query, per request
    assert out["prefix_tokens"] > 0  # the system prompt; the examples vary per request

    out = client.post(
        "/v1/templates/topics/render", json={"input": "Bank profits and share prices"}
    ).json()
    assert sorted(out["examples"]) == [0, 2]  # both finance examples

    out = client.post(
        "/v1/templates/topics/render", json={"input": "my puppy and my dog play fetch"}
    ).json()
    assert sorted(out["examples"]) == [1, 4]

    served = client.post(
        "/v1/chat/completions",
        json={
            "model": "tmpl:topics",
            "messages": [{"role": "user", "content": "a kitten chasing yarn"}],
            "max_tokens": 2,
            "temperature": 0,
        },
    )
    assert served.status_code == 200, served.text
    assert served.json()["examples_used"] == 2


def test_switching_rule_on_a_new_version_computes_embeddings(client) -> None:
    r = create(client, name="topics", examples=EXAMPLES)
    assert r.status_code == 201
    out = client.post("/v1/templates/topics/render", json={"input": "kitten"}).json()
    # Rule all keeps the given order (the tiny model's 256-token window may trim the tail).
    assert out["examples_used"] >= 2
    assert out["examples"] == list(range(out["examples_used"]))
    r = client.post(
        "/v1/templates/topics/versions",
        json={"example_selection": {"rule": "similar_k", "k": 1}},
    )
    assert r.status_code == 201, r.text
    out = client.post("/v1/templates/topics/render", json={"input": "kitten"}).json()
    assert out["examples"] == [3]
    out = client.post("/v1/templates/topics@1/render", json={"input": "kitten"}).json()
    assert out["examples"][:2] == [0, 1]
