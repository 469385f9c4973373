"""The API process killed and started again: files, templates, adapters, aliases, jobs and
keys are all still there, and every variant answers exactly as before."""

import httpx
import pytest

from tests.files.data import chat_rows, jsonl, upload
from tests.processes import ApiProcess
from tests.registry_util import register_random_adapter


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_everything_survives_an_api_restart(settings_env) -> None:
    from tests.conftest import clean_database

    clean_database()
    api = ApiProcess()
    try:
        http = api.http
        base = http.get("/v1/models").json()["data"][0]["id"]
        key = http.post("/v1/admin/keys", json={"tenant": "keep"}).json()["key"]
        file_id = upload(http, jsonl(chat_rows(12)), "a.jsonl").json()["id"]
        job_id = http.post(
            "/v1/fine_tuning/jobs", json={"model": base, "training_file": file_id}
        ).json()["id"]
        adapter = register_random_adapter("default", "keep")
        assert (
            http.post(
                "/v1/templates",
                json={
                    "name": "t",
                    "system_prompt": "Be brief.",
                    "model": adapter,
                    "examples": [{"input": "a", "output": "b"}],
                },
            ).status_code
            == 201
        )
        assert (
            http.post(
                "/v1/aliases", json={"name": "al", "targets": [{"model": "tmpl:t"}]}
            ).status_code
            == 201
        )
        variants = [base, adapter, "tmpl:t", "al"]

        def answers(client: httpx.Client) -> list[str]:
            out = []
            for model in variants:
                r = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": model,
                        "max_tokens": 6,
                        "temperature": 0,
                        "messages": [{"role": "user", "content": "hello"}],
                    },
                )
                assert r.status_code == 200, (model, r.text)
                out.append(r.json()["choices"][0]["message"]["content"])
            return out

        before = answers(http)
        api.kill()
        api = ApiProcess()
        http = api.http
        assert answers(http) == before
        ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert {base, adapter, "tmpl:t", "al"} <= set(ids)
        assert http.get(f"/v1/files/{file_id}/content").content == jsonl(chat_rows(12))
        assert http.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200
        assert http.get("/v1/aliases/al").json()["requests"] == {"tmpl:t": 2}
        as_tenant = {"Authorization": f"Bearer {key}"}
        assert http.get("/v1/models", headers=as_tenant).status_code == 200
    finally:
        api.kill()
