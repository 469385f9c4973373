"""vLLM servers failing under traffic: a second server is killed (SIGKILL, children too) while
requests run on it, and restarted. Requests go on elsewhere, or end with a 503 and
Retry-After; none hangs (every client call has a timeout, which would fail the test)."""

import asyncio
import json
import threading
import time

import httpx
import pytest

from app.engine.errors import EngineBusy, EngineError
from app.engine.protocol import generate
from app.engine.requests import Failed, Finished, RequestHandle
from app.engine.sampling import SamplingParams
from tests.conftest import ADMIN_KEY
from tests.vllm.conftest import VllmProcess, _need_vllm, make_vllm_engine

HANG = 300  # seconds a client waits before calling a request hung (the machine is slow)


@pytest.fixture(scope="module")
def second_server(vllm_logs, default_source) -> VllmProcess:
    _need_vllm()
    server = VllmProcess(vllm_logs).start()
    yield server
    server.stop()


def prompts(engine, count: int) -> list[list[int]]:
    tok = engine.tokenizer
    return [
        tok.encode(f"Story number {i}: once upon a time, a", add_special_tokens=True)
        for i in range(count)
    ]


def wait_until(condition, what: str, limit: float = HANG) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def has_text(line: str) -> bool:
    """A streamed chunk (an SSE line) that carries generated text."""
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


# Order matters for time, not for correctness: the single-server test kills and restarts
# the second server, which the two-server test then finds up and kills for good, so a session
# boots vLLM three times (this module's server, its restart, the session's) instead of four.
@pytest.fixture
def single(second_server, default_source, data_root, vllm_view):
    if second_server.proc is None or second_server.proc.poll() is not None:
        second_server.start()
    engine = make_vllm_engine(default_source, [second_server.url], data_root, vllm_view)
    yield engine
    engine.stop()


@pytest.fixture
def backend(single):  # the app of these tests serves on `single`
    return single


