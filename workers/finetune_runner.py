"""Runs one attempt of a fine-tuning job: claim the row, train, write the adapter, register.

Idempotent: a second delivery of the same job finds it finished, cancelled or in another
worker's hands and does nothing. A delivery after the job was handed back (a worker's
graceful shutdown) or its worker was lost resumes from the last finished epoch when that
epoch's checkpoint is there (EpochSaver), else starts again. Files are written to a temporary
folder under adapters_dir and renamed into place before the adapter row exists, so a
registered adapter always has complete files.
"""

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from app.background.periodic import PeriodicThread
from app.db import get_sessionmaker
from app.engine.loader import (
    LoadedModel,
    context_window,
    load_base_model,
    model_name,
    training_autocast,
)
from app.files import service as files
from app.files.models import File
from app.finetune import lifecycle, parents
from app.finetune.lifecycle import OUT_OF_MEMORY, out_of_memory_message
from app.registry import service as registry
from app.registry.service import folder_bytes
from app.settings import get_settings
from app.status import TERMINAL, Status
from workers.dpo import DpoObjective, tokenize_pair
from workers.holdout import Split, split_validation
from workers.training import (
    EpochMetrics,
    ResumeState,
    SftObjective,
    StepMetrics,
    TrainConfig,
    TrainingSetupError,
    TrainingStopped,
    TrainResult,
    adapter_shape,
    config_from_hyperparameters,
    parameter_count,
    resolve_hyperparameters,
    tokenize_chat,
    train_objective,
)

log = logging.getLogger(__name__)

MAX_VALID_EXAMPLES = 1000  # per-epoch validation loss (the per-step one uses a sample)
# Epochs besides the selected one whose adapters are kept as servable checkpoints (OpenAI
# keeps the last three epochs: two checkpoints and the final model).
KEPT_EPOCH_CHECKPOINTS = 2


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat(job_id: str, attempt: int, interval_s: float) -> PeriodicThread:
    """Refreshes the job's heartbeat from a thread, so slow steps never look like a death;
    a dead process stops it, which is exactly what the reaper looks for. It stops by itself
    once the job is no longer this attempt's."""
    return PeriodicThread("job heartbeat", lambda: lifecycle.heartbeat(job_id, attempt), interval_s)


def _load_file(tenant: str, file_id: str) -> tuple[File, list[dict[str, Any]]]:
    settings = get_settings()
    with get_sessionmaker()() as session:
        row = files.get_file(session, tenant, file_id)
        return row, files.read_examples(row, settings.files_dir)


