"""The LoRA trainer: chat examples in, a trained peft model and metrics out.

No database and no Celery here: the job runner (workers/finetune_runner.py) feeds it examples
and a `StepReporter`, and `bench/train.py` calls it directly. Prompts are rendered with
app.engine.prompts, the same functions the server uses, so training and serving tokenise
every prompt identically; the loss covers only assistant tokens (weight 1).
"""

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from app.engine.lora_targets import lora_target_names, unusable_targets
from app.engine.prompts import encode, render_chat
from app.finetune import auto_settings
from app.finetune.auto_settings import BASE_LEARNING_RATE

IGNORE = -100  # label for tokens that carry no loss (prompt, padding, weight-0 turns)
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


class TrainingStopped(Exception):
    """Raised inside the loop when the reporter says stop (cancel, lost lease)."""

    def __init__(self, step: int = 0) -> None:
        super().__init__(f"stopped at step {step}")
        self.step = step


class TrainingSetupError(ValueError):
    """The job's data or settings cannot be trained as asked: another attempt would fail
    the same way (the worker fails the job with invalid_training_setup)."""


class ExampleError(TrainingSetupError):
    """An example that cannot be trained on (e.g. a chat template that does not extend)."""


@dataclass(frozen=True)
class TrainConfig:
    n_epochs: int
    batch_size: int
    learning_rate: float
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Sequence[str] = tuple(DEFAULT_TARGET_MODULES)
    seed: int = 0
    max_length: int = 2048
    # Examples per "megabatch" sorted by length before cutting batches: big enough that
    # neighbours have similar lengths, small enough that batch order stays random.
    bucket_batches: int = 16
    # Stop after this many epochs whose validation loss is no better than the best so far
    # (None: train every epoch). Needs validation examples.
    early_stopping_patience: int | None = None
    # A saved adapter folder to start from (training on top of an adapter): its weights and
    # LoRA shape replace a fresh initialisation.
    init_adapter: str | None = None
    # Forward passes under torch.autocast to this dtype, by name ("bfloat16"; None: the
    # weights' own dtype). The weights, gradients and optimiser state stay as loaded. A name,
    # not a torch.dtype: the config is written out as JSON with the adapter.
    autocast: str | None = None
    # Token positions (rows x padded width) one forward pass may hold: a step's batch is cut
    # into micro-batches under it and their gradients accumulated, so the step is the same
    # as one forward over the whole batch but peak memory follows this, not the batch size
    # (None: the whole batch in one forward). The worker sets TRAIN_MICROBATCH_TOKENS.
    microbatch_tokens: int | None = None


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)

    @property
    def loss_positions(self) -> int:
        """The labelled tokens the loss counts: a token is predicted from the one before it,
        so a label on the first token counts for nothing."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


@dataclass
class StepMetrics:
    step: int
    total_steps: int
    epoch: int
    train_loss: float
    learning_rate: float
    tokens_per_second: float
    eta_seconds: float
    valid_loss: float | None = None
    extra: dict[str, float] = field(default_factory=dict)  # the objective's own (DPO's)


@dataclass(frozen=True)
class EpochMetrics:
    """The end of one epoch: the last logged training loss and, with validation examples,
    the validation loss over all of them."""

    epoch: int
    step: int
    train_loss: float
    valid_loss: float | None


@dataclass
class TrainResult:
    model: PeftModel  # holds the selected epoch's weights
    steps: int
    trained_tokens: int  # non-padding tokens seen, all epochs
    train_seconds: float
    final_train_loss: float
    final_valid_loss: float | None
    history: list[StepMetrics] = field(default_factory=list)
    epochs: list[EpochMetrics] = field(default_factory=list)
    selected: EpochMetrics | None = None  # the epoch whose weights `model` holds
    stopped_early: bool = False

    @property
    def selection_reason(self) -> str:
        if self.selected is None:
            return "no epoch finished"
        last = self.epochs[-1]
        if self.selected.valid_loss is None:
            return f"the last epoch ({last.epoch}): no validation examples to compare epochs"
        text = (
            f"lowest validation loss ({self.selected.valid_loss:.4f}) of {len(self.epochs)} "
            f"epoch(s)"
        )
        if self.selected.epoch != last.epoch:
            text += f"; the last epoch ({last.epoch}) had {last.valid_loss:.4f}"
        if self.stopped_early:
            text += f"; stopped early after epoch {last.epoch}"
        return text

    @property
    def tokens_per_second(self) -> float:
        return self.trained_tokens / self.train_seconds if self.train_seconds > 0 else 0.0


@dataclass
class LoopState:
    """What the training loop carries from one epoch to the next: counters, the metrics so
    far and the best epoch chosen so far. The model, optimiser and schedule hold the rest."""

    epoch: int = 0  # epochs finished
    step: int = 0
    tokens: int = 0  # non-padding tokens trained on
    elapsed: float = 0.0  # seconds in training steps (validation excluded)
    last_loss: float = math.nan  # the last logged training loss
    last_valid: float | None = None  # the last logged (sampled) validation loss
    history: list[StepMetrics] = field(default_factory=list)
    epochs: list[EpochMetrics] = field(default_factory=list)
    best: EpochMetrics | None = None  # the epoch of lowest validation loss so far
    best_loss: float = math.inf  # its unrounded validation loss
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # its LoRA weights
    since_best: int = 0  # epochs since the best one, for early stopping
    stopped_early: bool = False

    def copy(self) -> "LoopState":
        """A state of its own: the metric lists copied (the tensors are never changed in
        place, only replaced)."""
        plain = {f.name: getattr(self, f.name) for f in fields(LoopState)}
        return LoopState(**{**plain, "history": list(self.history), "epochs": list(self.epochs)})


@dataclass(kw_only=True)
class ResumeState(LoopState):
    """The loop's state at the end of an epoch with what else the next epoch depends on:
    enough for another process to go on from the next epoch as if it had never stopped (the
    optimizer's moments, the schedule, the dropout RNG; the batch order is replayed from
    the seed)."""

    weights: dict[str, torch.Tensor]  # the trainable (LoRA) parameters
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    torch_rng: torch.Tensor

    def save(self, path: Path) -> None:
        """Written whole or not at all (a temporary file renamed into place). One flat dict
        of plain values and tensors, so it loads with `weights_only=True`."""
        plain = {**self.__dict__}
        plain["history"] = [asdict(m) for m in self.history]
        plain["epochs"] = [asdict(e) for e in self.epochs]
        plain["best"] = asdict(self.best) if self.best is not None else None
        tmp = path.with_name(path.name + ".tmp")
        torch.save(plain, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "ResumeState":
        plain = torch.load(path, weights_only=True)  # tensors and plain values only
        plain["history"] = [StepMetrics(**m) for m in plain["history"]]
        plain["epochs"] = [EpochMetrics(**e) for e in plain["epochs"]]
        plain["best"] = EpochMetrics(**plain["best"]) if plain["best"] is not None else None
        return cls(**plain)


# A reporter gets each logged step's metrics; returning False stops training.
StepReporter = Callable[[StepMetrics], bool]
# Checked between steps (cheaply, every step): returning False stops training.
ShouldContinue = Callable[[], bool]
# Called at the end of every epoch, the last included: (that epoch's metrics, the model in
# training, the last logged step's metrics).
EpochEnd = Callable[[EpochMetrics, PeftModel, StepMetrics | None], None]
# Called at the end of every epoch after on_epoch_end, once the best epoch and early stopping
# are decided: what a later attempt needs to resume (see ResumeState). Save it before
# returning: its optimizer tensors are the live ones.
Checkpoint = Callable[[ResumeState], None]
# Validation loss per logged step is measured on at most this many examples, to stay cheap;
# the per-epoch loss that picks the best epoch uses all of them.
STEP_VALID_EXAMPLES = 64


def tokenize_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    max_length: int,
) -> TokenizedExample:
    """Token ids and labels for one conversation, built segment by segment.

    Each assistant turn is split at the exact text the server renders as the prompt
    (`render_chat(history, add_generation_prompt=True)`), so the prompt part is tokenised
    exactly as it is at serving time, and the assistant part (content and end-of-turn
    marker) is what the model learns to produce.
    """
    ids: list[int] = []
    labels: list[int] = []
    consumed = ""
    last_target_end = 0
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt_text = render_chat(tokenizer, plain[:i], add_generation_prompt=True)
        full_text = render_chat(tokenizer, plain[: i + 1], add_generation_prompt=False)
        if not prompt_text.startswith(consumed) or not full_text.startswith(prompt_text):
            raise ExampleError("the chat template does not render turns as a growing prefix")
        prompt_ids = encode(tokenizer, prompt_text[len(consumed) :])
        answer_ids = encode(tokenizer, full_text[len(prompt_text) :])
        ids += prompt_ids
        labels += [IGNORE] * len(prompt_ids)
        trained = message.get("weight", 1) != 0
        ids += answer_ids
        labels += answer_ids if trained else [IGNORE] * len(answer_ids)
        consumed = full_text
        if trained:
            last_target_end = len(ids)
    # Nothing after the last trained turn can carry loss: drop it, and cut to the window.
    ids, labels = ids[:last_target_end][:max_length], labels[:last_target_end][:max_length]
    return TokenizedExample(ids, labels)


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, bucket_batches: int = 16
) -> list[list[int]]:
    """Indices in batches of similar length, so little compute goes to padding.

    Shuffle, cut into megabatches of `bucket_batches * batch_size`, sort each by length,
    cut batches, then shuffle the batch order: still a random order of examples per epoch.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = max(1, bucket_batches) * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def token_budget_chunks(
    order: Sequence[int],
    lengths: Sequence[int],
    budget: int | None,
    *,
    rows_per_item: int = 1,
    max_items: int | None = None,
) -> list[list[int]]:
    """`order` cut into consecutive chunks whose padded forward (rows x the widest item's
    length) stays within `budget` token positions, and of at most `max_items` items. An item
    over the budget on its own still gets a chunk of its own (the API refuses such data at
    job creation: app/finetune/memory.py). Sort `order` by length first to waste little on
    padding."""
    chunks: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        wider = max(width, lengths[i])
        full = max_items is not None and len(current) >= max_items
        over = budget is not None and (len(current) + 1) * rows_per_item * wider > budget
        if current and (full or over):
            chunks.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        width = wider
    if current:
        chunks.append(current)
    return chunks


