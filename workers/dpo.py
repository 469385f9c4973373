"""Direct preference optimisation (DPO) of a LoRA adapter, as a training objective.

For a pair (prompt x, preferred y+, non-preferred y-) and the summed log-probabilities of
each answer under the policy (pi) and the reference (ref):

    loss = -log sigmoid(beta * ((pi(y+) - ref(y+)) - (pi(y-) - ref(y-))))

The reference is the model as training starts: a fresh LoRA adapter adds nothing (its B
matrices are zero), so that is exactly the base model with the adapter disabled; a job on
top of an SFT adapter (`model: "ft:..."`) uses that adapter. Its log-probabilities are
computed once, before the first step, so the reference never needs a second model copy.
Answers are tokenised by workers/training.tokenize_chat (the serving chat template), and
only the final answer's tokens count; the shared training loop brings batching, cancel
checks, metrics events, checkpoints and best-epoch selection.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from workers.training import (
    STEP_VALID_EXAMPLES,
    ExampleError,
    TokenizedExample,
    collate,
    token_budget_chunks,
    tokenize_chat,
)

DEFAULT_BETA = 0.1


@dataclass(frozen=True)
class PreferencePair:
    chosen: TokenizedExample
    rejected: TokenizedExample


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, example: dict[str, Any], max_length: int
) -> PreferencePair:
    """Both conversations (input + one output); earlier assistant turns carry no loss."""
    history = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in example["messages"]]

    def side(text: str) -> TokenizedExample:
        return tokenize_chat(
            tokenizer, [*history, {"role": "assistant", "content": text}], max_length
        )

    return PreferencePair(side(example["preferred"]), side(example["non_preferred"]))


def sequence_logps(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Per row, the summed log-probability of its labelled tokens (a collate() batch).

    Like the SFT loss, the output layer runs only at labelled positions."""
    causal = model.get_base_model() if isinstance(model, PeftModel) else model
    rows, width = batch["input_ids"].shape
    index, labels = batch["target_index"], batch["target_labels"]
    config = causal.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        flat_logits = logits[:, :-1].reshape(-1, logits.size(-1)).index_select(0, index)
    else:
        hidden = causal.get_decoder()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        flat = hidden[:, :-1].reshape(-1, hidden.size(-1)).index_select(0, index)
        flat_logits = causal.get_output_embeddings()(flat)
    token_logps = (
        torch.log_softmax(flat_logits.float(), dim=-1).gather(1, labels[:, None]).squeeze(1)
    )
    return torch.zeros(rows, device=token_logps.device).index_add_(
        0, index // (width - 1), token_logps
    )


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean loss over the pairs, and each pair's implicit rewards (chosen, rejected)."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def pair_lengths(pairs: Sequence[PreferencePair]) -> list[int]:
    """Per pair, its wider side: both sides share one forward, padded to it."""
    return [max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in pairs]


class DpoObjective:
    """The DPO loss for the shared loop (workers/training.train_objective)."""

    def __init__(
        self,
        train: Sequence[PreferencePair],
        valid: Sequence[PreferencePair],
        *,
        beta: float,
        batch_size: int,
        pad_id: int,
        device: torch.device,
        microbatch_tokens: int | None = None,
    ) -> None:
        self.train = [p for p in train if p.chosen.target_tokens and p.rejected.target_tokens]
        if not self.train:
            raise ExampleError("no preference pair has an answer to learn from")
        self.valid = list(valid)
        self.beta, self.batch_size, self.pad_id, self.device = beta, batch_size, pad_id, device
        self.microbatch_tokens = microbatch_tokens
        self.ref_train = torch.zeros(0)
        self.ref_valid = torch.zeros(0)

    rows_per_item = 2  # both answers of a pair in one forward

    def lengths(self) -> list[int]:
        return pair_lengths(self.train)

    def _logps(self, model: torch.nn.Module, pairs: Sequence[PreferencePair]) -> torch.Tensor:
        """[n, 2]: chosen and rejected log-probabilities, one forward for both sides."""
        batch = collate(
            [p.chosen for p in pairs] + [p.rejected for p in pairs], self.pad_id, self.device
        )
        logps = sequence_logps(model, batch)
        return torch.stack([logps[: len(pairs)], logps[len(pairs) :]], dim=1)

    @torch.no_grad()
    def _all_logps(self, model: torch.nn.Module, pairs: Sequence[PreferencePair]) -> torch.Tensor:
        if not pairs:
            return torch.zeros((0, 2), device=self.device)
        chunks = token_budget_chunks(
            range(len(pairs)),
            pair_lengths(pairs),
            self.microbatch_tokens,
            rows_per_item=self.rows_per_item,
            max_items=self.batch_size,
        )
        return torch.cat([self._logps(model, [pairs[i] for i in chunk]) for chunk in chunks])

    def prepare(self, model: PeftModel) -> None:
        was_training = model.training
        model.eval()  # no dropout in the reference
        self.ref_train = self._all_logps(model, self.train)
        self.ref_valid = self._all_logps(model, self.valid)
        model.train(was_training)

    def step_loss(
        self, model: PeftModel, indices: list[int], batch: Sequence[int]
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        pairs = [self.train[i] for i in indices]
        policy = self._logps(model, pairs)
        ref = self.ref_train[indices]
        loss, chosen, rejected = dpo_loss(
            policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], self.beta
        )
        # Means over this micro-batch's pairs, weighted into means over the whole batch's.
        share = len(indices) / len(batch)
        tokens = sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in pairs)
        return (
            loss * share,
            tokens,
            {
                "reward_accuracy": (chosen > rejected).float().mean() * share,
                "reward_margin": (chosen - rejected).mean() * share,
                "chosen_reward": chosen.mean() * share,
                "rejected_reward": rejected.mean() * share,
            },
        )

    @torch.no_grad()
    def valid_loss(self, model: PeftModel, *, sample: bool) -> float | None:
        pairs = self.valid[:STEP_VALID_EXAMPLES] if sample else self.valid
        if not pairs:
            return None
        was_training = model.training
        model.eval()
        policy = self._all_logps(model, pairs)
        ref = self.ref_valid[: len(pairs)]
        loss, _, _ = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], self.beta)
        model.train(was_training)
        return float(loss)