def adapter_name(base: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{suffix or ''}:{job_id}"


RESUME_FILE = "training_state.pt"
INDEX_FILE = "index.json"


def epochs_folder(adapters_dir: Path, job_id: str) -> Path:
    return adapters_dir / f".epochs-{job_id}"


def discard_epochs(adapters_dir: Path, job_id: str) -> None:
    shutil.rmtree(epochs_folder(adapters_dir, job_id), ignore_errors=True)


@dataclass(frozen=True)
class SavedEpoch:
    """An epoch's adapter saved in the job's epochs folder (not registered, not servable
    until `EpochSaver.publish` moves it into place)."""

    epoch: int
    step: int
    folder: Path
    metrics: dict[str, Any]  # its last logged step's, with the epoch's validation loss

    def index_entry(self) -> list[Any]:
        """As index.json lists it: [epoch, step, folder name, metrics]."""
        return [self.epoch, self.step, self.folder.name, self.metrics]

    @classmethod
    def from_index_entry(cls, staging: Path, entry: list[Any]) -> "SavedEpoch":
        epoch, step, folder, metrics = entry
        return cls(epoch, step, staging / folder, metrics)


@dataclass(frozen=True)
class Manifest:
    """What an adapter is and how it was made: manifest.json beside its weights and the
    adapter row's manifest. The final model's says which epoch it holds (`selected`); an
    earlier epoch's checkpoint says which it is (`checkpoint`) instead."""

    name: str
    job_id: str
    base_model: str
    base_model_source: str
    hyperparameters: dict[str, Any]
    seed: int
    training_file: dict[str, str]
    validation_file: dict[str, str] | None
    data_sha256: str
    metrics: dict[str, Any]
    parent: dict[str, Any] | None
    method: str
    validation: dict[str, Any]
    selected: dict[str, Any] | None = None
    checkpoint: dict[str, int] | None = None

    def for_checkpoint(self, name: str, saved: SavedEpoch) -> "Manifest":
        """An earlier epoch's manifest: the final model's, with its own name and metrics."""
        return replace(
            self,
            name=name,
            metrics=saved.metrics,
            selected=None,
            checkpoint={"epoch": saved.epoch, "step": saved.step},
        )

    def as_dict(self) -> dict[str, Any]:
        """As written to JSON: `selected` only on the final model, `checkpoint` only on an
        earlier epoch's."""
        out = asdict(self)
        for key in ("selected", "checkpoint"):
            if out[key] is None:
                del out[key]
        return out


class EpochSaver:
    """Saves the adapter at the end of every epoch into the job's epochs folder, keeping the
    latest few, and beside the latest one the trainer's state (weights, optimizer moments,
    schedule, RNG, best epoch so far) so a later attempt of the job can resume there;
    `publish` moves the latest ones other than the selected epoch (which is the final model)
    into place once the final adapter exists. The folder outlives an attempt that was
    handed back or lost, and is only read back for the same training (`fingerprint`: the
    config and the data); nothing under it is ever registered, and it goes when the job
    ends (run_job)."""

    def __init__(self, adapters_dir: Path, job_id: str, fingerprint: dict[str, Any]) -> None:
        self.adapters_dir, self.job_id = adapters_dir, job_id
        self.staging = epochs_folder(adapters_dir, job_id)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back
        self.saved: list[SavedEpoch] = []
        self.resume_from: Path | None = None
        index = self._index()
        if index is not None and index.get("fingerprint") == self.fingerprint:
            self.saved = [SavedEpoch.from_index_entry(self.staging, e) for e in index["saved"]]
            self.resume_from = self.staging / index["resume"]

    def _index(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.staging / INDEX_FILE).read_text())
        except (OSError, ValueError):
            return None

    def resume_state(self) -> ResumeState | None:
        """The state saved at the end of the last finished epoch of an earlier attempt."""
        if self.resume_from is None:
            return None
        try:
            return ResumeState.load(self.resume_from / RESUME_FILE)
        except Exception:  # unreadable: train from the start instead
            log.warning("job %s: unreadable training state, starting again", self.job_id)
            return None

    def __call__(self, ended: EpochMetrics, model: Any, last: StepMetrics | None) -> None:
        folder = self.staging / f"step-{ended.step}"
        model.save_pretrained(str(folder), safe_serialization=True)
        metrics = {
            **(_metrics(last) if last else {}),
            "epoch": ended.epoch,
            "step": ended.step,
            "epoch_valid_loss": ended.valid_loss,
        }
        self.saved.append(SavedEpoch(ended.epoch, ended.step, folder, metrics))
        # One more than kept, in case the selected epoch is among the latest.
        while len(self.saved) > KEPT_EPOCH_CHECKPOINTS + 1:
            shutil.rmtree(self.saved.pop(0).folder, ignore_errors=True)

    def checkpoint(self, state: ResumeState) -> None:
        """After __call__ for the same epoch: the trainer's state beside its adapter, then
        the index that points at it (renamed into place, so a reader sees old or new)."""
        folder = self.staging / f"step-{state.step}"
        state.save(folder / RESUME_FILE)
        index = {
            "fingerprint": self.fingerprint,
            "saved": [saved.index_entry() for saved in self.saved],
            "resume": folder.name,
        }
        tmp = self.staging / f"{INDEX_FILE}.tmp"
        tmp.write_text(json.dumps(index))
        os.replace(tmp, self.staging / INDEX_FILE)
        for saved in self.saved:  # only the newest state is ever resumed from
            if saved.folder != folder:
                (saved.folder / RESUME_FILE).unlink(missing_ok=True)

    def publish(
        self, manifest: Manifest, selected_epoch: int | None
    ) -> list[lifecycle.AdapterFiles]:
        """The kept earlier epochs, in place beside the final model (`manifest` is its)."""
        kept = [s for s in self.saved if s.epoch != selected_epoch][-KEPT_EPOCH_CHECKPOINTS:]
        published = []
        for saved in kept:
            own = manifest.for_checkpoint(f"{manifest.name}:ckpt-step-{saved.step}", saved)
            final = _put_in_place(
                saved.folder, own, self.adapters_dir / f"{self.job_id}-step-{saved.step}"
            )
            published.append(
                lifecycle.AdapterFiles(
                    name=own.name,
                    path=final.name,
                    bytes=folder_bytes(final),
                    step=saved.step,
                    metrics=saved.metrics,
                    manifest=own.as_dict(),
                )
            )
        return published