def collate(
    examples: Sequence[TokenizedExample], pad_id: int, device: torch.device
) -> dict[str, Any]:
    """A right-padded batch, plus what the loss needs, worked out here on the host: the flat
    positions whose next token is labelled, those labels, and the counts. The training step
    then never waits on the device to learn a shape or a count."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        input_ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        attention[row, :n] = 1
    shifted = labels[:, 1:].reshape(-1)
    target_index = (shifted != IGNORE).nonzero().squeeze(1)
    return {
        "input_ids": input_ids.to(device, non_blocking=True),
        "labels": labels.to(device, non_blocking=True),
        "attention_mask": attention.to(device, non_blocking=True),
        "target_index": target_index.to(device, non_blocking=True),
        "target_labels": shifted[target_index].to(device, non_blocking=True),
        "targets": int(target_index.numel()),
        "tokens": int(attention.sum()),
    }


def target_loss_sum(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over the labelled positions, and how many there were (a sum,
    so the micro-batches of one step add up to the loss of the whole batch).

    The output projection (vocabulary-sized: a fifth of a small model's compute) is applied
    only at positions that carry a label, not to the whole padded batch. Models that post-
    process their logits (soft-capping, scaling) take the plain full-logits path.
    """
    causal = model.get_base_model() if isinstance(model, PeftModel) else model
    config = causal.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return causal_lm_loss_sum(logits, batch["labels"])
    hidden = causal.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    # Flat positions from collate (host-side), not a boolean mask: no device-to-host wait.
    flat = hidden[:, :-1].reshape(-1, hidden.size(-1)).index_select(0, batch["target_index"])
    logits = causal.get_output_embeddings()(flat)
    loss = torch.nn.functional.cross_entropy(
        logits.float(), batch["target_labels"], reduction="sum"
    )
    return loss, batch["targets"]