def test_single_server_killed_and_restarted(
    live_server,
    client,
    single,
    second_server,
    register_adapter,
) -> None:
    name = register_adapter("default", "faults")
    body = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 64,
        "temperature": 0,
    }
    assert client.post("/v1/chat/completions", json={**body, "model": name}).status_code == 200
    http = httpx.Client(
        base_url=live_server, timeout=HANG, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    outcomes: list[tuple[str, int, str]] = []
    generating = threading.Event()  # a streamed answer has its first generated text

    def one(i: int) -> None:
        model = name if i % 2 else single.name
        payload = {**body, "model": model, "stream": i < 3, "temperature": 0}
        if i >= 3:
            r = http.post("/v1/chat/completions", json=payload)  # a hang raises ReadTimeout
            text = r.text
        else:
            lines = []
            with http.stream("POST", "/v1/chat/completions", json=payload) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if has_text(line):
                        generating.set()
            text = "\n".join(lines)
        outcomes.append(("stream" if i < 3 else "plain", r.status_code, text))
        if r.status_code == 503:
            assert r.headers["retry-after"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    # Killed mid-generation: once a streamed answer has text (64 tokens take far longer).
    assert generating.wait(HANG), "no answer started"
    second_server.kill()
    for t in threads:
        t.join(HANG + 10)
        assert not t.is_alive(), "a request hung"
    assert len(outcomes) == 6
    for kind, status, text in outcomes:
        assert status in (200, 503), text
        if kind == "stream" and status == 200:
            events = [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]
            assert events[-1] == "[DONE]"
            last = json.loads(events[-2])
            # Either it finished before the kill, or it says why it stopped.
            assert last.get("error", {}).get("code") == "engine_unavailable" or (
                last["choices"][0]["finish_reason"] in ("stop", "length")
            )

    down = client.post("/v1/chat/completions", json={**body, "model": name})
    assert down.status_code == 503 and down.headers["retry-after"]
    assert down.json()["error"]["code"] == "engine_unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["servers"][0]["healthy"] is False

    second_server.start()
    wait_until(lambda: client.get("/readyz").status_code == 200, "ready again")
    # The restarted server has no adapter: it is loaded again on first use.
    again = client.post("/v1/chat/completions", json={**body, "model": name, "max_tokens": 8})
    assert again.status_code == 200, again.text
    # A server that lost an adapter behind adaptd's back: "not found", one reload, a retry.
    httpx.post(f"{second_server.url}/v1/unload_lora_adapter", json={"lora_name": name})
    assert name in single.pool.servers[0].loaded
    retried = client.post("/v1/chat/completions", json={**body, "model": name, "max_tokens": 8})
    assert retried.status_code == 200, retried.text
    assert (
        retried.json()["choices"][0]["message"]["content"]
        == again.json()["choices"][0]["message"]["content"]
    )


def test_two_servers_one_killed_mid_traffic(
    vllm_server,
    second_server,
    vllm_engine,
    default_source,
    data_root,
    vllm_view,
) -> None:
    engine = make_vllm_engine(
        default_source, [vllm_server.url, second_server.url], data_root, vllm_view
    )
    try:
        # Both healthy before anything is sent, or every request goes to the one seen first
        # (the second may still be coming back from the previous test's restart).
        wait_until(lambda: all(s.healthy for s in engine.pool.servers), "both servers healthy")
        params = SamplingParams(max_tokens=40, temperature=0)
        ids = prompts(engine, 8)
        # What each prompt gives on the server that stays up, undisturbed.
        reference = [asyncio.run(generate(vllm_engine, p, params)).token_ids for p in ids]

        async def outcome(
            handle: RequestHandle, first_token: asyncio.Event
        ) -> Finished | EngineError | None:
            async for event in handle.events():
                first_token.set()
                if isinstance(event, Failed):
                    return event.error
                if isinstance(event, Finished):
                    return event
            return None

        async def scenario() -> list:
            handles = [engine.submit(p, params) for p in ids]  # spread by load over both
            first_tokens = [asyncio.Event() for _ in handles]
            outcomes = [
                asyncio.create_task(outcome(h, first))
                for h, first in zip(handles, first_tokens, strict=True)
            ]
            victim = engine.pool.servers[1]
            # Mid-generation: answers are under way (a first token came back) while the victim
            # still has requests in flight; killed at once, not after a guessed delay.
            deadline = time.monotonic() + HANG
            while not (victim.in_flight > 0 and any(f.is_set() for f in first_tokens)):
                assert time.monotonic() < deadline, "no answer got under way on the victim"
                await asyncio.sleep(0.01)
            await asyncio.to_thread(second_server.kill)
            return await asyncio.wait_for(asyncio.gather(*outcomes), HANG)

        results = asyncio.run(scenario())
        assert all(isinstance(r, Finished) for r in results), results
        assert engine.moved >= 1  # some went on on the surviving server
        # Greedy requests continued from their tokens so far give the same answer.
        assert [r.token_ids for r in results] == reference
        health = engine.health()
        assert health["ready"] and [s["healthy"] for s in health["servers"]] == [True, False]
        after = asyncio.run(generate(engine, ids[0], params))
        assert after.token_ids == reference[0]
    finally:
        engine.stop()


def test_no_server_at_all_is_a_503(default_source, data_root, vllm_view) -> None:
    from tests.conftest import free_port

    engine = make_vllm_engine(
        default_source, [f"http://127.0.0.1:{free_port()}"], data_root, vllm_view
    )
    try:
        assert engine.health()["ready"] is False

        async def submit() -> None:
            engine.submit([1, 2, 3], SamplingParams(max_tokens=2))

        with pytest.raises(EngineBusy) as err:
            asyncio.run(submit())
        assert err.value.code == "engine_unavailable" and err.value.retry_after_s > 0
    finally:
        engine.stop()
