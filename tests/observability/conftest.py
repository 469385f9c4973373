import json
import logging
from collections.abc import Iterator

import pytest


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.raw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(record.getMessage())

    def parsed(self) -> list[dict]:
        return [json.loads(line) for line in self.raw]


@pytest.fixture
def request_lines(app) -> Iterator[Lines]:  # after the app installed its handler
    handler = Lines()
    logger = logging.getLogger("adaptd.requests")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