def run_job(job_id: str) -> None:
    settings = get_settings()
    claim = lifecycle.claim(
        job_id, worker_name(), settings.job_heartbeat_timeout_s, settings.job_max_attempts
    )
    if claim is None:
        log.info("job %s: nothing to run", job_id)
        return
    try:
        _run_claimed(claim)
    finally:
        # Kept for the next attempt while the job is queued or running again (handed back,
        # lost lease); gone once it succeeded, failed or was cancelled.
        if lifecycle.current_status(job_id) in TERMINAL:
            discard_epochs(settings.adapters_dir, job_id)


def _run_claimed(claim: lifecycle.Claim) -> None:
    job_id = claim.job_id
    settings = get_settings()
    interval = max(0.2, settings.job_heartbeat_timeout_s / 4)
    with heartbeat(claim.job_id, claim.attempt, interval):
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
        except ModelUnavailable as exc:
            lifecycle.fail(
                job_id, "model_not_available", str(exc), param="model", attempt=claim.attempt
            )
        except TrainingSetupError as exc:
            # Only the trainer's own refusals of this job's data or settings (an example it
            # cannot train on, a DPO job without preference pairs, LoRA target modules the
            # model lacks): another attempt would fail the same way. Any other ValueError
            # (a library's, a saved state of another shape) is a training_error below.
            lifecycle.fail(job_id, "invalid_training_setup", str(exc), attempt=claim.attempt)
        except (MemoryError, torch.OutOfMemoryError):
            # Another attempt would run out of memory the same way: fail now, not in a loop.
            log.error("job %s failed: out of memory", job_id)
            lifecycle.fail(
                job_id, OUT_OF_MEMORY, out_of_memory_message(None), attempt=claim.attempt
            )
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
    job = _prepare(claim)
    saver = EpochSaver(get_settings().adapters_dir, claim.job_id, _fingerprint(claim, job))
    result = _train(claim, job, saver)
    _register(claim, job, saver, result)


@dataclass(frozen=True)
class PreparedJob:
    """A claimed job read and checked, ready for its first step: the base model, the
    adapter it starts from, its data (tokenised into `objective`) and resolved settings."""

    loaded: LoadedModel
    parent: "ParentAdapter | None"
    train_file: File
    valid_file: File | None
    split: Split
    hp: dict[str, Any]  # resolved: no "auto" left
    config: TrainConfig
    objective: SftObjective | DpoObjective


