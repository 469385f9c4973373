"""Evaluations from the browser: start one, read the report (chart, table, pairwise tests,
recommendation, answers with the disagreement filter), point an alias at the winner."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.files.data import upload

XSS_INPUT = "<svg onload=alert('eval')>"
ROWS = [
    ("Say the word for France.", "Paris"),
    ("Say the word for Italy.", "Rome"),
    (XSS_INPUT, "positive"),
    ("Say the word for hello.", "goodbye"),
    ("Say the word for thank.", "you"),
    ("Say the word for film.", "terrible"),
]


@pytest.fixture
def eval_file(client) -> Iterator[str]:
    csv = "input,output\n" + "".join(f'"{i}",{o}\n' for i, o in ROWS)
    r = upload(client, csv.encode(), name="words.csv", purpose="evals")
    assert r.status_code == 200, r.text
    yield r.json()["id"]


def test_evaluation_report_and_promote(admin, client, eval_file, worker) -> None:
    r = client.post(
        "/v1/templates",
        json={
            "name": "words",
            "system_prompt": "Answer with one word.",
            "instruction": "{{ input }}",
        },
    )
    assert r.status_code == 201, r.text
    base = client.get("/v1/models").json()["data"][0]["id"]
    page = admin.page
    admin.goto("/evals")
    page.get_by_label("Labeled file").select_option(eval_file)
    page.get_by_role("button", name="Start evaluation").click()
    expect(page.locator("#err-variants")).to_contain_text("at least 1")  # none ticked

    page.get_by_label(base).check()
    page.get_by_label("tmpl:words").check()
    page.get_by_label("Metric").select_option("contains")
    page.get_by_label("Max tokens per answer").fill("3")
    page.get_by_role("button", name="Start evaluation").click()
    page.wait_for_url("**/console/evals/eval_*")
    eval_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#status")).to_be_visible()  # the page itself, before the wait
    expect(page.locator("#status")).to_have_text("succeeded", timeout=300_000)
    report = client.get(f"/v1/evals/{eval_id}").json()["report"]

    expect(page.locator("#recommendation")).to_have_text(report["recommendation"]["text"])
    expect(page.locator("#variants tbody tr")).to_have_count(2)
    expect(page.locator("#pairwise tbody tr")).to_have_count(1)
    for name, summary in report["variants"].items():
        row = page.locator("#variants tbody tr", has_text=name)
        expect(row).to_contain_text(f"{summary['accuracy']:.3f}")
        expect(row).to_contain_text(f"{summary['correct']} / {summary['n']}")
    chart = page.locator("#eval-chart")
    page.wait_for_function("document.getElementById('eval-chart').complete")
    assert chart.evaluate("img => img.naturalWidth") > 0
    shown = page.request.get(admin.base_url + f"/console/evals/{eval_id}/chart.svg").text()
    assert shown == client.get(f"/v1/evals/{eval_id}/chart.svg").text

    examples = page.locator("#examples tbody tr")
    expect(examples).to_have_count(len(ROWS))
    expect(page.locator("#examples")).to_contain_text(XSS_INPUT)  # the file's line, as text
    assert page.locator("#examples svg").count() == 0
    admin.shot("evaluation")
    admin.shot("evaluation", phone=True)
    assert admin.fits_width()

    differ = [
        len({a["correct"] for a in ex["answers"].values()}) > 1
        or len({(a["answer"] or "").strip() for a in ex["answers"].values()}) > 1
        for ex in report["examples"]
    ]
    page.get_by_label("Only examples where the variants disagree").check()
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#examples tbody tr")).to_have_count(max(1, sum(differ)))
    if not any(differ):
        expect(page.locator("#examples")).to_contain_text("No examples to show.")

    recommended = report["recommendation"]["variant"]
    page.get_by_label("Alias to point at").fill("words-best")
    page.get_by_role("button", name=f"Point alias at {recommended}").click()
    page.wait_for_url("**/console/aliases/words-best")
    alias = client.get("/v1/aliases/words-best").json()
    assert [t["model"] for t in alias["targets"]] == [recommended]
    expect(page.locator("#history tbody tr")).to_have_count(1)


def test_disagreement_filter(admin, client, eval_file) -> None:
    """A report written by the report builder from outcomes chosen here (no worker): two of
    four examples split the variants; a model's answer with markup shows as text."""
    from app.db import get_sessionmaker
    from app.evals.models import Evaluation
    from app.evals.report import Outcome, build_report

    client.post("/v1/templates", json={"name": "other"})
    base = client.get("/v1/models").json()["data"][0]["id"]
    created = client.post(
        "/v1/evals", json={"file_id": eval_file, "variants": [base, "tmpl:other"]}
    )
    assert created.status_code == 201, created.text
    eval_id = created.json()["id"]
    payload = "<script>alert('answer')</script>"
    examples = [{"input": f"q{i}", "expected": "yes"} for i in range(4)]
    outcomes = {
        base: [
            Outcome("yes", True),
            Outcome("yes", True),
            Outcome("no", False),
            Outcome("x", False),
        ],
        "tmpl:other": [
            Outcome("yes", True),
            Outcome(payload, False),
            Outcome("maybe", False),
            Outcome("x", False),
        ],
    }
    with get_sessionmaker()() as session:
        row = session.get(Evaluation, eval_id)
        row.report = build_report([base, "tmpl:other"], examples, outcomes)
        row.status = "succeeded"
        session.commit()

    page = admin.page
    admin.goto(f"/evals/{eval_id}")
    expect(page.locator("#examples tbody tr")).to_have_count(4)
    page.get_by_label("Only examples where the variants disagree (2 of 4)").check()
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#examples tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td").first).to_have_text("2")
    expect(rows.nth(1).locator("td").first).to_have_text("3")
    expect(rows.nth(0)).to_contain_text(payload)
    assert "disagree=true" in page.url