def causal_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over labelled positions, and how many there were."""
    shift_logits = logits[:, :-1, :].reshape(-1, logits.size(-1))
    shift_labels = labels[:, 1:].reshape(-1)
    count = int((shift_labels != IGNORE).sum())
    loss = torch.nn.functional.cross_entropy(
        shift_logits.float(), shift_labels, ignore_index=IGNORE, reduction="sum"
    )
    return loss, count


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    examples: Sequence[TokenizedExample],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    microbatch_tokens: int | None = None,
) -> float:
    was_training = model.training
    model.eval()
    lengths = [len(ex.input_ids) for ex in examples]
    order = sorted(range(len(examples)), key=lambda i: lengths[i])
    total, count = 0.0, 0
    for chunk in token_budget_chunks(order, lengths, microbatch_tokens, max_items=batch_size):
        batch = collate([examples[i] for i in chunk], pad_id, device)
        loss, n = target_loss_sum(model, batch)
        total += float(loss)
        count += n
    if was_training:
        model.train()
    return total / max(1, count)


def wrap_lora(model: PreTrainedModel, config: TrainConfig) -> PeftModel:
    """LoRA adapters on the named modules, fresh or loaded from `config.init_adapter`;
    raises TrainingSetupError naming target modules LoRA cannot take."""
    if config.init_adapter is not None:
        saved = LoraConfig.from_pretrained(config.init_adapter)
        saved.lora_dropout = config.dropout  # the one LoRA setting a continued job may change
        return PeftModel.from_pretrained(
            model, config.init_adapter, is_trainable=True, config=saved
        )
    problem = unusable_targets(config.target_modules, lora_target_names(model))
    if problem:  # before peft, which would fail on the first such module it met
        raise TrainingSetupError(problem)
    torch.manual_seed(config.seed)  # LoRA initialisation is random
    return get_peft_model(model, lora_config(config))


def lora_config(config: TrainConfig) -> LoraConfig:
    """The job's LoRA shape, as peft takes it."""
    return LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )


