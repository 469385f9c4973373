"""GET /v1/evals/{id}/chart.svg: one point per variant, at its accuracy and token cost."""

import xml.etree.ElementTree as ET

from app.db import get_sessionmaker
from app.evals.models import Evaluation
from app.evals.report import Outcome, build_report

NS = {"s": "http://www.w3.org/2000/svg"}


def _eval(eval_id: str, status: str, report: dict | None) -> Evaluation:
    return Evaluation(
        id=eval_id,
        tenant="default",
        file_id="file-x",
        variants=list((report or {}).get("variants", {})) or ["m"],
        metric="label",
        params={},
        status=status,
        report=report,
    )


def test_chart_shows_each_variant_at_its_accuracy_and_cost(client) -> None:
    examples = [{"input": f"q{i}", "expected": "a"} for i in range(10)]
    outcomes = {
        "tmpl:fewshot": [Outcome("a", i < 5, 199, 1, 80.0) for i in range(10)],
        "ft:m:s:job": [Outcome("a", i < 9, 56, 1, 40.0) for i in range(10)],
    }
    report = build_report(list(outcomes), examples, outcomes)
    with get_sessionmaker()() as s:
        s.add_all([_eval("eval_done", "succeeded", report), _eval("eval_wait", "queued", None)])
        s.commit()

    r = client.get("/v1/evals/eval_done/chart.svg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    root = ET.fromstring(r.text)
    circles = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iterfind(".//s:circle", NS)]
    (few_x, few_y), (ft_x, ft_y) = circles
    assert ft_x < few_x and ft_y < few_y  # the adapter: fewer tokens, higher on the page
    labels = ["".join(t.itertext()) for t in root.iterfind(".//s:text", NS)]
    assert {"ft:m:s:job", "0.90, p50 0.04 s", "tmpl:fewshot", "0.50, p50 0.08 s"} <= set(labels)

    waiting = client.get("/v1/evals/eval_wait/chart.svg")
    assert waiting.status_code == 200 and "the evaluation is queued" in waiting.text
    assert client.get("/v1/evals/eval_nope/chart.svg").status_code == 404