def _prepare(claim: lifecycle.Claim) -> PreparedJob:
    """Load the files and the base model, resolve the settings, tokenise the data, and say
    so in the job's events. Raises ModelUnavailable, TrainingSetupError."""
    settings = get_settings()
    train_file, train_examples = _load_file(claim.tenant, claim.training_file)
    valid_file, valid_examples = None, []
    if claim.validation_file:
        valid_file, valid_examples = _load_file(claim.tenant, claim.validation_file)
    loaded = load_base_model(settings.base_model, settings.model_cache, settings.device)
    parent = _parent_adapter(claim, loaded.name)
    if parent is None and claim.model != loaded.name:
        raise ModelUnavailable(f"This worker serves '{loaded.name}', not '{claim.model}'.")
    split = split_validation(train_examples, valid_examples, claim.seed)
    requested = dict(claim.hyperparameters)
    if parent is not None:  # the parent's LoRA shape (the API refused other values)
        shape = adapter_shape(str(parent.path))
        requested.update(r=shape["r"], alpha=shape["alpha"], target_modules=shape["target_modules"])
        requested.setdefault("dropout", shape["dropout"])
    hp = resolve_hyperparameters(
        requested, len(split.train), parameter_count(loaded.model), claim.method
    )
    lifecycle.set_resolved_hyperparameters(claim.job_id, claim.attempt, hp)
    window = context_window(loaded.model)
    config = config_from_hyperparameters(
        hp, claim.seed, window, str(parent.path) if parent is not None else None
    )
    config = replace(config, microbatch_tokens=settings.train_microbatch_tokens)
    # SFT only: DPO's loss is a small difference of summed log-probabilities, and its
    # accuracy under autocast has not been measured (docs/benchmarks.md).
    if claim.method != "dpo":
        autocast = training_autocast(settings.train_autocast, loaded.device)
        config = replace(config, autocast=autocast)
    if parent is not None:
        lifecycle.event(claim.job_id, f"Starting from the weights of {parent.name}")
    if config.autocast is not None:
        lifecycle.event(claim.job_id, "Forward passes run under bf16 autocast (TRAIN_AUTOCAST)")
    objective = _objective(claim.method, loaded, split, hp, window, config.microbatch_tokens)
    lifecycle.event(claim.job_id, split.note)
    if config.early_stopping_patience and not objective.valid:
        lifecycle.event(
            claim.job_id,
            "early_stopping_patience is ignored: there are no validation examples",
            level="warn",
        )
    what = f"preference pairs (DPO, beta {hp['beta']:g})" if claim.method == "dpo" else "examples"
    lifecycle.event(
        claim.job_id,
        f"Training {len(objective.train)} {what} for {config.n_epochs} epoch(s), batch size "
        f"{config.batch_size}, learning rate {config.learning_rate:g}, LoRA r={config.r}"
        + (f" (auto: {hp['auto_reason']})" if hp.get("auto") else ""),
    )
    return PreparedJob(loaded, parent, train_file, valid_file, split, hp, config, objective)


def _train(claim: lifecycle.Claim, job: PreparedJob, saver: EpochSaver) -> TrainResult:
    """Train, from the last finished epoch of an earlier attempt when `saver` holds one,
    reporting steps and epochs as the job's events and saving every epoch while the job is
    still this attempt's. Raises TrainingStopped when it no longer is (cancelled, lost)."""
    config, n_valid = job.config, len(job.objective.valid)
    resume = saver.resume_state()
    if resume is not None:
        lifecycle.event(
            claim.job_id,
            f"Resuming after epoch {resume.epoch}/{config.n_epochs} (step {resume.step}) from "
            "its checkpoint: weights, optimizer state and schedule restored; the finished "
            "epochs are not trained again",
            data={"epoch": resume.epoch, "step": resume.step},
        )

    def report(m: StepMetrics) -> bool:
        text = f"Step {m.step}/{m.total_steps}: training loss={m.train_loss:.4f}"
        if m.valid_loss is not None:
            text += f", validation loss={m.valid_loss:.4f}"
        if "reward_accuracy" in m.extra:
            text += (
                f", reward accuracy={m.extra['reward_accuracy']:.2f}, "
                f"reward margin={m.extra['reward_margin']:.4f}"
            )
        lifecycle.event(claim.job_id, text, type="metrics", data=_metrics(m))
        return True

    def still_mine() -> bool:
        return lifecycle.should_continue(claim.job_id, claim.attempt)

    def on_epoch_end(ended: EpochMetrics, model: Any, last: StepMetrics | None) -> None:
        if ended.valid_loss is not None:
            lifecycle.event(
                claim.job_id,
                f"Epoch {ended.epoch}/{config.n_epochs} (step {ended.step}): validation "
                f"loss={ended.valid_loss:.4f} on {n_valid} examples",
                data={
                    "epoch": ended.epoch,
                    "step": ended.step,
                    "epoch_valid_loss": ended.valid_loss,
                },
            )
        if still_mine():  # a job handed back meanwhile may be another attempt's: its folder
            saver(ended, model, last)

    def on_checkpoint(state: ResumeState) -> None:
        if still_mine():  # a job handed back meanwhile may already be another attempt's
            saver.checkpoint(state)

    return train_objective(
        job.loaded.model,
        job.objective,
        config,
        report=report,
        should_continue=still_mine,
        on_epoch_end=on_epoch_end,
        on_checkpoint=on_checkpoint,
        resume=resume,
    )


