"""What a schema costs to compile, at and past the GRAMMAR_* limits: each schema's size, node
count, whether the limits refuse it, and the time to a compiled grammar (or to the refusal)
through `Grammars` (a child process per compile), with the default model's tokenizer; and
xgrammar in this process for the schemas that compile, for the child's overhead.

    .venv/bin/python -m bench.grammar_limits --timeout 60
"""

import argparse
import json
import time


def obj(i: int, closed: bool) -> dict:
    schema = {
        "type": "object",
        "properties": {f"name{i}": {"type": "string"}, f"count{i}": {"type": "integer"}},
        "required": [f"name{i}", f"count{i}"],
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def person() -> dict:
    props = {f"field{i}": {"type": t} for i, t in enumerate(["string", "integer", "boolean"] * 4)}
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def largest(make, limits) -> int:
    """The most alternatives `make(n)` may have within the limits."""
    from app.engine.grammar_rules import count_nodes

    n = 1
    while True:
        schema = make(n + 1)
        text = json.dumps(schema, separators=(",", ":"))
        if len(text) > limits.max_bytes or count_nodes(schema, limits.max_nodes) > limits.max_nodes:
            return n
        n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    import xgrammar as xgr
    from transformers import AutoTokenizer

    from app.engine.grammar_compile import compile_with
    from app.engine.grammar_rules import GrammarLimits, count_nodes
    from app.engine.loader import resolve_source
    from app.engine.structured import Grammars, OutputConstraint
    from app.settings import get_settings

    settings = get_settings()
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_source(settings.base_model, settings.model_cache)
    )
    defaults = GrammarLimits()
    limits = GrammarLimits(defaults.max_bytes, defaults.max_nodes, args.timeout)
    grammars = Grammars(tokenizer, len(tokenizer), {tokenizer.eos_token_id}, limits=limits)
    local = xgr.GrammarCompiler(grammars.info, max_threads=2, cache_enabled=False)
    grammars.compile(OutputConstraint.regex("warm-up"))  # the forkserver's start

    closed_n = largest(lambda n: {"anyOf": [obj(i, True) for i in range(n)]}, defaults)
    open_n = largest(lambda n: {"anyOf": [obj(i, False) for i in range(n)]}, defaults)
    cases = {
        "12 properties, closed": person(),
        f"anyOf {closed_n} closed objects (limit)": {
            "anyOf": [obj(i, True) for i in range(closed_n)]
        },
        "anyOf 5 open objects": {"anyOf": [obj(i, False) for i in range(5)]},
        f"anyOf {open_n} open objects (limit)": {"anyOf": [obj(i, False) for i in range(open_n)]},
        "anyOf 2000 open objects (the probe)": {"anyOf": [obj(i, False) for i in range(2000)]},
        "pattern [a-z]{1,20000}": {"type": "string", "pattern": "[a-z]{1,20000}"},
    }
    print(
        f"tokenizer: {len(tokenizer)} tokens; limits: {defaults.max_bytes} bytes, "
        f"{defaults.max_nodes} nodes; deadline here {args.timeout:g} s"
    )
    for name, schema in cases.items():
        constraint = OutputConstraint.json_schema(schema, "schema")
        out = {
            "schema": name,
            "bytes": len(constraint.spec),
            "nodes": count_nodes(schema, 10**9),
        }
        start = time.perf_counter()
        try:
            grammars.compile(constraint)
            out["outcome"] = "compiled"
        except Exception as exc:  # the outcome is what is measured
            out["outcome"] = getattr(exc, "code", type(exc).__name__)
        out["s"] = round(time.perf_counter() - start, 2)
        if out["outcome"] == "compiled":
            start = time.perf_counter()
            compile_with(local, "json", constraint.spec)
            out["in_process_s"] = round(time.perf_counter() - start, 2)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
