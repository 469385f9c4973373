"""POST /v1/fine_tuning/alpha/graders/validate and /run, driven by the official openai client
against the app (the tiny model judges for score_model and label_model)."""

import json

import openai
import pytest

from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def oai(live_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)


CHECK = {
    "type": "string_check",
    "name": "city",
    "input": "{{sample.output_json.city}}",
    "reference": "{{item.city}}",
    "operation": "ilike",
}


def test_validate_echoes_the_grader(oai: openai.OpenAI) -> None:
    out = oai.fine_tuning.alpha.graders.validate(grader=CHECK)
    assert out.grader.type == "string_check" and out.grader.operation == "ilike"


def test_run_string_check(oai: openai.OpenAI) -> None:
    out = oai.fine_tuning.alpha.graders.run(
        grader=CHECK, model_sample='{"city": "PARIS"}', item={"city": "paris"}
    )
    assert out.reward == 1.0
    assert out.metadata.type == "string_check" and out.metadata.name == "city"
    assert out.metadata.errors.sample_parse_error is False
    assert out.metadata.execution_time >= 0
    missing = oai.fine_tuning.alpha.graders.run(
        grader=CHECK, model_sample="Paris", item={"city": "paris"}
    )
    assert missing.reward == 0.0 and missing.metadata.errors.sample_parse_error is True


def test_run_multi(oai: openai.OpenAI) -> None:
    grader = {
        "type": "multi",
        "name": "both",
        "graders": {
            "city": CHECK,
            "name": {
                "type": "text_similarity",
                "name": "name",
                "input": "{{sample.output_json.name}}",
                "reference": "{{item.name}}",
                "evaluation_metric": "fuzzy_match",
            },
        },
        "calculate_output": "0.5 * city + 0.5 * name",
    }
    out = oai.fine_tuning.alpha.graders.run(
        grader=grader,
        model_sample='{"city": "Paris", "name": "abcd"}',
        item={"city": "Paris", "name": "abce"},
    )
    assert out.sub_rewards == {"city": 1.0, "name": 0.75}
    assert out.reward == pytest.approx(0.875)


def judge_input() -> list[dict]:
    return [
        {"role": "system", "content": "Score the answer from 0 to 10."},
        {"role": "user", "content": "Question: {{item.q}}\nAnswer: {{sample.output_text}}"},
    ]


def same_answer_by_chat(oai: openai.OpenAI, model: str, schema: dict) -> str:
    """What the judge's own request gives through /v1/chat/completions."""
    reply = oai.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Score the answer from 0 to 10."},
            {"role": "user", "content": "Question: Capital of France?\nAnswer: Paris"},
        ],
        temperature=0,
        max_completion_tokens=128,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "grader_result", "schema": schema, "strict": True},
        },
    )
    return reply.choices[0].message.content


def test_score_model_judged_by_the_served_model(oai: openai.OpenAI, app) -> None:
    model = app.state.engine.name
    grader = {
        "type": "score_model",
        "name": "judge",
        "model": model,
        "input": judge_input(),
        "range": [0, 10],
        "sampling_params": {"temperature": 0},
    }
    out = oai.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="Paris", item={"q": "Capital of France?"}
    )
    assert not any(v is True for v in out.metadata.errors.model_dump().values())
    assert 0 <= out.reward <= 10
    assert out.metadata.sampled_model_name == model
    assert out.metadata.token_usage > 0
    schema = {
        "type": "object",
        "properties": {"result": {"type": "number", "minimum": 0, "maximum": 10}},
        "required": ["result"],
        "additionalProperties": False,
    }
    expected = min(max(json.loads(same_answer_by_chat(oai, model, schema))["result"], 0), 10)
    assert out.reward == expected


def test_label_model_judged_by_the_served_model(oai: openai.OpenAI, app) -> None:
    model = app.state.engine.name
    grader = {
        "type": "label_model",
        "name": "label",
        "model": model,
        "input": judge_input(),
        "labels": ["correct", "incorrect"],
        "passing_labels": ["correct"],
        "sampling_params": {"temperature": 0},
    }
    out = oai.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="Paris", item={"q": "Capital of France?"}
    )
    schema = {
        "type": "object",
        "properties": {"result": {"type": "string", "enum": ["correct", "incorrect"]}},
        "required": ["result"],
        "additionalProperties": False,
    }
    label = json.loads(same_answer_by_chat(oai, model, schema))["result"]
    assert out.reward == (1.0 if label == "correct" else 0.0)
    assert out.metadata.errors.model_grader_parse_error is False


def test_unknown_judge_model_is_a_400(oai: openai.OpenAI) -> None:
    grader = {
        "type": "multi",
        "name": "m",
        "graders": {
            "j": {"type": "score_model", "name": "j", "model": "gpt-4o", "input": judge_input()}
        },
        "calculate_output": "j",
    }
    with pytest.raises(openai.BadRequestError) as exc:
        oai.fine_tuning.alpha.graders.validate(grader=grader)
    assert exc.value.param == "grader.graders.j.model" and exc.value.code == "model_not_found"


def test_bad_graders_are_400s_with_param(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        oai.fine_tuning.alpha.graders.run(
            grader={
                "type": "multi",
                "name": "m",
                "graders": {"a": CHECK},
                "calculate_output": "a +* 2",
            },
            model_sample="x",
        )
    assert exc.value.param == "grader.calculate_output" and exc.value.code == "invalid_formula"
    with pytest.raises(openai.BadRequestError) as exc:
        oai.fine_tuning.alpha.graders.validate(grader={**CHECK, "input": "{{ secrets.key }}"})
    assert exc.value.param == "grader.input"


def test_needs_the_manage_scope(client) -> None:
    created = client.post(
        "/v1/admin/keys", json={"tenant": "acme", "name": "t", "scopes": ["inference"]}
    )
    assert created.status_code == 201, created.text
    r = client.post(
        "/v1/fine_tuning/alpha/graders/validate",
        json={"grader": CHECK},
        headers={"Authorization": f"Bearer {created.json()['key']}"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"


def test_a_judge_is_one_of_the_callers_own_variants(client, tenant_key: str) -> None:
    """A template of another tenant is not a judge here; the tenant's own is."""
    assert client.post("/v1/templates", json={"name": "t", "system_prompt": "s"}).status_code == 201
    grader = {
        "type": "label_model",
        "name": "l",
        "model": "tmpl:t",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
        "labels": ["a", "b"],
        "passing_labels": ["a"],
    }
    url = "/v1/fine_tuning/alpha/graders/validate"
    assert client.post(url, json={"grader": grader}).status_code == 200
    other = client.post(
        url, json={"grader": grader}, headers={"Authorization": f"Bearer {tenant_key}"}
    )
    assert other.status_code == 400
    assert other.json()["error"]["param"] == "grader.model"
    assert other.json()["error"]["code"] == "model_not_found"
