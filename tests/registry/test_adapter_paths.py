"""The adapter registry serves only adapters stored under its own folder: a row whose path
points outside it is refused when a request would load it."""

from app.db import get_sessionmaker
from app.registry.models import Adapter


def test_adapter_rows_pointing_outside_the_registry_are_refused(client) -> None:
    with get_sessionmaker()() as s:
        s.add(
            Adapter(
                id="adapter_evil",
                tenant="default",
                name="ft:x:evil:1",
                job_id=None,
                base_model="x",
                path="../../etc",
                bytes=0,
                manifest={},
            )
        )
        s.commit()
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "ft:x:evil:1",
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert r.status_code >= 400 and r.status_code != 200
    assert "registry" in r.json()["error"]["message"]
