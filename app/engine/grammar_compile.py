"""How a constraint compiles with xgrammar: run in the compile process (`grammar_process`)
to check it within a deadline, and in the API process to build the grammar its rows use.
Its own module so that the compile process and `structured` share it without importing each
other."""

import json

import torch
import xgrammar as xgr

# Compact JSON: free whitespace lets a small model loop on spaces and newlines.
SEPARATORS = (",", ":")

REGEX_SPECIAL = set("\\^$.|?*+()[]{}/-")


def literal_regex(text: str) -> str:
    """`text` as a regex that matches exactly it (xgrammar's regex dialect: escape the
    metacharacters, write control characters as \\uXXXX)."""
    out = []
    for ch in text:
        if ch in REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def compile_with(compiler: xgr.GrammarCompiler, kind: str, spec: str) -> xgr.CompiledGrammar:
    """One constraint through xgrammar (run in the compile process); RuntimeError if it does
    not compile."""
    if kind == "json":
        return compiler.compile_json_schema(
            spec, any_whitespace=False, separators=SEPARATORS, strict_mode=False
        )
    if kind == "regex":
        return compiler.compile_regex(spec)
    choices = json.loads(spec)
    return compiler.compile_regex("|".join(f"({literal_regex(choice)})" for choice in choices))


def can_start(compiled: xgr.CompiledGrammar, vocab_size: int, allowed: bytes | None) -> bool:
    """Whether the grammar allows some first token (of those set in `allowed`, a packed
    bitmask row, when given). Run in the compile process, right after the compile."""
    mask = xgr.allocate_token_bitmask(1, vocab_size)
    xgr.GrammarMatcher(compiled).fill_next_token_bitmask(mask, 0)
    if allowed is not None:
        mask[0] &= torch.frombuffer(bytearray(allowed), dtype=torch.int32)
    return bool(mask.any())
