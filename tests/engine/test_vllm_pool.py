"""The vLLM server pool's choice of server: affinity by rendezvous hashing, load, health.
(Pure logic; the pool against real servers is in tests/vllm/.)"""

import httpx
import pytest

from app.engine.vllm.client import token_logprobs
from app.engine.vllm.servers import ServerPool

URLS = [f"http://127.0.0.1:{9100 + i}" for i in range(1, 6)]  # never contacted


@pytest.fixture
def pool() -> ServerPool:
    pool = ServerPool(URLS, httpx.AsyncClient(), affinity=2)
    for s in pool.servers:
        s.healthy = True
    return pool


def test_a_key_stays_on_its_few_servers(pool: ServerPool) -> None:
    chosen = set()
    for _ in range(20):
        server = pool.pick("adapter:ft:x")
        chosen.add(server.url)
        server.in_flight += 1  # busier each time: the pick alternates within the pair
    assert len(chosen) == 2


def test_keys_spread_over_servers(pool: ServerPool) -> None:
    firsts = {pool.pick(f"adapter:ft:{i}").url for i in range(50)}
    assert len(firsts) == len(URLS)


def test_base_traffic_goes_to_the_least_busy(pool: ServerPool) -> None:
    for i, s in enumerate(pool.servers):
        s.in_flight = 5 - i
    assert pool.pick(None) is pool.servers[-1]


def test_unhealthy_and_excluded_servers_are_skipped(pool: ServerPool) -> None:
    first = pool.pick("adapter:ft:y")
    first.loaded.add("ft:y")
    pool.mark_down(first, "refused")
    assert not first.healthy and not first.loaded  # what it held is gone if it restarts
    second = pool.pick("adapter:ft:y")
    assert second is not first
    assert pool.pick("adapter:ft:y", exclude={second}) not in (first, second)
    for s in pool.servers:
        s.healthy = False
    assert pool.pick("adapter:ft:y") is None and not pool.any_healthy()


def test_no_urls_is_an_error() -> None:
    with pytest.raises(ValueError):
        ServerPool([], httpx.AsyncClient())


def test_token_logprobs_from_vllm_shape() -> None:
    chunk = {
        "token_logprobs": [-0.5],
        "top_logprobs": [{"token_id:9": -0.5, "token_id:4": -1.5, "token_id:7": -3.0}],
    }
    (entry,) = token_logprobs(chunk, [9], 2)
    assert entry.token_id == 9 and entry.logprob == -0.5
    assert entry.top == ((9, -0.5), (4, -1.5))  # most likely first, cut to what was asked
    assert token_logprobs(None, [9, 10], None) == [None, None]
