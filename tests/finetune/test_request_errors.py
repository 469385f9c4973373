"""Refusals of a fine-tuning request say what is wrong with the field in one sentence."""

import pytest

from tests.files.data import chat_rows, jsonl, upload


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (
            {"hyperparameters": {"n_epochs": 0}},
            "hyperparameters.n_epochs",
            "greater than or equal to 1",
        ),
        (
            {"hyperparameters": {"n_epochs": 201}},
            "hyperparameters.n_epochs",
            "less than or equal to 200",
        ),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size", "valid integer"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
            "method.supervised.hyperparameters.n_epochs",
            "greater than or equal to 1",
        ),
    ],
)
def test_auto_or_number_fields_get_one_clear_message(client, body, param: str, says: str) -> None:
    file_id = upload(client, jsonl(chat_rows())).json()["id"]
    base = client.app.state.engine.name
    r = client.post("/v1/fine_tuning/jobs", json={"model": base, "training_file": file_id, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert says in error["message"] and "'auto'" in error["message"], error
    # Not the union's internals: no member names, one sentence about the field.
    assert "literal[" not in error["message"] and "constrained-int" not in error["message"]
    assert error["code"] == "invalid_request"
