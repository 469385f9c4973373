"""A rollback to a version the alias never had is a 400 with a code, not `code: null`."""


def test_rollback_to_a_missing_version_has_a_code(client) -> None:
    base = client.app.state.engine.name
    assert (
        client.post("/v1/aliases", json={"name": "al", "targets": [{"model": base}]}).status_code
        == 201
    )
    for body in ({"version": 7}, {}):  # a version it never had; the one before version 1
        r = client.post("/v1/aliases/al/rollback", json=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "alias_version_not_found" and error["param"] == "version", error