class Objective(Protocol):
    """What a training run minimises: SFT's next-token loss here, DPO's in workers/dpo.py.
    The loop (batches, optimiser, schedule, cancel checks, metrics, best epoch) is shared."""

    # Rows of one forward per training item (an SFT example: 1; a DPO pair: 2).
    rows_per_item: int

    def lengths(self) -> list[int]:
        """Per training item, its widest row: for length-grouped batches and micro-batches."""
        ...

    def prepare(self, model: PeftModel) -> None:
        """Called once on the wrapped model before the first step."""
        ...

    def step_loss(
        self, model: PeftModel, indices: list[int], batch: Sequence[int]
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        """The share of micro-batch `indices` in the loss of the step's whole `batch` (to
        backpropagate: the shares of a step's micro-batches add up to the batch's loss), its
        non-padding tokens, and its share of extra metrics (detached device tensors, summed
        over the micro-batches, averaged over logged windows)."""
        ...

    def valid_loss(self, model: PeftModel, *, sample: bool) -> float | None:
        """Validation loss (None without validation examples): on a sample at logged steps,
        on all examples at the end of an epoch."""
        ...


class SftObjective:
    """Mean next-token loss over the assistant tokens."""

    def __init__(
        self,
        train: Sequence[TokenizedExample],
        valid: Sequence[TokenizedExample],
        batch_size: int,
        pad_id: int,
        device: torch.device,
        microbatch_tokens: int | None = None,
    ) -> None:
        self.train = [ex for ex in train if ex.target_tokens > 0]
        if not self.train:
            raise ExampleError("no example has an assistant turn to learn from")
        self.valid, self.batch_size, self.pad_id, self.device = valid, batch_size, pad_id, device
        self.microbatch_tokens = microbatch_tokens
        self.positions = [ex.loss_positions for ex in self.train]  # counted once, not per step

    rows_per_item = 1

    def lengths(self) -> list[int]:
        return [len(ex.input_ids) for ex in self.train]

    def prepare(self, model: PeftModel) -> None:
        return None

    def step_loss(
        self, model: PeftModel, indices: list[int], batch: Sequence[int]
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        # The mean over every labelled token of the whole batch, as one forward would take it.
        positions = sum(self.positions[i] for i in batch)
        micro = collate([self.train[i] for i in indices], self.pad_id, self.device)
        loss, _ = target_loss_sum(model, micro)
        return loss / max(1, positions), micro["tokens"], {}

    def valid_loss(self, model: PeftModel, *, sample: bool) -> float | None:
        examples = self.valid[:STEP_VALID_EXAMPLES] if sample else self.valid
        if not examples:
            return None
        return evaluate_loss(
            model, examples, self.batch_size, self.pad_id, self.device, self.microbatch_tokens
        )


def train_lora(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[TokenizedExample],
    config: TrainConfig,
    *,
    valid: Sequence[TokenizedExample] = (),
    **loop: Any,
) -> TrainResult:
    """Train a LoRA adapter on `model` (modified in place) with the SFT loss and return it;
    `loop` takes train_objective's keyword arguments (report, should_continue, ...)."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    objective = SftObjective(
        train, valid, config.batch_size, pad_id, device, config.microbatch_tokens
    )
    return train_objective(model, objective, config, **loop)


def train_objective(
    model: PreTrainedModel,
    objective: Objective,
    config: TrainConfig,
    *,
    report: StepReporter | None = None,
    should_continue: ShouldContinue | None = None,
    log_every: int | None = None,
    on_epoch_end: EpochEnd | None = None,
    on_checkpoint: Checkpoint | None = None,
    resume: ResumeState | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `model` (modified in place) and return it.

    AdamW with a linear decay to zero, batches grouped by length. Same seed, data and
    thread count give the same weights. With validation examples, each epoch's validation
    loss is measured and the returned model holds the weights of the epoch where it was
    lowest (optionally stopping early). With `resume` (a state an earlier run handed to
    `on_checkpoint`, same config and data), training goes on from the epoch after it.
    """
    loop = _Loop(model, objective, config, log_every)
    if resume is not None:
        loop.restore(resume)
    state = loop.state
    while state.epoch < config.n_epochs and not state.stopped_early:
        epoch = state.epoch + 1
        loop.train_epoch(epoch, report, should_continue)
        loop.end_epoch(epoch, on_epoch_end)
        if on_checkpoint is not None:
            on_checkpoint(loop.resume_state())
    return loop.result()


class _LogWindow:
    """The losses of the steps since the last logged one, summed on the device and read at
    logged steps only: a read every step would make the host wait for each step to finish
    before it could build the next batch."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | float = 0.0
        self.extra: dict[str, torch.Tensor | float] = {}
        self.steps = 0

    def add(self, loss: torch.Tensor, extra: dict[str, torch.Tensor]) -> None:
        self.loss = self.loss + loss.detach()
        for key, value in extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value
        self.steps += 1

    def take(self) -> tuple[float, dict[str, float]]:
        """The window's mean loss and extra metrics (waits for the device), and a new window."""
        loss = float(self.loss) / self.steps
        extra = {k: round(float(v) / self.steps, 6) for k, v in self.extra.items()}
        self.loss, self.extra, self.steps = 0.0, {}, 0
        return loss, extra


class _Loop:
    """One training run: the wrapped model, its optimiser and schedule, the batch order's
    RNG and the LoopState; train_objective drives it an epoch at a time."""

    def __init__(
        self,
        model: PreTrainedModel,
        objective: Objective,
        config: TrainConfig,
        log_every: int | None,
    ) -> None:
        self.objective, self.config = objective, config
        self.model = wrap_lora(model, config)
        objective.prepare(self.model)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=0.0)
        self.lengths = objective.lengths()
        steps_per_epoch = math.ceil(len(self.lengths) / config.batch_size)
        self.total_steps = total_steps = steps_per_epoch * config.n_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(0.0, 1.0 - step / total_steps)
        )
        self.log_every = log_every or max(1, total_steps // 100)
        self.rng = random.Random(config.seed)  # the batch order
        torch.manual_seed(config.seed)  # dropout
        self.state = LoopState()
        self.window = _LogWindow()

    def restore(self, resume: ResumeState) -> None:
        """Back to where `resume` was taken, as if the finished epochs had just run here."""
        _load_trainable(self.model, resume.weights)
        self.optimizer.load_state_dict(resume.optimizer)
        self.scheduler.load_state_dict(resume.scheduler)
        for _ in range(resume.epoch):  # the batch orders of the finished epochs, replayed
            self._batches()
        torch.set_rng_state(resume.torch_rng)
        self.state = resume.copy()

    def resume_state(self) -> ResumeState:
        """The state after the last finished epoch (the optimizer's tensors are the live
        ones: save it before the next step)."""
        return ResumeState(
            **vars(self.state.copy()),
            weights=_trainable(self.model),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            torch_rng=torch.get_rng_state(),
        )

    def _batches(self) -> list[list[int]]:
        config = self.config
        return length_grouped_batches(
            self.lengths, config.batch_size, self.rng, config.bucket_batches
        )

    def train_epoch(
        self, epoch: int, report: StepReporter | None, should_continue: ShouldContinue | None
    ) -> None:
        state = self.state
        for batch_ids in self._batches():
            if should_continue is not None and not should_continue():
                raise TrainingStopped(state.step)
            started = time.perf_counter()
            loss, batch_tokens, extra = _accumulate(
                self.model, self.objective, self.config, batch_ids, self.lengths
            )
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.tokens += batch_tokens
            self.window.add(loss, extra)
            logged = state.step % self.log_every == 0 or state.step == self.total_steps
            if logged:  # reading the loss waits for the device, so the step's time is whole
                state.last_loss, last_extra = self.window.take()
            state.elapsed += time.perf_counter() - started
            if logged:
                metrics = self._logged(epoch, last_extra)
                state.history.append(metrics)
                if report is not None and report(metrics) is False:
                    raise TrainingStopped(state.step)

    def _logged(self, epoch: int, extra: dict[str, float]) -> StepMetrics:
        """A logged step's metrics, with the validation loss on a sample."""
        state = self.state
        state.last_valid = self.objective.valid_loss(self.model, sample=True)
        return StepMetrics(
            step=state.step,
            total_steps=self.total_steps,
            epoch=epoch,
            train_loss=round(state.last_loss, 6),
            learning_rate=self.scheduler.get_last_lr()[0],
            tokens_per_second=round(state.tokens / state.elapsed, 2) if state.elapsed else 0.0,
            eta_seconds=round(state.elapsed / state.step * (self.total_steps - state.step), 2),
            valid_loss=_rounded(state.last_valid),
            extra=extra,
        )

    def end_epoch(self, epoch: int, on_epoch_end: EpochEnd | None) -> None:
        """The epoch's validation loss over all examples, then the best epoch so far and
        whether to stop early."""
        state, config = self.state, self.config
        epoch_valid = self.objective.valid_loss(self.model, sample=False)
        ended = EpochMetrics(epoch, state.step, round(state.last_loss, 6), _rounded(epoch_valid))
        state.epochs.append(ended)
        state.epoch = epoch
        if on_epoch_end is not None:
            on_epoch_end(ended, self.model, state.history[-1] if state.history else None)
        if epoch_valid is None:
            return
        if epoch_valid < state.best_loss:
            state.best, state.best_loss, state.since_best = ended, epoch_valid, 0
            state.best_weights = _trainable(self.model)
        else:
            state.since_best += 1
            patience = config.early_stopping_patience
            state.stopped_early = bool(
                patience and state.since_best >= patience and epoch < config.n_epochs
            )

    def result(self) -> TrainResult:
        """The model with the selected epoch's weights, in eval mode, and the run's metrics."""
        state = self.state
        selected = state.best or (state.epochs[-1] if state.epochs else None)
        if state.best is not None and state.best.epoch != state.epochs[-1].epoch:
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    if name in state.best_weights:
                        p.copy_(state.best_weights[name])
        self.model.eval()
        return TrainResult(
            model=self.model,
            steps=state.step,
            trained_tokens=state.tokens,
            train_seconds=state.elapsed,
            final_train_loss=state.last_loss,
            final_valid_loss=state.last_valid,
            history=state.history,
            epochs=state.epochs,
            selected=selected,
            stopped_early=state.stopped_early,
        )


def _accumulate(
    model: PeftModel,
    objective: Objective,
    config: TrainConfig,
    batch: list[int],
    lengths: Sequence[int],
) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """Forward and backward over the step's batch, a micro-batch at a time (at most
    `config.microbatch_tokens` positions each), gradients accumulated: the step's loss,
    non-padding tokens and extra metrics, as one forward over the whole batch gives them."""
    widest_first = sorted(batch, key=lambda i: lengths[i], reverse=True)
    micro_batches = token_budget_chunks(
        widest_first, lengths, config.microbatch_tokens, rows_per_item=objective.rows_per_item
    )
    device = next(model.parameters()).device
    loss_total: torch.Tensor | float = 0.0
    tokens = 0
    extra: dict[str, torch.Tensor] = {}
    for micro in micro_batches:
        # Autocast entered per forward, never around the loop: autocast caches its
        # low-precision copies of the weights until the context exits, so one context
        # around all steps would keep running the LoRA weights of the first step.
        with autocast_for(config, device):
            loss, micro_tokens, micro_extra = objective.step_loss(model, micro, batch)
        loss.backward()  # frees this micro-batch's activations before the next forward
        loss_total = loss_total + loss.detach()
        tokens += micro_tokens
        for key, value in micro_extra.items():
            extra[key] = extra[key] + value if key in extra else value
    assert isinstance(loss_total, torch.Tensor)
    return loss_total, tokens, extra


def autocast_for(
    config: TrainConfig, device: torch.device
) -> "torch.autocast | contextlib.nullcontext[None]":
    if config.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, config.autocast))


