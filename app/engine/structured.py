"""Structured outputs in the built-in engine: grammars (xgrammar), compiled once per schema
(in a child process, within a deadline: `grammar_process`), and one matcher per constrained
row that masks that row's logits at every step.

`OutputConstraint` is what a request asks for (a JSON schema, any JSON object, a regex or a
fixed list of choices), engine-neutral and hashable: it keys the compiled-grammar cache.
`Grammars` compiles (LRU-cached) and checks a constraint before the request is queued;
`RowConstraint` is the per-row state the scheduler asks for a token mask and tells about
each token it picked.
"""

import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import xgrammar as xgr
from transformers import PreTrainedTokenizerBase

from app.engine import grammar_process
from app.engine.errors import EngineOverloaded, InvalidInput
from app.engine.grammar_compile import SEPARATORS, compile_with
from app.engine.grammar_rules import ConstraintError, GrammarLimits, check_schema, check_size

ConstraintKind = Literal["json", "regex", "choice"]


def invalid_response_format(exc: ConstraintError) -> InvalidInput:
    """The 400 every engine answers for a constraint it cannot run."""
    return InvalidInput(str(exc), param=exc.param or "response_format", code=exc.code)


@dataclass(frozen=True)
class OutputConstraint:
    kind: ConstraintKind
    # json: the schema as canonical JSON text; regex: the pattern; choice: a JSON list.
    spec: str
    # Where the constraint came from in the request, for error messages (not part of the key).
    param: str | None = field(default=None, compare=False)

    @classmethod
    def json_schema(cls, schema: dict, param: str | None = None) -> "OutputConstraint":
        # Key order stays: properties are generated in the order the schema declares them.
        return cls("json", json.dumps(schema, separators=SEPARATORS), param)

    @classmethod
    def json_object(cls, param: str | None = None) -> "OutputConstraint":
        return cls.json_schema({"type": "object"}, param)

    @classmethod
    def regex(cls, pattern: str, param: str | None = None) -> "OutputConstraint":
        return cls("regex", pattern, param)

    @classmethod
    def choice(cls, choices: list[str], param: str | None = None) -> "OutputConstraint":
        return cls("choice", json.dumps(list(choices)), param)

    @property
    def choices(self) -> list[str]:
        return json.loads(self.spec) if self.kind == "choice" else []

    def to_dict(self) -> dict:
        """The stored form (a template's default constraint)."""
        if self.kind == "json":
            return {"json": json.loads(self.spec)}
        if self.kind == "choice":
            return {"choice": self.choices}
        return {"regex": self.spec}


def conforms(constraint: OutputConstraint, text: str) -> bool:
    """Whether a finished answer is what the constraint asks for: JSON that parses, one of
    the choices, a full regex match. (The grammar guarantees it unless max_tokens cut the
    answer; the schema itself is not re-checked here.)"""
    if constraint.kind == "json":
        try:
            json.loads(text)
        except ValueError:
            return False
        return True
    if constraint.kind == "choice":
        return text in constraint.choices
    try:
        return re.fullmatch(constraint.spec, text) is not None
    except re.error:  # a pattern xgrammar accepts that Python's dialect does not
        return False


@dataclass
class GrammarStats:
    compiles: int = 0
    hits: int = 0
    compile_seconds: float = 0.0
    timeouts: int = 0
    cancelled: int = 0