def _register(
    claim: lifecycle.Claim, job: PreparedJob, saver: EpochSaver, result: TrainResult
) -> None:
    """Write the final adapter and the kept earlier epochs in place, then register them and
    mark the job succeeded in one transaction; when the job stopped being this attempt's
    meanwhile, remove them again and raise TrainingStopped."""
    settings = get_settings()
    manifest = _manifest(claim, job, result)
    selected = result.selected
    if selected is not None and result.epochs and selected.epoch != result.epochs[-1].epoch:
        lifecycle.event(
            claim.job_id,
            f"Selected epoch {selected.epoch} (step {selected.step}) as the fine-tuned "
            f"model: {result.selection_reason}",
        )
    folder = _write_adapter(result.model, manifest, settings.adapters_dir, claim.job_id)
    final = lifecycle.AdapterFiles(
        name=manifest.name,
        path=folder.name,
        bytes=folder_bytes(folder),
        step=selected.step if selected else result.steps,
        metrics={
            **(_metrics(result.history[-1]) if result.history else {}),
            "full_valid_loss": selected.valid_loss if selected else None,
            "epoch": selected.epoch if selected else None,
            "step": selected.step if selected else result.steps,
        },
        manifest=manifest.as_dict(),
    )
    earlier = saver.publish(manifest, selected.epoch if selected else None)
    registered = lifecycle.succeed(
        claim,
        final=final,
        base_model=job.loaded.name,
        trained_tokens=result.trained_tokens,
        earlier=earlier,
        parent=job.parent.name if job.parent is not None else None,
    )
    if not registered:  # cancelled (or taken over) at the last moment: leave nothing
        for files in [final, *earlier]:
            shutil.rmtree(settings.adapters_dir / files.path, ignore_errors=True)
        raise TrainingStopped(result.steps)


def _fingerprint(claim: lifecycle.Claim, job: PreparedJob) -> dict[str, Any]:
    """What a saved training state is only valid for: the same training, on the same data."""
    return {
        "config": asdict(job.config),
        "method": claim.method,
        "beta": job.hp.get("beta"),
        "base_model": job.loaded.name,
        "training_file": job.train_file.sha256,
        "validation_file": job.valid_file.sha256 if job.valid_file else None,
        "train_items": len(job.objective.train),
    }


@dataclass(frozen=True)
class ParentAdapter:
    name: str
    path: Path
    lineage: dict[str, Any]


def _parent_adapter(claim: lifecycle.Claim, base_name: str) -> ParentAdapter | None:
    """The adapter a job named as its model (None for a base-model job). Raises
    ParentUnavailable when it is gone or was trained on another base."""
    if not parents.is_adapter_name(claim.model):
        return None
    settings = get_settings()
    with get_sessionmaker()() as session:
        row = registry.find_adapter(session, claim.tenant, claim.model)
        if row is None or model_name(row.base_model) != base_name:
            raise ParentUnavailable(
                f"Model '{claim.model}' is no longer available to train on "
                + ("(it was deleted)." if row is None else f"(its base is {row.base_model}).")
            )
        ref = registry.adapter_ref(row, settings.adapters_dir)
        return ParentAdapter(name=row.name, path=ref.path, lineage=parents.lineage(row))


