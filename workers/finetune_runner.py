"""Runs one attempt of a fine-tuning job: claim the row, train, write the adapter, register.

Idempotent: a second delivery of the same job finds it finished, cancelled or in another
worker's hands and does nothing; a delivery after a lost worker restarts it from scratch.
Files are written to a temporary folder under adapters_dir and renamed into place before the
adapter row exists, so a registered adapter always has complete files.
"""

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from app.db import get_sessionmaker
from app.engine.loader import context_window, load_base_model
from app.files import service as files
from app.files.models import File
from app.finetune import lifecycle
from app.registry.service import folder_bytes
from app.settings import get_settings
from app.status import Status
from workers.training import (
    ExampleError,
    StepMetrics,
    TrainingStopped,
    TrainResult,
    config_from_hyperparameters,
    resolve_hyperparameters,
    tokenize_chat,
    train_lora,
)

log = logging.getLogger(__name__)

MAX_VALID_EXAMPLES = 64  # validation loss on a sample, so it stays cheap per logged step
# Epochs before the last whose adapters are kept as servable checkpoints (OpenAI keeps the
# last three epochs: these two and the final model).
KEPT_EPOCH_CHECKPOINTS = 2


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Refreshes the job's heartbeat from a thread, so slow steps never look like a death;
    a dead process stops it, which is exactly what the reaper looks for."""

    def __init__(self, job_id: str, attempt: int, interval_s: float) -> None:
        self.job_id, self.attempt, self.interval_s = job_id, attempt, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not lifecycle.heartbeat(self.job_id, self.attempt):
                    return
            except Exception as exc:  # noqa: BLE001 - the database may blip; keep trying
                log.warning("heartbeat failed: %s", type(exc).__name__)


def _load_file(tenant: str, file_id: str) -> tuple[File, list[dict[str, Any]]]:
    settings = get_settings()
    with get_sessionmaker()() as session:
        row = files.get_file(session, tenant, file_id)
        return row, files.read_examples(row, settings.files_dir)


def adapter_name(base: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{suffix or ''}:{job_id}"


class EpochSaver:
    """Saves the adapter at the end of the last few epochs before the final one into a
    staging folder; `publish` moves them into place once the final adapter exists. Nothing
    under the staging folder is ever registered: a failed or cancelled job leaves nothing."""

    def __init__(self, adapters_dir: Path, job_id: str, n_epochs: int) -> None:
        adapters_dir.mkdir(parents=True, exist_ok=True)
        self.adapters_dir, self.job_id = adapters_dir, job_id
        self.first_kept = n_epochs - KEPT_EPOCH_CHECKPOINTS
        self.staging = Path(tempfile.mkdtemp(prefix=f".tmp-{job_id}-epochs-", dir=adapters_dir))
        self.saved: list[tuple[int, int, Path, dict[str, Any]]] = []  # epoch, step, folder

    def __call__(self, epoch: int, step: int, model: Any, last: StepMetrics | None) -> None:
        if epoch < self.first_kept:
            return
        folder = self.staging / f"step-{step}"
        model.save_pretrained(str(folder), safe_serialization=True)
        metrics = {**(_metrics(last) if last else {}), "epoch": epoch, "step": step}
        self.saved.append((epoch, step, folder, metrics))

    def publish(self, final_name: str, manifest: dict[str, Any]) -> list[lifecycle.AdapterFiles]:
        published = []
        for epoch, step, staged, metrics in self.saved:
            name = f"{final_name}:ckpt-step-{step}"
            own = {**manifest, "name": name, "checkpoint": {"epoch": epoch, "step": step}}
            own["metrics"] = metrics
            final = _put_in_place(staged, own, self.adapters_dir / f"{self.job_id}-step-{step}")
            published.append(
                lifecycle.AdapterFiles(
                    name=name,
                    path=final.name,
                    bytes=folder_bytes(final),
                    step=step,
                    metrics=metrics,
                    manifest=own,
                )
            )
        return published

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def run_job(job_id: str) -> None:
    settings = get_settings()
    claim = lifecycle.claim(
        job_id, worker_name(), settings.job_heartbeat_timeout_s, settings.job_max_attempts
    )
    if claim is None:
        log.info("job %s: nothing to run", job_id)
        return
    interval = max(0.2, settings.job_heartbeat_timeout_s / 4)
    with Heartbeat(claim.job_id, claim.attempt, interval):
        try:
            _train_and_register(claim)
        except TrainingStopped as stop:
            status = lifecycle.current_status(job_id)
            if status == Status.CANCELLED:
                lifecycle.event(
                    job_id,
                    f"Training stopped at step {stop.step}: the job was cancelled",
                    data={"step": stop.step},
                )
            else:
                log.warning("job %s attempt %s lost its lease", job_id, claim.attempt)
        except (ExampleError, ValueError) as exc:
            lifecycle.fail(job_id, "invalid_training_setup", str(exc), attempt=claim.attempt)
        except Exception as exc:
            if _disk_full(exc):
                log.error("job %s failed: no space left while saving", job_id)
                lifecycle.fail(
                    job_id,
                    "disk_full",
                    "No space left on the device while saving the adapter; nothing was "
                    "registered. Free space under DATA_DIR and create the job again.",
                    attempt=claim.attempt,
                )
                return
            log.exception("job %s failed", job_id)
            lifecycle.fail(
                job_id,
                "training_error",
                f"Training failed: {type(exc).__name__}: {str(exc)[:500]}",
                attempt=claim.attempt,
            )


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC, raised directly or wrapped by a library (safetensors words it as text)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _train_and_register(claim: lifecycle.Claim) -> None:
    settings = get_settings()
    train_file, train_examples = _load_file(claim.tenant, claim.training_file)
    valid_file, valid_examples = None, []
    if claim.validation_file:
        valid_file, valid_examples = _load_file(claim.tenant, claim.validation_file)
    loaded = load_base_model(settings.base_model, settings.model_cache, settings.device)
    if claim.model != loaded.name:
        lifecycle.fail(
            claim.job_id,
            "model_not_available",
            f"This worker serves '{loaded.name}', not '{claim.model}'.",
            param="model",
            attempt=claim.attempt,
        )
        return
    hp = resolve_hyperparameters(claim.hyperparameters, len(train_examples))
    lifecycle.set_resolved_hyperparameters(claim.job_id, claim.attempt, hp)
    window = context_window(loaded.model)
    config = config_from_hyperparameters(hp, claim.seed, window)
    tok = loaded.tokenizer
    train = [tokenize_chat(tok, e["messages"], window) for e in train_examples]
    valid = [tokenize_chat(tok, e["messages"], window) for e in valid_examples][:MAX_VALID_EXAMPLES]
    lifecycle.event(
        claim.job_id,
        f"Training {len(train)} examples for {config.n_epochs} epoch(s), batch size "
        f"{config.batch_size}, learning rate {config.learning_rate:g}, LoRA r={config.r}",
    )

    def report(m: StepMetrics) -> bool:
        text = f"Step {m.step}/{m.total_steps}: training loss={m.train_loss:.4f}"
        if m.valid_loss is not None:
            text += f", validation loss={m.valid_loss:.4f}"
        lifecycle.event(claim.job_id, text, type="metrics", data=_metrics(m))
        return True

    saver = EpochSaver(settings.adapters_dir, claim.job_id, config.n_epochs)
    try:
        result = train_lora(
            loaded.model,
            tok,
            train,
            config,
            valid=valid,
            report=report,
            should_continue=lambda: lifecycle.should_continue(claim.job_id, claim.attempt),
            on_epoch_end=saver,
        )
        name = adapter_name(loaded.name, claim.suffix, claim.job_id)
        manifest = _manifest(name, claim, loaded.name, hp, train_file, valid_file, result)
        folder = _write_adapter(result.model, manifest, settings.adapters_dir, claim.job_id)
        final = lifecycle.AdapterFiles(
            name=name,
            path=folder.name,
            bytes=folder_bytes(folder),
            step=result.steps,
            metrics={
                **(_metrics(result.history[-1]) if result.history else {}),
                "full_valid_loss": result.final_valid_loss,
            },
            manifest=manifest,
        )
        earlier = saver.publish(name, manifest)
        registered = lifecycle.succeed(
            claim,
            final=final,
            base_model=loaded.name,
            trained_tokens=result.trained_tokens,
            earlier=earlier,
        )
        if not registered:  # cancelled (or taken over) at the last moment: leave nothing
            for files in [final, *earlier]:
                shutil.rmtree(settings.adapters_dir / files.path, ignore_errors=True)
            raise TrainingStopped(result.steps)
    finally:
        saver.discard()


def _manifest(
    name: str,
    claim: lifecycle.Claim,
    base_model: str,
    hp: dict[str, Any],
    train_file: File,
    valid_file: File | None,
    result: TrainResult,
) -> dict[str, Any]:
    """What the adapter is and how it was made, written beside its weights."""
    data = train_file.sha256 + (valid_file.sha256 if valid_file else "")
    return {
        "name": name,
        "job_id": claim.job_id,
        "base_model": base_model,
        "base_model_source": get_settings().base_model,
        "hyperparameters": hp,
        "seed": claim.seed,
        "training_file": {"id": train_file.id, "sha256": train_file.sha256},
        "validation_file": (
            {"id": valid_file.id, "sha256": valid_file.sha256} if valid_file else None
        ),
        "data_sha256": hashlib.sha256(data.encode()).hexdigest(),
        "metrics": {
            **(_metrics(result.history[-1]) if result.history else {}),
            "steps": result.steps,
            "trained_tokens": result.trained_tokens,
            "train_seconds": round(result.train_seconds, 3),
        },
    }


def _metrics(m: StepMetrics) -> dict[str, Any]:
    return {
        "step": m.step,
        "total_steps": m.total_steps,
        "epoch": m.epoch,
        "train_loss": m.train_loss,
        "valid_loss": m.valid_loss,
        "learning_rate": m.learning_rate,
        "tokens_per_second": m.tokens_per_second,
        "eta_seconds": m.eta_seconds,
    }


def _write_adapter(model: Any, manifest: dict[str, Any], adapters_dir: Path, job_id: str) -> Path:
    """safetensors + adapter_config.json + manifest.json, complete before it is visible."""
    adapters_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{job_id}-", dir=adapters_dir))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        return _put_in_place(tmp, manifest, adapters_dir / job_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _put_in_place(folder: Path, manifest: dict[str, Any], final: Path) -> Path:
    """Adds manifest.json to a folder of saved weights and renames it to `final` in one step,
    replacing what an earlier attempt that died before registering may have left there."""
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(folder, final)
    return final