def _trainable(model: PeftModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: PeftModel, weights: dict[str, torch.Tensor]) -> None:
    own = dict(model.named_parameters())
    if set(weights) != {name for name, p in own.items() if p.requires_grad}:
        raise ValueError("the saved training state is of another adapter shape")
    with torch.no_grad():
        for name, value in weights.items():
            own[name].copy_(value)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def resolve_hyperparameters(
    requested: dict[str, Any],
    n_examples: int,
    n_params: int | None = None,
    method: str = "supervised",
) -> dict[str, Any]:
    """Replace "auto" (or missing) values with ones that suit the data set and the model
    (app/finetune/auto_settings.py: by optimizer steps, with the reason recorded)."""
    out = auto_settings.resolve(requested, n_examples, n_params=n_params, method=method)
    out.setdefault("target_modules", list(DEFAULT_TARGET_MODULES))
    return out


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_from_hyperparameters(
    hp: dict[str, Any], seed: int, max_length: int, init_adapter: str | None = None
) -> TrainConfig:
    return TrainConfig(
        n_epochs=int(hp["n_epochs"]),
        batch_size=int(hp["batch_size"]),
        learning_rate=BASE_LEARNING_RATE * float(hp["learning_rate_multiplier"]),
        r=int(hp["r"]),
        alpha=int(hp["alpha"]),
        dropout=float(hp["dropout"]),
        target_modules=tuple(hp["target_modules"]),
        seed=seed,
        max_length=max_length,
        early_stopping_patience=hp.get("early_stopping_patience"),
        init_adapter=init_adapter,
    )


def adapter_shape(folder: str) -> dict[str, Any]:
    """r, alpha, dropout and target modules of a saved peft adapter folder."""
    config = LoraConfig.from_pretrained(folder)
    modules = config.target_modules
    return {
        "r": int(config.r),
        "alpha": int(config.lora_alpha),
        "dropout": float(config.lora_dropout),
        "target_modules": sorted(modules) if not isinstance(modules, str) else [modules],
    }
