"""The LoRA trainer: chat examples in, a trained peft model and metrics out.

No database and no Celery here: the job runner (workers/finetune_runner.py) feeds it examples
and a `StepReporter`, and `bench/train.py` calls it directly. Prompts are rendered with
app.engine.prompts, the same functions the server uses, so training and serving tokenise
every prompt identically; the loss covers only assistant tokens (weight 1).
"""

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

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


class ExampleError(ValueError):
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


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


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


@dataclass
class TrainResult:
    model: PeftModel
    steps: int
    trained_tokens: int  # non-padding tokens seen, all epochs
    train_seconds: float
    final_train_loss: float
    final_valid_loss: float | None
    history: list[StepMetrics] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.trained_tokens / self.train_seconds if self.train_seconds > 0 else 0.0


# A reporter gets each logged step's metrics; returning False stops training.
StepReporter = Callable[[StepMetrics], bool]
# Checked between steps (cheaply, every step): returning False stops training.
ShouldContinue = Callable[[], bool]
# Called at the end of every epoch but the last: (epoch, step, the model in training, the
# last logged metrics). The final epoch's weights are the result itself.
EpochEnd = Callable[[int, int, PeftModel, StepMetrics | None], None]


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


def target_loss(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """Mean next-token loss over the labelled positions, and how many there were.

    The output projection (vocabulary-sized: a fifth of a small model's compute) is applied
    only at positions that carry a label, not to the whole padded batch. Models that post-
    process their logits (soft-capping, scaling) take the plain full-logits path.
    """
    causal = model.get_base_model() if isinstance(model, PeftModel) else model
    config = causal.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return causal_lm_loss(logits, batch["labels"])
    hidden = causal.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    # Flat positions from collate (host-side), not a boolean mask: no device-to-host wait.
    flat = hidden[:, :-1].reshape(-1, hidden.size(-1)).index_select(0, batch["target_index"])
    logits = causal.get_output_embeddings()(flat)
    count = batch["targets"]
    loss = torch.nn.functional.cross_entropy(
        logits.float(), batch["target_labels"], reduction="sum"
    )
    return loss / max(1, count), count


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token loss over labelled positions, and how many there were."""
    shift_logits = logits[:, :-1, :].reshape(-1, logits.size(-1))
    shift_labels = labels[:, 1:].reshape(-1)
    count = int((shift_labels != IGNORE).sum())
    loss = torch.nn.functional.cross_entropy(
        shift_logits.float(), shift_labels, ignore_index=IGNORE, reduction="sum"
    )
    return loss / max(1, count), count


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    examples: Sequence[TokenizedExample],
    batch_size: int,
    pad_id: int,
    device: torch.device,
) -> float:
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id, device)
        loss, n = target_loss(model, batch)
        total += float(loss) * n
        count += n
    if was_training:
        model.train()
    return total / max(1, count)


def wrap_lora(model: PreTrainedModel, config: TrainConfig) -> PeftModel:
    """LoRA adapters on the named modules; raises ValueError naming unknown modules."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [m for m in config.target_modules if m not in names]
    if unknown:
        raise ValueError(f"target_modules not found in the base model: {', '.join(unknown)}")
    torch.manual_seed(config.seed)  # LoRA initialisation is random
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def train_lora(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[TokenizedExample],
    config: TrainConfig,
    *,
    valid: Sequence[TokenizedExample] = (),
    report: StepReporter | None = None,
    should_continue: ShouldContinue | None = None,
    log_every: int | None = None,
    on_epoch_end: EpochEnd | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `model` (modified in place) and return it.

    AdamW with a linear decay to zero, token-level mean loss over target tokens, batches
    grouped by length. Same seed, data and thread count give the same weights.
    """
    train = [ex for ex in train if ex.target_tokens > 0]
    if not train:
        raise ExampleError("no example has an assistant turn to learn from")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    peft_model = wrap_lora(model, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.n_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total_steps)
    )
    log_every = log_every or max(1, total_steps // 100)
    rng = random.Random(config.seed)
    lengths = [len(ex.input_ids) for ex in train]
    torch.manual_seed(config.seed)  # dropout

    step, tokens, elapsed = 0, 0, 0.0
    # Summed on the device and read at log steps only: a read every step would make the host
    # wait for each step to finish before it could build the next batch.
    window_loss: torch.Tensor | float = 0.0
    window_n = 0
    history: list[StepMetrics] = []
    last_loss, last_valid = float("nan"), None
    for epoch in range(1, config.n_epochs + 1):
        for batch_ids in length_grouped_batches(
            lengths, config.batch_size, rng, config.bucket_batches
        ):
            if should_continue is not None and not should_continue():
                raise TrainingStopped(step)
            started = time.perf_counter()
            batch = collate([train[i] for i in batch_ids], pad_id, device)
            loss, _ = target_loss(peft_model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += batch["tokens"]
            window_loss = window_loss + loss.detach()
            window_n += 1
            logged = step % log_every == 0 or step == total_steps
            if logged:  # reading the loss waits for the device, so the step's time is whole
                last_loss = float(window_loss) / window_n
                window_loss, window_n = 0.0, 0
            elapsed += time.perf_counter() - started
            if logged:
                if valid:
                    last_valid = evaluate_loss(peft_model, valid, config.batch_size, pad_id, device)
                metrics = StepMetrics(
                    step=step,
                    total_steps=total_steps,
                    epoch=epoch,
                    train_loss=round(last_loss, 6),
                    learning_rate=scheduler.get_last_lr()[0],
                    tokens_per_second=round(tokens / elapsed, 2) if elapsed else 0.0,
                    eta_seconds=round(elapsed / step * (total_steps - step), 2),
                    valid_loss=None if last_valid is None else round(last_valid, 6),
                )
                history.append(metrics)
                if report is not None and report(metrics) is False:
                    raise TrainingStopped(step)
        if on_epoch_end is not None and epoch < config.n_epochs:
            on_epoch_end(epoch, step, peft_model, history[-1] if history else None)
    peft_model.eval()
    return TrainResult(
        model=peft_model,
        steps=step,
        trained_tokens=tokens,
        train_seconds=elapsed,
        final_train_loss=last_loss,
        final_valid_loss=last_valid,
        history=history,
    )


def resolve_hyperparameters(
    requested: dict[str, Any], n_examples: int, n_params: int | None = None
) -> dict[str, Any]:
    """Replace "auto" (or missing) values with ones that suit the data set and the model
    (app/finetune/auto_settings.py: by optimizer steps, with the reason recorded)."""
    out = auto_settings.resolve(requested, n_examples, n_params=n_params)
    out.setdefault("target_modules", list(DEFAULT_TARGET_MODULES))
    return out


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_from_hyperparameters(hp: dict[str, Any], seed: int, max_length: int) -> TrainConfig:
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
    )
