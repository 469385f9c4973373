"""The loss curve of a fine-tuning job, drawn from its metrics events (while it runs, too)."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.charts.svg import line_chart
from app.finetune.models import FineTuningJob, JobEvent


def loss_curve_svg(session: Session, job: FineTuningJob) -> str:
    rows = session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job.id, JobEvent.type == "metrics")
        .order_by(JobEvent.id)
    )
    train: list[tuple[float, float]] = []
    valid: list[tuple[float, float]] = []
    total_steps = None
    for row in rows:
        data = row.data or {}
        step = data.get("step")
        if not isinstance(step, int):
            continue
        total_steps = data.get("total_steps", total_steps)
        if isinstance(data.get("train_loss"), int | float):
            train.append((step, float(data["train_loss"])))
        if isinstance(data.get("valid_loss"), int | float):
            valid.append((step, float(data["valid_loss"])))
    series = {"training loss": train}
    if valid:
        series["validation loss"] = valid
    done = f", {train[-1][0]} of {total_steps} steps" if train and total_steps else ""
    return line_chart(
        series,
        title=f"Fine-tuning job {job.id} ({job.status}{done})",
        x_label="step",
        y_label="loss (mean over target tokens)",
        empty="No training steps logged yet.",
    )
