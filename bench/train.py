"""Training benchmark: the worker's LoRA trainer against a plain hand-written peft loop.

Both train the default model (SmolLM2-135M-Instruct) on the same SST-2 sentences with the same
hyperparameters and seed (1 epoch, batch 8, lr 5e-4, LoRA r=8 alpha=16 dropout 0.05 on
q/k/v/o), one after the other in this process. Prints tokens/s of each (non-padding tokens
per second of training), their ratio, and the held-out accuracy of each adapter on SST-2 test
sentences (next-token comparison of "positive" vs "negative").

    .venv/bin/python -m bench.train                       # 384 train, 200 test sentences
    .venv/bin/python -m bench.train --train 64 --test 50  # a quick smoke run
    .venv/bin/python -m bench.train --plain-first         # the other order

With `--method dpo`: a preference set built from SST-2 (preferred: the correct label;
non-preferred: the wrong one). Prints the preference accuracy on held-out pairs (the share
where the model gives the preferred answer the higher log-probability) before and after one
DPO run of workers/dpo.py, and the time per step of DPO against SFT on the same prompts
(SFT on the preferred answers), one after the other in this process.

    .venv/bin/python -m bench.train --method dpo --train 32 --test 40

With `--method dtype`: the worker's trainer twice on the same sentences, in fp32 and under
bf16 autocast (weights and optimizer stay fp32), tokens/s and accuracy of each; and the
fp32-trained adapter's accuracy with the base weights cast to bf16 and the LoRA weights
left as the serving engine holds them with DTYPE=bfloat16 (fp32 on CPU) on the same test
sentences.

    .venv/bin/python -m bench.train --method dtype --train 96 --test 200
"""

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from app.engine.adapters import adapter_dtype
from app.engine.loader import load_base_model
from app.engine.prompts import encode, render_chat
from app.files.validation import parse_dataset
from app.settings import get_settings
from workers.dpo import DpoObjective, sequence_logps, tokenize_pair
from workers.training import (
    SftObjective,
    TrainConfig,
    collate,
    tokenize_chat,
    train_lora,
    train_objective,
)

ROOT = Path(__file__).resolve().parent.parent

DATASET = ROOT.parent / "shared" / "datasets" / "sst2"
INSTRUCTION = "Classify the sentiment of this movie review as positive or negative."
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{INSTRUCTION}\nReview: {text}"}]


def load_rows(name: str, n: int, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in (OPTS["data"] / f"{name}.jsonl").open()]
    if name == "test":  # a fixed random sample: the file is not shuffled
        rows = random.Random(seed).sample(rows, n)
    return rows[:n]


def progress(path: str, step: int, total: int) -> bool:
    if step % 8 == 0 or step == total:
        print(f"  {path}: step {step}/{total}", file=sys.stderr, flush=True)
    return True  # keep training


OPTS: dict = {"model": "smollm2-135m-instruct", "device": "cpu", "data": DATASET}


def bench_config(batch_size: int, seed: int) -> TrainConfig:
    """One epoch, the service's default LoRA shape; the same for both paths compared."""
    return TrainConfig(
        n_epochs=1,
        batch_size=batch_size,
        learning_rate=5e-4,
        r=8,
        alpha=16,
        dropout=0.05,
        target_modules=TARGETS,
        seed=seed,
        max_length=2048,
    )


def fresh_model():
    settings = get_settings()
    return load_base_model(OPTS["model"], settings.model_cache, OPTS["device"])


@torch.no_grad()
def accuracy(model, tokenizer, rows: list[dict]) -> float:
    """First-token logit of "positive" vs "negative" after the prompt, rendered as served."""
    model.eval()
    pos = encode(tokenizer, "positive")[0]
    neg = encode(tokenizer, "negative")[0]
    correct = 0
    for row in rows:
        ids = encode(tokenizer, render_chat(tokenizer, messages(row["text"])))
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1]
        guess = "positive" if logits[pos] > logits[neg] else "negative"
        correct += guess == row["label"]
    return correct / len(rows)


def worker_path(train_rows: list[dict], config: TrainConfig) -> tuple[float, float, float, object]:
    """The service's path: the upload validator's normalisation, then workers.training."""
    data = "".join(
        json.dumps(
            {"messages": messages(r["text"]) + [{"role": "assistant", "content": r["label"]}]}
        )
        + "\n"
        for r in train_rows
    ).encode()
    parsed = parse_dataset(
        data, "sst2.jsonl", max_bytes=1 << 30, min_examples=10, context_window=8192
    )
    assert not parsed.problems, parsed.problems[:3]
    loaded = fresh_model()
    examples = [
        tokenize_chat(loaded.tokenizer, e["messages"], config.max_length) for e in parsed.examples
    ]
    result = train_lora(
        loaded.model,
        loaded.tokenizer,
        examples,
        config,
        report=lambda m: progress("worker", m.step, m.total_steps),
    )
    return (
        result.tokens_per_second,
        result.train_seconds,
        result.final_train_loss,
        (
            result.model,
            loaded.tokenizer,
        ),
    )