def test_report_page_shows_the_margin_and_an_alias_split(admin, client, eval_file) -> None:
    """A report built here (no worker): an alias answered by two variants, and a cheaper
    variant the examples cannot yet place within the margin."""
    from app.db import get_sessionmaker
    from app.evals.models import Evaluation
    from app.evals.report import Outcome, build_report

    base = client.get("/v1/models").json()["data"][0]["id"]
    client.post("/v1/templates", json={"name": "long"})
    client.post(
        "/v1/aliases",
        json={"name": "ab", "targets": [{"model": base}, {"model": "tmpl:long"}]},
    )
    created = client.post(
        "/v1/evals", json={"file_id": eval_file, "variants": ["ab", base, "tmpl:long"]}
    )
    assert created.status_code == 201, created.text
    eval_id = created.json()["id"]
    n = 10
    examples = [{"input": f"q{i}", "expected": "yes"} for i in range(n)]
    picks = [base if i % 2 else "tmpl:long" for i in range(n)]
    outcomes = {
        "ab": [Outcome("yes", True, 30, 1, 5.0, model=m) for m in picks],
        base: [Outcome("yes" if i < 8 else "no", i < 8, 10, 1, 5.0) for i in range(n)],
        "tmpl:long": [Outcome("yes" if i < 9 else "no", i < 9, 50, 1, 5.0) for i in range(n)],
    }
    report = build_report(["ab", base, "tmpl:long"], examples, outcomes)
    assert report["recommendation"]["decided"] is False
    with get_sessionmaker()() as session:
        row = session.get(Evaluation, eval_id)
        row.report, row.status = report, "succeeded"
        session.commit()

    page = admin.page
    admin.goto(f"/evals/{eval_id}")
    expect(page.locator("#recommendation")).to_have_text(report["recommendation"]["text"])
    needed = report["recommendation"]["examples_needed"]
    expect(page.locator("#margin")).to_contain_text("at most 0.05 below it")
    expect(page.locator("#margin")).to_contain_text(f"about {needed} examples would decide")
    split = page.locator("#variants tr.split")
    expect(split).to_have_count(1)
    expect(split).to_contain_text(f"{base} 5 / 5")
    expect(split).to_contain_text("tmpl:long 5 / 5")
    first = page.locator("#examples tbody tr").first
    expect(first).to_contain_text("(tmpl:long)")  # the alias's pick for example 1
