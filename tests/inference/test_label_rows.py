"""Label scores (`choice` with logprobs) are the request's own work: every row a request
submits, label rows included, is cancelled when the request ends, however it ends; label
rows count in its size and usage, are bounded, and go into the engine a few at a time, so
one request's long label list neither fills the queue nor keeps other requests waiting
behind all of it.

Most of these run `create_completion` / `create_chat_completion` on an engine whose
scheduler is not started (nothing drains its queue), so what a request left queued can be
read off the queue itself."""

import asyncio
import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.engine.engine import Engine, EngineConfig
from app.engine.errors import EngineOverloaded
from app.engine.loader import load_base_model
from app.engine.prompts import encode
from app.engine.scheduler import Scheduler
from app.inference.prompting import prepare_chat, prepare_completion
from app.inference.serving_chat import create_chat_completion
from app.inference.serving_completion import create_completion
from app.protocol.chat import ChatCompletionRequest
from app.protocol.completions import CompletionRequest
from app.routing.resolve import Variant

LABELS = ["positive", "negative", "neutral"]
PROMPT = "Review: what a great film\nVerdict:"


@pytest.fixture
def idle_engine(
    settings_env, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator:
    """`make(max_queue=...)`: an engine whose scheduler has not started."""
    engines: list[Engine] = []

    def make(**config) -> Engine:
        loaded = load_base_model(str(tiny_model_dir), tmp_path_factory.mktemp("cache"), "cpu")
        engine = Engine(loaded, EngineConfig(**config))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


def completion(engine: Engine, labels: list[str] | None, **body) -> tuple:
    req = CompletionRequest(model=engine.name, **body)
    if labels is not None:
        req.structured_outputs = {"choice": labels}
    variant = Variant(model=engine.name, kind="base")
    prompts = [prepare_completion(engine, variant, p, req) for p in req.prompts()]
    return create_completion(engine, variant, req, prompts)


def queued_rows(engine: Engine) -> list:
    return [row for row in list(engine._queue.queue) if row is not None]


def live(rows: list) -> list:
    return [row for row in rows if not row.handle.cancelled.is_set()]


def test_rows_of_a_request_refused_part_way_are_all_cancelled(idle_engine, monkeypatch) -> None:
    """The queue fills while the request's label rows go in: the 503 leaves no live row of
    it behind, neither its answers nor the label rows of its earlier prompts."""
    from app.settings import get_settings

    monkeypatch.setattr(get_settings(), "label_rows_in_flight", 8)
    # 2 answers, then 4 label rows per prompt: the 9th row does not fit.
    engine = idle_engine(max_queue=8)

    async def scenario() -> None:
        with pytest.raises(EngineOverloaded):
            await completion(
                engine, ["a", "b", "c", "d"], prompt=[PROMPT, "b"], max_tokens=1, logprobs=0
            )

    asyncio.run(scenario())
    rows = queued_rows(engine)
    assert len(rows) == 8  # it did fill the queue
    assert live(rows) == []


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_rows_of_a_request_cancelled_while_labels_are_scored_are_all_cancelled(
    idle_engine, endpoint: str
) -> None:
    """What a client that disconnects does (cancel_on_disconnect cancels the task)."""
    engine = idle_engine(max_queue=64)

    async def scenario() -> int:
        if endpoint == "completions":
            work = completion(
                engine, LABELS, prompt=[PROMPT, "b", "c"], max_tokens=4, logprobs=0, n=2
            )
        else:
            req = ChatCompletionRequest(
                model=engine.name,
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=4,
                logprobs=True,
                n=2,
                structured_outputs={"choice": LABELS},
            )
            variant = Variant(model=engine.name, kind="base")
            work = create_chat_completion(engine, variant, req, prepare_chat(engine, variant, req))
        task = asyncio.ensure_future(work)
        for _ in range(5):
            await asyncio.sleep(0)  # it runs until it waits on the engine
        submitted = len(queued_rows(engine))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return submitted

    submitted = asyncio.run(scenario())
    assert submitted > 2  # answers and label rows were queued
    assert live(queued_rows(engine)) == []


def test_rows_of_a_stream_dropped_before_it_was_read_are_cancelled(idle_engine) -> None:
    """A client gone before the first byte: Starlette never iterates the stream, so the
    generator's own `finally` never runs."""
    engine = idle_engine(max_queue=64)

    async def scenario() -> None:
        stream = await completion(
            engine, None, prompt=[PROMPT, "b"], max_tokens=4, n=2, stream=True
        )
        assert len(live(queued_rows(engine))) == 4
        del stream
        gc.collect()

    asyncio.run(scenario())
    assert live(queued_rows(engine)) == []


def label_tokens(engine: Engine, labels: list[str]) -> int:
    return sum(len(engine.tokenizer.encode(x, add_special_tokens=False)) for x in labels)


def test_usage_counts_the_label_rows(client) -> None:
    engine = client.app.state.engine
    body = {
        "model": engine.name,
        "prompt": [PROMPT, "great film"],
        "max_tokens": 3,
        "logprobs": 0,
        "n": 2,
        "structured_outputs": {"choice": LABELS},
    }
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    prompts = [len(encode(engine.tokenizer, p)) for p in body["prompt"]]
    answers = sum(len(c["logprobs"]["tokens"]) for c in r.json()["choices"])
    # Answers: every prompt n times. Label rows: every prompt once per label.
    assert usage["prompt_tokens"] == sum(prompts) * 2 + sum(prompts) * len(LABELS)
    assert usage["completion_tokens"] == answers + 2 * label_tokens(engine, LABELS)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    chat = {
        "model": engine.name,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 3,
        "temperature": 0,  # the streamed and the whole answer are the same answer
        "logprobs": True,
        "structured_outputs": {"choice": LABELS},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=chat) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: {")]
    last = json.loads(lines[-1][6:])
    plain = client.post("/v1/chat/completions", json={**chat, "stream": False}).json()
    prompt = plain["usage"]["prompt_tokens"] // (1 + len(LABELS))
    assert plain["usage"]["prompt_tokens"] == prompt * (1 + len(LABELS))
    assert last["usage"] == plain["usage"]
    answer = len(plain["choices"][0]["logprobs"]["content"])
    assert plain["usage"]["completion_tokens"] == answer + label_tokens(engine, LABELS)


def test_label_work_over_the_bounds_is_refused_before_anything_is_queued(
    client, monkeypatch
) -> None:
    engine = client.app.state.engine
    forwards = engine.stats.forwards
    # The hostile probe's shape: 16 prompts x 100 labels, max_tokens 1.
    labels = [f"label {i}" for i in range(100)]
    body = {
        "model": engine.name,
        "prompt": [f"{PROMPT} {i}" for i in range(16)],
        "max_tokens": 1,
        "logprobs": 0,
        "structured_outputs": {"choice": labels},
    }
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"]) == ("too_many_label_tokens", "structured_outputs.choice")
    assert str(16 * label_tokens(engine, labels)) in error["message"]
    assert "1024" in error["message"]
    # Without logprobs the labels only constrain the answers: no label rows, served.
    plain = {k: v for k, v in body.items() if k != "logprobs"}
    assert (
        client.post("/v1/completions", json={**plain, "prompt": body["prompt"][:2]}).status_code
        == 200
    )

    # Label rows count toward MAX_REQUEST_TOKENS: the answers alone fit, with labels not.
    from app.settings import get_settings

    prompt = len(encode(engine.tokenizer, PROMPT))
    monkeypatch.setattr(get_settings(), "max_request_tokens", 2 * (prompt + 4))
    small = {
        **body,
        "prompt": PROMPT,
        "max_tokens": 4,
        "n": 2,
        "structured_outputs": {"choice": LABELS},
    }
    r = client.post("/v1/completions", json=small)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("request_too_large", "structured_outputs.choice")
    assert client.post("/v1/completions", json={**small, "logprobs": None}).status_code == 200
    assert engine.stats.forwards > forwards
    assert engine.queued == 0


def test_a_long_label_list_leaves_room_and_turns_for_other_requests(
    idle_engine, monkeypatch
) -> None:
    """One request scores 20 labels on an engine whose queue holds 24 rows. Its label rows
    go in 8 at a time, so another tenant's 4-row request still gets in (it was refused with
    503 when all 20 went in at once), runs in the first forward, and the label rows run in
    later ones, behind it; the scores are the same as when all go in at once."""
    from app.settings import get_settings

    settings = get_settings()
    monkeypatch.setattr(settings, "label_rows_in_flight", 8)
    engine = idle_engine(max_queue=24, max_batch_size=16, batch_wait_ms=0)
    labels = [f"label {i}" for i in range(20)]
    other_ids = encode(engine.tokenizer, "The capital of France is")
    forwards: list[list[str]] = []  # per forward: whose each row is

    class Watched(Scheduler):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.observe_logits = lambda rows, _: forwards.append(
                ["other" if r.prompt_ids == other_ids else "big" for r in rows]
            )

    monkeypatch.setattr("app.engine.engine.Scheduler", Watched)

    async def scenario() -> tuple:
        big = asyncio.ensure_future(
            completion(engine, labels, prompt=PROMPT, max_tokens=1, logprobs=0, temperature=0)
        )
        for _ in range(5):
            await asyncio.sleep(0)  # it runs until it waits on the engine
        held = len(queued_rows(engine))
        other = asyncio.ensure_future(
            completion(
                engine,
                None,
                prompt="The capital of France is",
                max_tokens=2,
                n=4,
                # sampled, so eos is pushed away: only the token budget ends a row
                logit_bias={str(t): -100 for t in engine.eos_ids},
            )
        )
        await asyncio.sleep(0)
        assert not other.done()  # not refused
        engine.start()
        return held, await big, await other

    held, scored, served = asyncio.run(scenario())
    assert held == 1 + 8  # its answer and one window of label rows
    assert [c.finish_reason for c in served.choices] == ["length"] * 4
    first = next(i for i, rows in enumerate(forwards) if "other" in rows)
    later = [i for i, rows in enumerate(forwards) if "big" in rows and i > first]
    assert len(later) >= 2  # label rows ran after the other request's rows had joined
    assert scored.choices[0].label_logprobs is not None

    monkeypatch.setattr(settings, "label_rows_in_flight", 1000)
    monkeypatch.setattr("app.engine.engine.Scheduler", Scheduler)
    alone = idle_engine(max_queue=64, batch_wait_ms=0)

    async def at_once():
        alone.start()
        return await completion(
            alone, labels, prompt=PROMPT, max_tokens=1, logprobs=0, temperature=0
        )

    reference = asyncio.run(at_once()).choices[0].label_logprobs
    assert list(scored.choices[0].label_logprobs) == labels  # the request's order
    assert scored.choices[0].label_logprobs == pytest.approx(reference, abs=1e-4)