def plain_path(train_rows: list[dict], config: TrainConfig) -> tuple[float, float, float, object]:
    """A plain peft loop as one would write it by hand: shuffled batches padded to the
    longest, the model's own loss, AdamW with the same linear decay."""
    loaded = fresh_model()
    model, tok = loaded.model, loaded.tokenizer
    data = []
    for r in train_rows:
        prompt = tok.apply_chat_template(
            messages(r["text"]), tokenize=False, add_generation_prompt=True
        )
        full = prompt + r["label"] + "<|im_end|>\n"
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        f_ids = tok(full, add_special_tokens=False)["input_ids"]
        data.append((f_ids, [-100] * len(p_ids) + f_ids[len(p_ids) :]))
    torch.manual_seed(config.seed)
    model = get_peft_model(
        model,
        LoraConfig(
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=0
    )
    order = list(range(len(data)))
    random.Random(config.seed).shuffle(order)
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    total = len(batches) * config.n_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total))
    tokens, elapsed, loss, step = 0, 0.0, None, 0
    for _ in range(config.n_epochs):
        for batch in batches:
            start = time.perf_counter()
            width = max(len(data[i][0]) for i in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id)
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(data[i][0])
                ids[row, :n] = torch.tensor(data[i][0])
                labels[row, :n] = torch.tensor(data[i][1])
                mask[row, :n] = 1
            dev = loaded.device
            loss = model(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)
            ).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()  # the worker path syncs on its loss every step
            elapsed += time.perf_counter() - start
            tokens += int(mask.sum())
            step += 1
            if step % 8 == 0:
                progress("plain", step, total)
    model.eval()
    return tokens / elapsed, elapsed, float(loss), (model, tok)


def warm_up() -> None:
    """One untimed forward/backward pass, so kernel set-up counts against neither path."""
    loaded = fresh_model()
    ids = torch.randint(0, 1000, (8, 80), device=loaded.device)
    loaded.model.train()
    loaded.model(input_ids=ids, labels=ids).loss.backward()


def preference_pairs(tokenizer, rows: list[dict]) -> list:
    other = {"positive": "negative", "negative": "positive"}
    return [
        tokenize_pair(
            tokenizer,
            {
                "messages": messages(r["text"]),
                "preferred": r["label"],
                "non_preferred": other[r["label"]],
            },
            2048,
        )
        for r in rows
    ]


@torch.no_grad()
def preference_accuracy(model, pairs: list, pad_id: int) -> float:
    model.eval()
    wins = 0
    for start in range(0, len(pairs), 8):
        part = pairs[start : start + 8]
        batch = collate([p.chosen for p in part] + [p.rejected for p in part], pad_id, model.device)
        logps = sequence_logps(model, batch)
        wins += int((logps[: len(part)] > logps[len(part) :]).sum())
    return wins / len(pairs)


def as_served_in_bf16(model):
    """The model as the engine holds it with DTYPE=bfloat16: base weights in bf16, LoRA
    weights in `adapter_dtype` (fp32 on CPU, where peft casts the update to bf16)."""
    model.to(torch.bfloat16)
    lora_dtype = adapter_dtype(model.device, torch.bfloat16)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(lora_dtype)
    return model


def run_dtype(args: argparse.Namespace, config: TrainConfig) -> None:
    """Training in fp32 against bf16 autocast; serving accuracy in fp32 against bf16."""
    train_rows = load_rows("train", args.train, args.seed)
    test_rows = load_rows("test", args.test, args.seed)
    print(
        f"SST-2: {len(train_rows)} train, {len(test_rows)} test sentences; "
        f"torch threads {torch.get_num_threads()}; {config}"
    )
    rates = {}
    for mode in ("fp32", "bf16 autocast"):
        # The trainer's own option: autocast entered per step (one context around the whole
        # loop keeps the first step's weights cached, and the adapter never learns).
        autocast = "bfloat16" if mode != "fp32" else None
        tps, secs, loss, (model, tok) = worker_path(train_rows, replace(config, autocast=autocast))
        rates[mode] = tps
        print(f"train {mode}: {tps:.1f} tokens/s, {secs:.1f} s, final loss {loss:.4f}")
        fp32 = accuracy(model, tok, test_rows)
        print(f"adapter trained in {mode}: accuracy served fp32 {fp32:.3f}", flush=True)
        if mode == "fp32":  # the serving comparison: the same adapter on a bf16 base
            bf16 = accuracy(as_served_in_bf16(model), tok, test_rows)
            print(f"adapter trained in {mode}: accuracy served bf16 {bf16:.3f}", flush=True)
    ratio = rates["bf16 autocast"] / rates["fp32"]
    print(f"ratio training tokens/s bf16 autocast / fp32: {ratio:.2f}")


