"""Files API: upload (three formats), list, retrieve, content, delete, tenancy."""

import csv
import hashlib
import io
import json

import pytest

from tests.conftest import make_tenant_key
from tests.files.data import chat_rows, jsonl, upload


def test_upload_chat_jsonl_stores_once_by_id(client, settings_env):
    data = jsonl(chat_rows(12))
    r = upload(client, data, name="../../etc/passwd")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "file" and body["id"].startswith("file-")
    assert body["purpose"] == "fine-tune" and body["status"] == "processed"
    assert body["bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["format"] == "chat" and body["num_examples"] == 12
    assert body["filename"] == "passwd"  # display only, never a path
    stored = settings_env.files_dir / body["id"]
    assert stored.read_bytes() == data
    assert not (settings_env.data_dir.parent / "etc").exists()

    content = client.get(f"/v1/files/{body['id']}/content")
    assert content.status_code == 200 and content.content == data
    assert client.get(f"/v1/files/{body['id']}").json()["sha256"] == body["sha256"]


def test_prompt_completion_and_csv_are_normalised_to_chat(client, settings_env):
    from app.files import service
    from app.files.models import File

    pc = jsonl([{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(10)])
    r = upload(client, pc)
    assert r.status_code == 200, r.text
    assert r.json()["format"] == "prompt_completion"

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["text", "label"])
    for i in range(11):
        writer.writerow([f"review, number {i}", "positive" if i % 2 else "negative"])
    r2 = upload(client, buf.getvalue().encode(), name="sst.csv")
    assert r2.status_code == 200, r2.text
    assert r2.json()["format"] == "csv" and r2.json()["num_examples"] == 11

    from app.db import get_sessionmaker

    with get_sessionmaker()() as session:
        row = session.get(File, r2.json()["id"])
        examples = service.read_examples(row, settings_env.files_dir)
    assert examples[1]["messages"] == [
        {"role": "user", "content": "review, number 1"},
        {"role": "assistant", "content": "positive"},
    ]


def test_weight_zero_turns_and_evals_purpose_accepted(client):
    rows = chat_rows(10)
    rows[0]["messages"] += [
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "no", "weight": 0},
    ]
    assert upload(client, jsonl(rows)).status_code == 200
    r = upload(client, jsonl(chat_rows(2)), purpose="evals")
    assert r.status_code == 200 and r.json()["purpose"] == "evals"


def test_bad_purpose_is_400(client):
    r = upload(client, jsonl(chat_rows(12)), purpose="assistants")
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "purpose"


@pytest.mark.both_databases
def test_list_retrieve_delete_and_tenancy(client):
    ids = [upload(client, jsonl(chat_rows(10 + i))).json()["id"] for i in range(3)]
    listed = client.get("/v1/files").json()
    assert listed["object"] == "list"
    assert [f["id"] for f in listed["data"]] == ids[::-1]  # newest first
    page = client.get("/v1/files", params={"limit": 1, "after": ids[2]}).json()
    assert [f["id"] for f in page["data"]] == [ids[1]] and page["has_more"] is True
    assert client.get("/v1/files", params={"purpose": "evals"}).json()["data"] == []

    other = make_tenant_key(client, "other")
    h = {"Authorization": f"Bearer {other}"}
    assert client.get(f"/v1/files/{ids[0]}", headers=h).status_code == 404
    assert client.get(f"/v1/files/{ids[0]}/content", headers=h).status_code == 404
    assert client.delete(f"/v1/files/{ids[0]}", headers=h).status_code == 404
    assert client.get("/v1/files", headers=h).json()["data"] == []

    r = client.delete(f"/v1/files/{ids[0]}")
    assert r.status_code == 200 and r.json() == {"id": ids[0], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{ids[0]}").status_code == 404
    assert client.delete(f"/v1/files/{ids[0]}").status_code == 404


@pytest.mark.both_databases
def test_invalid_file_is_not_stored(client, settings_env):
    before = set(settings_env.files_dir.glob("*")) if settings_env.files_dir.exists() else set()
    r = upload(client, b'{"messages": 1}\n' * 12)
    assert r.status_code == 400
    after = set(settings_env.files_dir.glob("*")) if settings_env.files_dir.exists() else set()
    assert after == before
    assert client.get("/v1/files").json()["data"] == []


def test_error_envelope_lists_many_problems(client):
    r = upload(client, b"not json\n" * 30)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "invalid_file" and err["param"] == "file"
    assert "30 problem" in err["message"] and "line 1: invalid_json" in err["message"]
    assert [d["line"] for d in err["details"]] == list(range(1, 31))
    assert json.dumps(err)  # plain JSON


def test_content_racing_its_delete_is_404_or_whole(client, settings_env, monkeypatch):
    """GET /content and DELETE of one file at once: the DELETE removing the bytes right
    after the lookup answers 404; removing them once they are open lets them all through."""
    from app.files import service

    data = jsonl(chat_rows(12))
    first, second = (upload(client, data).json()["id"] for _ in range(2))
    lookup = service.get_file

    def deleted_after_lookup(session, tenant, file_id, param="file_id"):
        row = lookup(session, tenant, file_id, param)
        service._remove_files(settings_env.files_dir, file_id)
        return row

    monkeypatch.setattr(service, "get_file", deleted_after_lookup)
    r = client.get(f"/v1/files/{first}/content")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "file_not_found"
    monkeypatch.setattr(service, "get_file", lookup)
    open_content = service.open_content

    def deleted_once_open(session, tenant, file_id, files_dir):
        fh = open_content(session, tenant, file_id, files_dir)
        service._remove_files(files_dir, file_id)
        return fh

    monkeypatch.setattr(service, "open_content", deleted_once_open)
    r = client.get(f"/v1/files/{second}/content")
    assert r.status_code == 200 and r.content == data
    assert not (settings_env.files_dir / second).exists()
