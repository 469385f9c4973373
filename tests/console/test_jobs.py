"""Fine-tuning from the browser: the form with its auto values and field errors; a job on the
tiny model followed live to 100% with its loss curve, events and checkpoints; cancel."""

import pytest
from playwright.sync_api import expect

from app.finetune import auto_settings
from tests.charts.curves import curve_point_counts
from tests.files.data import chat_rows, jsonl, upload


@pytest.fixture
def training_file(client) -> str:
    r = upload(client, jsonl(chat_rows(12)), name="words.jsonl")
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_form_shows_auto_values_and_field_errors(admin, client, training_file) -> None:
    page = admin.page
    admin.goto("/jobs")
    # What "auto" becomes for these 12 examples, by the rule the trainer applies.
    auto = auto_settings.resolve({}, 12)
    expect(page.locator('[data-auto-for="n_epochs"]')).to_have_text(str(auto["n_epochs"]))
    expect(page.locator('[data-auto-for="batch_size"]')).to_have_text(str(auto["batch_size"]))
    expect(page.locator("#auto-reason")).to_contain_text(f"{auto['n_epochs']} epochs")
    page.get_by_label("Suffix").fill("Not A Slug")
    page.get_by_label("Target modules (comma-separated)").fill("q_proj, no_such_module")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.locator("#err-suffix")).to_contain_text("lowercase")
    assert page.get_by_label("Suffix").input_value() == "Not A Slug"
    page.get_by_label("Suffix").fill("words")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.locator("#err-target_modules")).to_contain_text("no_such_module")
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_job_runs_to_100_percent_live(admin, client, training_file, worker) -> None:
    page = admin.page
    admin.goto("/jobs")
    page.get_by_label("Training file").select_option(training_file)
    page.get_by_label("Suffix").fill("words")
    page.get_by_label("Seed").fill("7")
    page.get_by_label("Epochs").fill("3")
    page.get_by_label("Batch size").fill("4")
    page.get_by_role("button", name="Start fine-tuning").click()
    page.wait_for_url("**/console/jobs/ftjob-*")
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#progress")).to_be_visible()  # the page itself, before the wait
    expect(page.locator("#status")).to_have_text("succeeded", timeout=300_000)
    expect(page.locator("#percent")).to_have_text("100")
    assert page.locator("#progress").evaluate("p => p.value / p.max") == 1.0
    expect(page.locator("#step")).to_have_text("9")  # 3 epochs of 3 batches
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    expect(page.locator("#result")).to_contain_text(job["fine_tuned_model"])
    expect(page.locator("#events")).to_contain_text("New fine-tuned model created")
    checkpoints = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    expect(page.locator("#checkpoints tr")).to_have_count(len(checkpoints))
    expect(page.locator("#checkpoints")).to_contain_text(
        checkpoints[0]["fine_tuned_model_checkpoint"]
    )
    expect(page.locator("#cancel-form")).to_have_count(0)

    # The loss curve drawn, from the same chart the API serves.
    chart = page.locator("#loss-chart")
    # Drawn again once over: the details now hold what the worker resolved.
    details = page.locator("#details")
    expect(details).to_contain_text("auto_reason")
    expect(details).to_contain_text("learning_rate")
    page.wait_for_function("document.getElementById('loss-chart').complete")
    assert chart.evaluate("img => img.naturalWidth") > 0
    shown = page.request.get(admin.base_url + f"/console/jobs/{job_id}/loss.svg").text()
    api = client.get(f"/v1/fine_tuning/jobs/{job_id}/loss.svg").text
    assert shown == api
    metrics = [
        e
        for e in client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100").json()["data"]
        if e["type"] == "metrics"
    ]
    assert curve_point_counts(shown) == [len(metrics)]
    admin.shot("job")
    admin.shot("job", phone=True)
    assert admin.fits_width()

    # The overview lists the adapter with its job, hyperparameters and metrics.
    admin.goto("/")
    adapters = page.locator("#adapters")
    expect(adapters).to_contain_text(job["fine_tuned_model"])
    expect(adapters).to_contain_text(job_id)
    expect(adapters).to_contain_text(training_file)
    expect(adapters).to_contain_text("n_epochs")
    admin.shot("variants")
    admin.shot("variants", phone=True)
    assert admin.fits_width()


def test_cancel_a_queued_job(admin, client, training_file) -> None:
    """No worker runs here, so the job waits in the queue until the button cancels it."""
    page = admin.page
    admin.goto("/jobs")
    page.get_by_label("Training file").select_option(training_file)
    page.get_by_role("button", name="Start fine-tuning").click()
    page.wait_for_url("**/console/jobs/ftjob-*")
    expect(page.locator("#status")).to_have_text("queued")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#events")).to_contain_text("Job cancelled")
    job_id = page.url.rsplit("/", 1)[1]
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "cancelled"