class Grammars:
    """Compiles constraints for one tokenizer; keeps the last `capacity` compiled grammars.
    A constraint is checked against `limits` (size, supported keywords) first, then compiled
    in a child process that is stopped at the deadline or when the caller gives up.
    `compile_here`: compile it again in this process, for rows to run on (the built-in
    engine); without it (the vLLM engine, whose server compiles its own) a constraint is
    only checked, and `compile` returns None."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocab_size: int,
        stop_ids: set[int],
        capacity: int = 64,
        limits: GrammarLimits | None = None,
        compile_here: bool = True,
    ) -> None:
        # The model's vocabulary may be padded past the tokenizer's; masks cover all of it.
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self._info_json = self.info.serialize_json()  # what each compile process starts from
        # xgrammar's own cache is unbounded: this class keeps an LRU instead.
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)
        threading.Thread(
            target=grammar_process.warm_up, name="grammar-warm-up", daemon=True
        ).start()
        self.vocab_size = vocab_size
        self.limits = limits or GrammarLimits()
        self.compile_here = compile_here
        self._cache: OrderedDict[OutputConstraint, xgr.CompiledGrammar | None] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity
        self.stats = GrammarStats()
        # xgrammar's JSON strings admit raw control characters, which JSON forbids; compact
        # JSON has no whitespace outside strings either, so for JSON no token holding a byte
        # below 0x20 is ever right.
        self.json_allowed = pack_allowed(
            [not any(b < 0x20 for b in token) for token in self.info.decoded_vocab], vocab_size
        )
        self._json_allowed_bytes = self.json_allowed.numpy().tobytes()  # for the child

    def compile(
        self, constraint: OutputConstraint, cancelled: threading.Event | None = None
    ) -> xgr.CompiledGrammar | None:
        """The compiled grammar (cached; None without `compile_here`). Raises ConstraintError
        (a 400), EngineOverloaded (every compile slot busy) or
        grammar_process.CompileCancelled (`cancelled` was set: the caller's client left)."""
        with self._lock:
            if constraint in self._cache:
                self._cache.move_to_end(constraint)
                self.stats.hits += 1
                return self._cache[constraint]
        self.check(constraint)
        started = time.perf_counter()
        compiled = self._compile(constraint, cancelled)
        with self._lock:
            self.stats.compiles += 1
            self.stats.compile_seconds += time.perf_counter() - started
            self._cache[constraint] = compiled
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return compiled

    def check(self, c: OutputConstraint) -> None:
        """The limits and keyword rules (grammar_rules), before any compile work."""
        check_size(c.kind, c.spec, c.param, self.limits)
        if c.kind == "json":
            check_schema(json.loads(c.spec), c.param, self.limits)

    def _compile(
        self, c: OutputConstraint, cancelled: threading.Event | None
    ) -> xgr.CompiledGrammar | None:
        """Compiled in a child first, which is stopped at the deadline or when the caller gives
        up, and checked there to allow a first token; then, for `compile_here`, compiled again
        here (the same, bounded, work): handing the child's grammar over would cost far more
        than compiling it twice (grammar_process's docstring)."""
        timeout = self.limits.compile_timeout_s
        allowed = self._json_allowed_bytes if c.kind == "json" else None
        try:
            with grammar_process.slot():
                grammar_process.check_compiles(
                    self._info_json, c.kind, c.spec, timeout, cancelled, allowed
                )
                return self._compile_here(c) if self.compile_here else None
        except grammar_process.CompileFailed as exc:
            raise ConstraintError(str(exc), c.param) from None
        except grammar_process.CannotMatch:
            # A grammar that allows no first token (e.g. the regex `[^\s\S]`) would leave
            # the row nothing to pick: refused up front.
            what = {"json": "schema", "regex": "regex", "choice": "choice list"}[c.kind]
            raise ConstraintError(f"The {what} cannot match any text.", c.param) from None
        except grammar_process.CompileTimeout:
            self.stats.timeouts += 1
            raise ConstraintError(
                f"The constraint did not compile within {timeout:g} s "
                "(GRAMMAR_COMPILE_TIMEOUT_S): it is too complex for this server. Simplify it "
                "(e.g. close objects with additionalProperties: false, fewer alternatives, "
                "shorter repetitions in patterns).",
                c.param,
                "response_format_too_complex",
            ) from None
        except grammar_process.CompilerBusy:
            raise EngineOverloaded(
                "The server is busy compiling other grammars. Retry shortly."
            ) from None
        except grammar_process.CompileCancelled:
            self.stats.cancelled += 1
            raise

    def _compile_here(self, c: OutputConstraint) -> xgr.CompiledGrammar:
        try:
            return compile_with(self._compiler, c.kind, c.spec)
        except RuntimeError as exc:  # the child compiled it: not expected
            raise ConstraintError(grammar_process.library_message(exc), c.param) from None

    def row(self, constraint: OutputConstraint) -> "RowConstraint":
        # Callers checked the constraint first (in the threadpool), so this is a cache hit.
        compiled = self.compile(constraint)
        if compiled is None:
            raise RuntimeError("rows need Grammars(compile_here=True)")
        return self._row(compiled, constraint)

    def _row(self, compiled: xgr.CompiledGrammar, c: OutputConstraint) -> "GrammarRow":
        allowed = self.json_allowed if c.kind == "json" else None
        return GrammarRow(xgr.GrammarMatcher(compiled), allowed)


class EngineGrammars:
    """An engine's structured outputs, the same on both engines: its `Grammars`, built on
    first use (reading the vocabulary takes a moment, and most engines, in tests and
    workers, never see a constraint), and the 400 for a constraint it cannot run."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocab_size: int,
        stop_ids: set[int],
        limits: GrammarLimits,
        *,
        compile_here: bool = True,
    ) -> None:
        self._args = (tokenizer, vocab_size, stop_ids)
        self._limits = limits
        self._compile_here = compile_here
        self._grammars: Grammars | None = None
        self._lock = threading.Lock()

    @property
    def grammars(self) -> Grammars:
        with self._lock:
            if self._grammars is None:
                self._grammars = Grammars(
                    *self._args, limits=self._limits, compile_here=self._compile_here
                )
            return self._grammars

    def check(self, constraint: OutputConstraint, cancelled: threading.Event | None = None) -> None:
        """Compiles (and caches) the constraint; an InvalidInput (400) if it is too large,
        cannot compile in time or cannot match. Blocks while it compiles (in a child process,
        up to GRAMMAR_COMPILE_TIMEOUT_S): call it off the event loop; setting `cancelled`
        stops it."""
        try:
            self.grammars.compile(constraint, cancelled)
        except ConstraintError as exc:
            raise invalid_response_format(exc) from None

    def row(self, constraint: OutputConstraint) -> "RowConstraint":
        """A fresh matcher for one row (the constraint was checked before: a cache hit)."""
        try:
            return self.grammars.row(constraint)
        except ConstraintError as exc:
            raise invalid_response_format(exc) from None


def pack_allowed(allowed: list[bool], vocab_size: int) -> torch.Tensor:
    """A bitmask row (int32 words, token t at bit t % 32 of word t // 32) from booleans."""
    words = (vocab_size + 31) // 32
    flags = np.zeros(words * 32, dtype=bool)
    flags[: len(allowed)] = allowed[:vocab_size]
    packed = np.packbits(flags, bitorder="little").view("<i4")
    return torch.from_numpy(packed.copy())


class RowConstraint:
    """What the scheduler asks of a constrained row: which tokens it may pick next, and the
    token it picked."""

    def fill(self, bitmask: torch.Tensor, index: int) -> None:
        raise NotImplementedError

    def accept(self, token: int) -> bool:
        raise NotImplementedError


class GrammarRow(RowConstraint):
    def __init__(self, matcher: xgr.GrammarMatcher, allowed: torch.Tensor | None) -> None:
        self.matcher = matcher
        self.allowed = allowed  # tokens the grammar may offer but the format never wants

    def fill(self, bitmask: torch.Tensor, index: int) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, index)
        if self.allowed is not None:
            bitmask[index] &= self.allowed

    def accept(self, token: int) -> bool:
        return self.matcher.accept_token(token)


class ForcedTokens(RowConstraint):
    """Allows exactly the given tokens in order, then only a stop token: the row scores a
    fixed continuation (a choice's log-probability) through the normal decode path."""

    def __init__(self, tokens: list[int], stop_id: int) -> None:
        self.tokens = tokens
        self.stop_id = stop_id
        self.at = 0

    def fill(self, bitmask: torch.Tensor, index: int) -> None:
        token = self.tokens[self.at] if self.at < len(self.tokens) else self.stop_id
        row = bitmask[index]
        row.zero_()
        row[token // 32] = _bit(token % 32)

    def accept(self, token: int) -> bool:
        if self.at < len(self.tokens) and token == self.tokens[self.at]:
            self.at += 1
            return True
        return False


def _bit(position: int) -> int:
    # int32 words: bit 31 set is a negative number.
    value = 1 << position
    return value - (1 << 32) if position == 31 else value


def mask_logits(logits: torch.Tensor, rows: list[tuple[int, RowConstraint]]) -> None:
    """Sets to -inf, in place, every token the row's constraint does not allow next, for the
    listed rows only (`logits`: float [rows, vocab]); other rows are left as they are."""
    batch, vocab = logits.shape
    bitmask = xgr.allocate_token_bitmask(batch, vocab)
    for i, constraint in rows:
        constraint.fill(bitmask, i)
    if logits.device.type != "cpu":
        bitmask = bitmask.to(logits.device, non_blocking=True)
    xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=vocab, indices=[i for i, _ in rows])
