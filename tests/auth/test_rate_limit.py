import pytest

from app.auth.rate_limit import RateLimiter
from app.errors import RateLimited
from tests.conftest import make_tenant_key


def test_bucket_refuses_past_capacity_per_key() -> None:
    limiter = RateLimiter(per_minute=3)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimited) as exc:
        limiter.check("a")
    assert int(exc.value.headers["Retry-After"]) >= 1
    limiter.check("b")  # other keys have their own bucket


def test_disabled_limiter_never_refuses() -> None:
    limiter = RateLimiter(per_minute=0)
    for _ in range(1000):
        limiter.check("a")


def test_http_429_in_openai_format(client) -> None:
    key = make_tenant_key(client, "busy")
    client.app.state.rate_limiter = RateLimiter(per_minute=2)
    hdr = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/models", headers=hdr).status_code == 200
    assert client.get("/v1/models", headers=hdr).status_code == 200
    r = client.get("/v1/models", headers=hdr)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in r.headers


def test_requests_with_invalid_keys_are_rate_limited_too(client) -> None:
    """Wrong or missing keys draw on their client address's bucket: a stream of them gets
    429 like any other traffic, and a valid key from the same address keeps its own."""
    key = make_tenant_key(client, "honest")
    client.app.state.rate_limiter = RateLimiter(per_minute=3)
    wrong = {"Authorization": "Bearer sk-adaptd-not-a-key"}
    for _ in range(2):
        assert client.get("/v1/models", headers=wrong).status_code == 401
    missing = {"Authorization": ""}
    assert client.get("/v1/models", headers=missing).status_code == 401  # the same bucket
    r = client.get("/v1/models", headers=wrong)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in r.headers
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
