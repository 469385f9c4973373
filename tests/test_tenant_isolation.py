"""Two tenants, every endpoint: tenant B can neither read, list, use, cancel nor delete
tenant A's rows, and gets 404 (never 403), so existence does not leak."""

import pytest

from tests.files.data import chat_rows, jsonl
from tests.registry_util import register_random_adapter

pytestmark = pytest.mark.both_databases


@pytest.fixture
def world(client):
    """Tenant A (the admin's `default` tenant) owns one of everything."""
    base = client.app.state.engine.name
    file_id = client.post(
        "/v1/files",
        files={"file": ("a.jsonl", jsonl(chat_rows(12)))},
        data={"purpose": "fine-tune"},
    ).json()["id"]
    adapter = register_random_adapter("default", "a")
    assert client.post("/v1/templates", json={"name": "t", "system_prompt": "s"}).status_code == 201
    assert client.put("/v1/templates/t/tags/prod", json={"version": 1}).status_code == 200
    job = client.post("/v1/fine_tuning/jobs", json={"model": base, "training_file": file_id})
    assert job.status_code in (200, 201), job.text
    assert (
        client.post("/v1/aliases", json={"name": "al", "targets": [{"model": base}]}).status_code
        == 201
    )
    ev = client.post("/v1/evals", json={"file_id": file_id, "variants": [base]})
    assert ev.status_code == 201, ev.text
    # B's key is an admin of its own tenant, so the key routes are tried too.
    other = client.post(
        "/v1/admin/keys",
        json={"tenant": "tenant-b", "scopes": ["inference", "manage", "admin"]},
    ).json()["key"]
    a_key = client.post("/v1/admin/keys", json={"tenant": "default"}).json()
    return {
        "a_key": a_key,
        "base": base,
        "file_id": file_id,
        "adapter": adapter,
        "job_id": job.json()["id"],
        "eval_id": ev.json()["id"],
        "b": {"Authorization": f"Bearer {other}"},
    }


# Every operation on a path with an identifier, with a body that would be valid for the
# owner, so that only the tenant check can refuse it.
def cases(w: dict) -> list[tuple[str, str, dict | None]]:
    return [
        ("get", "/v1/templates/t", None),
        ("delete", "/v1/templates/t", None),
        ("get", "/v1/templates/t/versions", None),
        ("post", "/v1/templates/t/versions", {"system_prompt": "x"}),
        ("get", "/v1/templates/t/versions/1", None),
        ("put", "/v1/templates/t/tags/prod", {"version": 1}),
        ("delete", "/v1/templates/t/tags/prod", None),
        ("post", "/v1/templates/t@prod/render", {"input": "hi"}),
        ("get", f"/v1/files/{w['file_id']}", None),
        ("delete", f"/v1/files/{w['file_id']}", None),
        ("get", f"/v1/files/{w['file_id']}/content", None),
        ("get", f"/v1/fine_tuning/jobs/{w['job_id']}", None),
        ("post", f"/v1/fine_tuning/jobs/{w['job_id']}/cancel", None),
        ("get", f"/v1/fine_tuning/jobs/{w['job_id']}/events", None),
        ("get", f"/v1/fine_tuning/jobs/{w['job_id']}/checkpoints", None),
        ("get", f"/v1/fine_tuning/jobs/{w['job_id']}/loss.svg", None),
        ("get", f"/v1/models/{w['adapter']}", None),
        ("delete", f"/v1/models/{w['adapter']}", None),
        ("get", "/v1/aliases/al", None),
        ("put", "/v1/aliases/al", {"targets": [{"model": w["base"]}]}),
        ("delete", "/v1/aliases/al", None),
        ("post", "/v1/aliases/al/rollback", {"version": 1}),
        ("get", "/v1/aliases/al/history", None),
        ("get", f"/v1/evals/{w['eval_id']}", None),
        ("get", f"/v1/evals/{w['eval_id']}/events", None),
        ("get", f"/v1/evals/{w['eval_id']}/chart.svg", None),
        ("get", f"/v1/admin/keys/{w['a_key']['id']}", None),
        ("post", f"/v1/admin/keys/{w['a_key']['id']}/rotate", None),
        ("delete", f"/v1/admin/keys/{w['a_key']['id']}", None),
    ]


def test_matrix_covers_every_identified_operation(client, world) -> None:
    documented = {
        (method, path)
        for path, ops in client.app.openapi()["paths"].items()
        if "{" in path
        for method in ops
    }
    covered = set()
    for method, url, _ in cases(world):
        for path, ops in client.app.openapi()["paths"].items():
            parts, actual = path.strip("/").split("/"), url.strip("/").split("/")
            if (
                method in ops
                and len(parts) == len(actual)
                and all(p.startswith("{") or p == a for p, a in zip(parts, actual, strict=True))
            ):
                covered.add((method, path))
    assert documented <= covered, documented - covered


def test_other_tenant_gets_404_everywhere_and_nothing_changes(client, world) -> None:
    for method, url, body in cases(world):
        kwargs = {"headers": world["b"]}
        if body is not None:
            kwargs["json"] = body
        r = client.request(method.upper(), url, **kwargs)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}
    # Tenant A still has everything, unchanged.
    assert client.get("/v1/templates/t").json()["latest_version"] == 1
    assert client.get(f"/v1/files/{world['file_id']}").status_code == 200
    assert client.get(f"/v1/fine_tuning/jobs/{world['job_id']}").json()["status"] != "cancelled"
    a_key = {"Authorization": f"Bearer {world['a_key']['key']}"}
    assert client.get("/v1/models", headers=a_key).status_code == 200
    assert client.get("/v1/aliases/al").json()["version"] == 1
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert world["adapter"] in models and "tmpl:t" in models and "al" in models


def test_other_tenant_lists_nothing_and_cannot_use_or_reference(client, world) -> None:
    b = world["b"]
    for url in ["/v1/templates", "/v1/files", "/v1/fine_tuning/jobs", "/v1/aliases", "/v1/evals"]:
        r = client.get(url, headers=b)
        assert r.status_code == 200 and r.json()["data"] == [], url
    assert [m["id"] for m in client.get("/v1/models", headers=b).json()["data"]] == [world["base"]]
    keys = client.get("/v1/admin/keys", headers=b).json()["data"]
    assert {k["tenant"] for k in keys} == {"tenant-b"}
    for model in [world["adapter"], "tmpl:t", "tmpl:t@prod", "al"]:
        for url, body in [
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
            ("/v1/completions", {"prompt": "x"}),
        ]:
            r = client.post(url, headers=b, json={"model": model, "max_tokens": 1, **body})
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", model
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers=b,
        json={"model": world["base"], "training_file": world["file_id"]},
    )
    assert r.status_code == 404
    r = client.post(
        "/v1/evals", headers=b, json={"file_id": world["file_id"], "variants": [world["base"]]}
    )
    assert r.status_code == 404
    r = client.post("/v1/templates", headers=b, json={"name": "x", "model": world["adapter"]})
    assert r.status_code in (400, 404) and "model" in (r.json()["error"]["param"] or "")
    r = client.post("/v1/aliases", headers=b, json={"name": "x", "targets": [{"model": "tmpl:t"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"


def test_admin_routes_refuse_tenant_keys(client, world) -> None:
    r = client.post(
        "/v1/admin/keys", headers=world["b"], json={"tenant": "default", "is_admin": True}
    )
    assert r.status_code == 403
