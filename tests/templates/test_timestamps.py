"""Template times are RFC 3339 date-times with an offset, as the OpenAPI schema promises
(the fuzz run's schema check found naive ones once a template existed)."""

from datetime import datetime

from tests.templates.util import create


def test_created_at_names_its_offset(client) -> None:
    assert create(client).status_code == 201
    stamps = [
        client.get("/v1/templates").json()["data"][0]["created_at"],
        client.get("/v1/templates/sentiment").json()["created_at"],
        client.get("/v1/templates/sentiment/versions").json()["data"][0]["created_at"],
        client.get("/v1/templates/sentiment/versions/1").json()["created_at"],
    ]
    for stamp in stamps:
        assert datetime.fromisoformat(stamp).utcoffset() is not None, stamp
