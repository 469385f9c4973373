"""xgrammar against llguidance on the default model's tokenizer: what structured outputs cost.

For each library, in one run: building its tokenizer view once; compiling a JSON schema cold
(a new schema each time) and, for xgrammar, from its own cache; then walking a valid JSON
answer token by token, timing the per-step token mask (filling the bitmask; filling and
applying it to a logits row with the library's own kernel) and the token acceptance.

    .venv/bin/python -m bench.grammar_backends [--schemas 10]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def schema(i: int) -> dict:
    """A moderately rich schema; `i` renames a property so no two compile the same."""
    return {
        "type": "object",
        "properties": {
            f"name_{i}": {"type": "string", "maxLength": 40},
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
        "required": [f"name_{i}", "sentiment", "score", "tags"],
        "additionalProperties": False,
    }


def answer(i: int) -> str:
    return json.dumps(
        {
            f"name_{i}": "Ada Lovelace",
            "sentiment": "positive",
            "score": 0.87,
            "tags": ["math", "poetry"],
            "address": {"city": "London", "zip": 12345},
        },
        separators=(",", ":"),  # compact, the form both libraries are told to produce
    )


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def bench_xgrammar(tokenizer, vocab: int, n: int) -> dict:
    import xgrammar as xgr

    t = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    compiler = xgr.GrammarCompiler(info, max_threads=2)
    setup = time.perf_counter() - t
    cold, cached, steps, fills, accepts = [], [], [], [], []
    mask = xgr.allocate_token_bitmask(1, vocab)
    logits = torch.zeros(1, vocab)
    for i in range(n):
        text = json.dumps(schema(i))
        t = time.perf_counter()
        compiled = compiler.compile_json_schema(text, any_whitespace=False, separators=(",", ":"))
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        compiler.compile_json_schema(text, any_whitespace=False, separators=(",", ":"))
        cached.append(time.perf_counter() - t)
        matcher = xgr.GrammarMatcher(compiled)
        for token in tokenizer.encode(answer(i), add_special_tokens=False):
            t = time.perf_counter()
            matcher.fill_next_token_bitmask(mask)
            fills.append(time.perf_counter() - t)
            xgr.apply_token_bitmask_inplace(logits, mask)
            steps.append(time.perf_counter() - t)
            t = time.perf_counter()
            ok = matcher.accept_token(token)
            accepts.append(time.perf_counter() - t)
            assert ok, "xgrammar refused a valid answer's token"
    return report(setup, cold, cached, steps, fills, accepts)


def bench_llguidance(tokenizer, vocab: int, n: int) -> dict:
    import llguidance
    import llguidance.hf
    import llguidance.torch as lltorch

    t = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
    setup = time.perf_counter() - t
    cold, cached, steps, fills, accepts = [], [], [], [], []
    mask = lltorch.allocate_token_bitmask(1, vocab)
    logits = torch.zeros(1, vocab)
    options = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
    for i in range(n):
        t = time.perf_counter()
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema(i), defaults=options)
        matcher = llguidance.LLMatcher(lltok, grammar)
        cold.append(time.perf_counter() - t)
        assert not matcher.is_error(), matcher.get_error()
        # llguidance has no compiled-grammar cache: a second matcher compiles again.
        t = time.perf_counter()
        llguidance.LLMatcher(lltok, grammar)
        cached.append(time.perf_counter() - t)
        for token in tokenizer.encode(answer(i), add_special_tokens=False):
            t = time.perf_counter()
            lltorch.fill_next_token_bitmask(matcher, mask)
            fills.append(time.perf_counter() - t)
            lltorch.apply_token_bitmask_inplace(logits, mask)
            steps.append(time.perf_counter() - t)
            t = time.perf_counter()
            ok = matcher.consume_token(token)
            accepts.append(time.perf_counter() - t)
            assert ok, matcher.get_error()
    return report(setup, cold, cached, steps, fills, accepts)


def report(setup: float, cold: list, cached: list, steps: list, fills: list, accepts: list) -> dict:
    def p(values: list, q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))]

    return {
        "tokenizer_setup_ms": ms(setup),
        "compile_cold_ms_median": ms(statistics.median(cold)),
        "compile_again_ms_median": ms(statistics.median(cached)),
        "fill_mask_ms_median": ms(statistics.median(fills)),
        "fill_mask_ms_p95": ms(p(fills, 0.95)),
        "mask_step_ms_median": ms(statistics.median(steps)),
        "mask_step_ms_p95": ms(p(steps, 0.95)),
        "accept_ms_median": ms(statistics.median(accepts)),
        "steps": len(steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schemas", type=int, default=10)
    parser.add_argument("--only", choices=["xgrammar", "llguidance"])
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from app.engine.loader import resolve_source
    from app.settings import get_settings

    settings = get_settings()
    source = resolve_source(settings.base_model, Path(settings.model_cache))
    tokenizer = AutoTokenizer.from_pretrained(source)
    vocab = len(tokenizer)
    print(f"tokenizer vocab={vocab} torch threads={torch.get_num_threads()}")
    for name, fn in (("xgrammar", bench_xgrammar), ("llguidance", bench_llguidance)):
        if args.only in (None, name):
            # Warm-up pass (torch.compile of llguidance's mask kernel, lazy imports).
            fn(tokenizer, vocab, 1)
            print(f"{name:10s}: {json.dumps(fn(tokenizer, vocab, args.schemas))}")


if __name__ == "__main__":
    main()