class ModelUnavailable(Exception):
    """The job's model is not one this worker can train: another base model, or a parent
    adapter gone since the job was created. The job fails with model_not_available."""


class ParentUnavailable(ModelUnavailable):
    """The job's starting adapter was deleted (or moved to another base) after creation."""


def _objective(
    method: str,
    loaded: LoadedModel,
    split: Split,
    hp: dict[str, Any],
    window: int,
    microbatch_tokens: int | None,
) -> SftObjective | DpoObjective:
    """The loss the job minimises, over its tokenised training and validation data."""
    tok = loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    batch_size = int(hp["batch_size"])
    if method == "dpo":
        if any("preferred" not in e for e in split.train):
            raise TrainingSetupError("a DPO job needs a file of preference pairs")
        return DpoObjective(
            [tokenize_pair(tok, e, window) for e in split.train],
            [tokenize_pair(tok, e, window) for e in split.valid][:MAX_VALID_EXAMPLES],
            beta=float(hp["beta"]),
            batch_size=batch_size,
            pad_id=pad_id,
            device=loaded.device,
            microbatch_tokens=microbatch_tokens,
        )
    return SftObjective(
        [tokenize_chat(tok, e["messages"], window) for e in split.train],
        [tokenize_chat(tok, e["messages"], window) for e in split.valid][:MAX_VALID_EXAMPLES],
        batch_size,
        pad_id,
        loaded.device,
        microbatch_tokens,
    )


def _manifest(claim: lifecycle.Claim, job: PreparedJob, result: TrainResult) -> Manifest:
    """The final model's manifest: what it is, how it was made, and which epoch it holds."""
    train_file, valid_file, selected = job.train_file, job.valid_file, result.selected
    data = train_file.sha256 + (valid_file.sha256 if valid_file else "")
    return Manifest(
        name=adapter_name(job.loaded.name, claim.suffix, claim.job_id),
        job_id=claim.job_id,
        base_model=job.loaded.name,
        base_model_source=get_settings().base_model,
        hyperparameters=job.hp,
        seed=claim.seed,
        training_file={"id": train_file.id, "sha256": train_file.sha256},
        validation_file=(
            {"id": valid_file.id, "sha256": valid_file.sha256} if valid_file else None
        ),
        data_sha256=hashlib.sha256(data.encode()).hexdigest(),
        metrics={
            **(_metrics(result.history[-1]) if result.history else {}),
            "steps": result.steps,
            "trained_tokens": result.trained_tokens,
            "train_seconds": round(result.train_seconds, 3),
        },
        parent=job.parent.lineage if job.parent is not None else None,
        method=claim.method,
        validation={
            "source": job.split.source,
            "examples": len(job.objective.valid),
            "note": job.split.note,
        },
        selected={
            "epoch": selected.epoch if selected else None,
            "step": selected.step if selected else None,
            "valid_loss": selected.valid_loss if selected else None,
            "reason": result.selection_reason,
            "stopped_early": result.stopped_early,
            "epochs": [asdict(e) for e in result.epochs],
        },
    )


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
        **m.extra,
    }


def _write_adapter(model: Any, manifest: Manifest, adapters_dir: Path, job_id: str) -> Path:
    """safetensors + adapter_config.json + manifest.json, complete before it is visible."""
    adapters_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{job_id}-", dir=adapters_dir))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        return _put_in_place(tmp, manifest, adapters_dir / job_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _put_in_place(folder: Path, manifest: Manifest, final: Path) -> Path:
    """Adds manifest.json to a folder of saved weights and renames it to `final` in one step,
    replacing what an earlier attempt that died before registering may have left there."""
    (folder / "manifest.json").write_text(json.dumps(manifest.as_dict(), indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(folder, final)
    return final
