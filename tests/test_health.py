import pytest


@pytest.mark.both_databases
def test_healthz_and_readyz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"model": True, "database": True, "accepting": True}
    assert r.json()["engine"] == "local"
    assert r.json()["dtype"] == "float32"  # the test engine loads as training does


def test_unknown_route_is_openai_404(client) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404
    assert set(r.json()["error"]) >= {"message", "type", "param", "code"}


def test_oversized_body_is_413(client) -> None:
    big = "x" * (5 * 1024 * 1024)  # above the default 4 MiB cap
    r = client.post("/v1/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