def run_dpo(args: argparse.Namespace) -> None:
    """DPO on SST-2 preference pairs: held-out preference accuracy before and after, and
    the time per step of DPO against SFT (same prompts, preferred answers, same settings)."""
    config = bench_config(batch_size=4, seed=args.seed)
    train_rows = load_rows("train", args.train, args.seed)
    test_rows = load_rows("test", args.test, args.seed)
    loaded = fresh_model()
    tok = loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    train_pairs = preference_pairs(tok, train_rows)
    test_pairs = preference_pairs(tok, test_rows)
    print(
        f"SST-2 preference pairs: {len(train_pairs)} train, {len(test_pairs)} held out; "
        f"torch threads {torch.get_num_threads()}; beta {args.beta}; {config}"
    )
    before = preference_accuracy(loaded.model, test_pairs, pad_id)
    print(f"base: preference accuracy {before:.3f} on {len(test_pairs)} held-out pairs")
    objective = DpoObjective(
        train_pairs, [], beta=args.beta, batch_size=4, pad_id=pad_id, device=loaded.device
    )
    seen = []
    result = train_objective(loaded.model, objective, config, report=seen.append, log_every=1)
    after = preference_accuracy(result.model, test_pairs, pad_id)
    dpo_step = result.train_seconds / result.steps
    print(
        f"dpo:  {result.steps} steps, {dpo_step:.2f} s/step, final loss {seen[-1].train_loss:.4f}, "
        f"reward accuracy {seen[-1].extra['reward_accuracy']:.2f}, "
        f"margin {seen[-1].extra['reward_margin']:.4f}"
    )
    print(f"dpo:  preference accuracy {after:.3f} on {len(test_pairs)} held-out pairs")
    sft_loaded = fresh_model()
    sft = SftObjective(
        [
            tokenize_chat(
                tok, messages(r["text"]) + [{"role": "assistant", "content": r["label"]}], 2048
            )
            for r in train_rows
        ],
        [],
        4,
        pad_id,
        sft_loaded.device,
    )
    sft_result = train_objective(sft_loaded.model, sft, config)
    sft_step = sft_result.train_seconds / sft_result.steps
    print(f"sft:  {sft_result.steps} steps, {sft_step:.2f} s/step")
    print(f"ratio dpo/sft time per step: {dpo_step / sft_step:.2f}")


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=384)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="name, folder or id")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=DATASET, help="folder with sst2 jsonl")
    parser.add_argument("--plain-first", action="store_true", help="run the plain loop first")
    parser.add_argument("--method", choices=("sft", "dpo", "dtype"), default="sft")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    args = parser.parse_args()
    OPTS.update(model=args.model, device=args.device, data=args.data)
    torch.set_num_threads(torch.get_num_threads())
    if args.method == "dpo":
        warm_up()
        run_dpo(args)
        return
    config = bench_config(batch_size=8, seed=args.seed)
    warm_up()
    if args.method == "dtype":
        run_dtype(args, config)
        return
    train_rows = load_rows("train", args.train, args.seed)
    test_rows = load_rows("test", args.test, args.seed)
    print(
        f"SST-2: {len(train_rows)} train, {len(test_rows)} test sentences; "
        f"torch threads {torch.get_num_threads()}; {config}"
    )

    def run(label: str, path) -> tuple[float, float]:
        """Train one path, print its speed and test accuracy; its tokens/s and seconds."""
        tps, secs, loss, (model, tok) = path(train_rows, config)
        print(f"{label} {tps:.1f} tokens/s, {secs:.1f} s training, final loss {loss:.4f}")
        print(f"{label} accuracy {accuracy(model, tok, test_rows):.3f} on {len(test_rows)} test")
        return tps, secs

    # The order is a flag so a run can check that going second is no advantage.
    if args.plain_first:
        p_tps, p_s = run("plain: ", plain_path)
        w_tps, w_s = run("worker:", worker_path)
    else:
        w_tps, w_s = run("worker:", worker_path)
        p_tps, p_s = run("plain: ", plain_path)

    print(f"ratio worker/plain tokens/s: {w_tps / p_tps:.2f}")
    print(f"ratio worker/plain training time: {w_s / p_s:.2f}")


if __name__ == "__main__":
    main()
