"""A template version + one request -> the exact prompt text and token ids.

Chat: the system prompt as the system message, each selected example as a user turn (the
instruction rendered with the example's fields) and an assistant turn (its output), then the
request's conversation with its last user message replaced by the instruction rendered with
`input` = that message. The whole list goes through the tokenizer's chat template
(app/engine/prompts.render_chat, shared with training).

Completion: the same pieces as plain text blocks separated by blank lines; the request's
block ends with a newline so the model continues with the output.

Either way everything but the chat template's own markup is text: control-token text in a
message, the system prompt, an example or a variable is read as its characters, never as the
token (engine/prompts.literal), so a request cannot close its turn and open another.

Whatever the selection rule, examples are dropped from the least relevant end until the
prompt plus the completion budget fits the context window.
"""

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from app.engine.prompts import encode, literal, render_chat, shown
from app.engine.structured import OutputConstraint
from app.errors import BadRequest
from app.templates import sandbox, selection

# When neither the request nor the template sets max_tokens, keep this much room for the
# completion (at most a quarter of the window) when deciding how many examples fit.
DEFAULT_COMPLETION_RESERVE = 512


@dataclass(frozen=True, eq=False)
class ResolvedTemplate:
    """One immutable template version, loaded for serving."""

    name: str
    version: int
    model: str  # what it runs on: the base model's name or an `ft:` adapter
    system_prompt: str
    instruction: str
    examples: list[dict[str, Any]]
    rule: str
    k: int | None
    params: dict[str, Any]  # default generation parameters (no None values)
    variables: dict[str, str | None]  # declared request variables -> default
    embeddings: bytes | None = None
    # The output constraint requests get unless they bring their own (None: free text).
    output_constraint: OutputConstraint | None = None

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class BuiltPrompt:
    text: str  # as shown (engine/prompts.shown): token_ids are what the model gets
    token_ids: list[int]
    examples: list[int]  # indices into the version's examples, in prompt order
    prefix_len: int  # leading tokens shared by every request of this version
    messages: list[dict[str, str]] | None = None
    # Character span of each token in `text` (fast tokenizers), for trimming estimates.
    offsets: list[tuple[int, int]] | None = field(default=None, repr=False)


def reserve_tokens(context_window: int, requested: int | None) -> int:
    if requested is not None:
        return requested
    return max(1, min(DEFAULT_COMPLETION_RESERVE, context_window // 4))


def required_variables(tmpl: ResolvedTemplate) -> set[str]:
    """Variables a request must send: what the instruction names, minus input and defaults."""
    used = sandbox.undeclared_variables(tmpl.instruction)
    return {v for v in used if v != "input" and tmpl.variables.get(v) is None}


def defaults_of(variables: dict[str, str | None]) -> dict[str, Any]:
    return {k: v for k, v in variables.items() if v is not None}


def render_example(tmpl: ResolvedTemplate, example: dict[str, Any]) -> str:
    """An example's user turn: its own fields over the declared defaults."""
    return sandbox.render(tmpl.instruction, {**defaults_of(tmpl.variables), **example})


def render_request(tmpl: ResolvedTemplate, input_text: str, variables: dict[str, Any]) -> str:
    for name in sorted(required_variables(tmpl)):
        if name not in variables:
            raise BadRequest(
                f"Template '{tmpl.reference}' needs the variable '{name}': send it in "
                "the request's `variables` object.",
                param=f"variables.{name}",
                code="missing_template_variable",
            )
    context = {**defaults_of(tmpl.variables), **variables, "input": input_text}
    return _render(tmpl, context)


def _render(tmpl: ResolvedTemplate, context: dict[str, Any]) -> str:
    try:
        return sandbox.render(tmpl.instruction, context)
    except sandbox.MissingVariable as exc:
        raise BadRequest(
            f"Template '{tmpl.reference}' needs the variable '{exc.name}': send it in "
            "the request's `variables` object.",
            param=f"variables.{exc.name}",
            code="missing_template_variable",
        ) from None
    except sandbox.TemplateRefused as exc:
        raise BadRequest(
            f"Template '{tmpl.reference}': {exc.message}", param="variables", code=exc.code
        ) from None


def _example_turns(tmpl: ResolvedTemplate, chosen: list[int]) -> list[str]:
    turns = []
    for i in chosen:
        try:
            turns.append(render_example(tmpl, tmpl.examples[i]))
        except sandbox.TemplateRefused as exc:  # validated on save; kept as a 400 anyway
            raise BadRequest(
                f"Template '{tmpl.reference}', example {i}: {exc.message}", code=exc.code
            ) from None
    return turns


@dataclass(frozen=True)
class TemplateRequest:
    """What one request brings to a template: chat `messages` (the last user message fills
    {{ input }}) or else a completion `prompt`; its variables; its own max_tokens (None: the
    template's default)."""

    messages: list[dict[str, str]] | None = None
    prompt: str = ""
    variables: dict[str, Any] | None = None
    max_tokens: int | None = None


def prepare(
    tokenizer: PreTrainedTokenizerBase,
    context_window: int,
    tmpl: ResolvedTemplate,
    request: TemplateRequest,
) -> BuiltPrompt:
    """The one way a template version and a request become a prompt: served requests
    (inference/prompting.py, which the evaluation runner uses too), /render and the console's
    preview all call it, so what /render shows is what the engine receives."""
    variables = request.variables or {}
    requested = request.max_tokens or tmpl.params.get("max_tokens")
    if request.messages is not None:
        return build_chat(tokenizer, context_window, tmpl, request.messages, variables, requested)
    return build_completion(tokenizer, context_window, tmpl, request.prompt, variables, requested)


# -- chat ----------------------------------------------------------------------------------
def chat_messages(
    system_prompt: str,
    example_turns: list[tuple[str, str]],
    conversation: list[dict[str, str]],
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(all messages, the static leading part: template system prompt + examples)."""
    system_parts = [system_prompt] if system_prompt else []
    request_system = [m["content"] for m in conversation if m["role"] == "system"]
    static: list[dict[str, str]] = (
        [{"role": "system", "content": system_prompt}] if system_prompt else []
    )
    merged = system_parts + request_system
    messages = [{"role": "system", "content": "\n\n".join(merged)}] if merged else []
    for user, assistant in example_turns:
        turn = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages += turn
        static += turn
    messages += [m for m in conversation if m["role"] != "system"]
    return messages, static


def build_chat(
    tokenizer: PreTrainedTokenizerBase,
    context_window: int,
    tmpl: ResolvedTemplate,
    conversation: list[dict[str, str]],
    variables: dict[str, Any],
    requested_max_tokens: int | None,
) -> BuiltPrompt:
    last_user = next(
        (i for i in range(len(conversation) - 1, -1, -1) if conversation[i]["role"] == "user"),
        None,
    )
    if last_user is None:
        raise BadRequest(
            f"Template '{tmpl.reference}' needs a user message: its text fills {{{{ input }}}}.",
            param="messages",
        )
    input_text = conversation[last_user]["content"]
    rendered = render_request(tmpl, input_text, variables)
    conversation = [dict(m) for m in conversation]
    conversation[last_user]["content"] = rendered
    chosen = selection.select(tmpl.examples, tmpl.rule, tmpl.k, tmpl.embeddings, input_text)
    users = _example_turns(tmpl, chosen)
    outputs = [str(tmpl.examples[i]["output"]) for i in chosen]

    def build(n: int) -> BuiltPrompt:
        messages, static = chat_messages(
            tmpl.system_prompt, list(zip(users[:n], outputs[:n], strict=True)), conversation
        )
        text = render_chat(tokenizer, messages)
        if tmpl.rule == "similar_k":  # the examples change per request: only the system part
            static = static[:1] if tmpl.system_prompt else []
        static_text = render_chat(tokenizer, static, add_generation_prompt=False) if static else ""
        ids, offsets = _tokenize(tokenizer, text)
        prefix = _prefix_len(tokenizer, static_text, text, ids, offsets)
        return BuiltPrompt(shown(text), ids, chosen[:n], prefix, messages, offsets)

    reserve = reserve_tokens(context_window, requested_max_tokens)
    return _fit(build, list(zip(users, outputs, strict=True)), context_window, reserve)


# -- completion ----------------------------------------------------------------------------
def completion_text(system_prompt: str, example_blocks: list[str], request_block: str) -> str:
    blocks = ([system_prompt] if system_prompt else []) + example_blocks + [request_block + "\n"]
    return "\n\n".join(blocks)


def build_completion(
    tokenizer: PreTrainedTokenizerBase,
    context_window: int,
    tmpl: ResolvedTemplate,
    prompt: str,
    variables: dict[str, Any],
    requested_max_tokens: int | None,
) -> BuiltPrompt:
    rendered = render_request(tmpl, prompt, variables)
    chosen = selection.select(tmpl.examples, tmpl.rule, tmpl.k, tmpl.embeddings, prompt)
    users = _example_turns(tmpl, chosen)
    outputs = [str(tmpl.examples[i]["output"]) for i in chosen]
    blocks = [f"{u}\n{o}" for u, o in zip(users, outputs, strict=True)]

    def build(n: int) -> BuiltPrompt:
        # All of it is text, the template's own and the request's: no control tokens.
        text = literal(tokenizer, completion_text(tmpl.system_prompt, blocks[:n], rendered))
        static_blocks = [tmpl.system_prompt] if tmpl.system_prompt else []
        if tmpl.rule != "similar_k":
            static_blocks += blocks[:n]
        static_text = literal(tokenizer, "".join(b + "\n\n" for b in static_blocks))
        ids, offsets = _tokenize(tokenizer, text)
        prefix = _prefix_len(tokenizer, static_text, text, ids, offsets)
        return BuiltPrompt(shown(text), ids, chosen[:n], prefix, None, offsets)

    reserve = reserve_tokens(context_window, requested_max_tokens)
    return _fit(build, list(zip(users, outputs, strict=True)), context_window, reserve)


# -- shared --------------------------------------------------------------------------------
def _tokenize(
    tokenizer: PreTrainedTokenizerBase, text: str
) -> tuple[list[int], list[tuple[int, int]] | None]:
    if not tokenizer.is_fast or text != shown(text):  # marked control-token text: no offsets
        return encode(tokenizer, text), None
    # The same call as engine/prompts.encode, asking for character offsets as well.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [(int(a), int(b)) for a, b in enc["offset_mapping"]]


def _fit(
    build: Callable[[int], BuiltPrompt],
    pairs: list[tuple[str, str]],
    context_window: int,
    reserve: int,
) -> BuiltPrompt:
    """The prompt with the most examples (from the front) that leaves `reserve` tokens.

    Rendering and tokenising a long prompt is the expensive part, so the count is first
    estimated from the full prompt's token offsets (where each example's text sits), then
    checked by building that prompt for real and stepping by one; only when the estimate
    is unavailable or far off does a binary search run. With none fitting, the
    zero-example prompt is returned and the caller's context check refuses it."""
    available = len(pairs)

    def fits(prompt: BuiltPrompt) -> bool:
        return len(prompt.token_ids) + reserve <= context_window

    full = build(available)
    if available == 0 or fits(full):
        return full
    guess = _estimate(full, pairs, context_window - reserve)
    if guess is None:
        return _bisect(build, fits, 0, available - 1)
    candidate = build(guess)
    if fits(candidate):
        for _ in range(3):  # step up while the next one fits too
            n = len(candidate.examples)
            if n == available - 1:
                return candidate
            bigger = build(n + 1)
            if not fits(bigger):
                return candidate
            candidate = bigger
        return _bisect(build, fits, len(candidate.examples), available - 1, candidate)
    for _ in range(3):  # step down until it fits
        n = len(candidate.examples)
        if n == 0:
            return candidate
        candidate = build(n - 1)
        if fits(candidate):
            return candidate
    return _bisect(build, fits, 0, len(candidate.examples) - 1)


def _bisect(
    build: Callable[[int], BuiltPrompt],
    fits: Callable[[BuiltPrompt], bool],
    lo: int,
    hi: int,
    best: BuiltPrompt | None = None,
) -> BuiltPrompt:
    """The largest count in [lo, hi] that fits (lo is known to fit, or is 0)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        candidate = build(mid)
        if fits(candidate):
            lo, best = mid, candidate
        else:
            hi = mid - 1
    return best if best is not None and len(best.examples) == lo else build(lo)


def _estimate(full: BuiltPrompt, pairs: list[tuple[str, str]], budget: int) -> int | None:
    """How many leading examples fit in `budget` tokens, judged from the full prompt: the
    tokens between the end of example n-1 and the end of the last one go away."""
    if full.offsets is None:
        return None
    spans, cursor = [], 0
    for user, output in pairs:
        start = full.text.find(user, cursor)
        if start < 0:
            return None  # the chat template changed the text (trimmed it, say)
        end = full.text.find(output, start + len(user))
        if end < 0:
            return None
        cursor = end + len(output)
        spans.append((start, cursor))
    ends = [end for _, end in full.offsets]
    total = len(full.token_ids)
    tail_from = bisect_right(ends, spans[-1][1])
    for n in range(len(spans) - 1, -1, -1):
        cut_from = bisect_right(ends, spans[n - 1][1] if n else spans[0][0])
        if total - (tail_from - cut_from) <= budget:
            return n
    return 0


def _prefix_len(
    tokenizer: PreTrainedTokenizerBase,
    static_text: str,
    text: str,
    ids: list[int],
    offsets: list[tuple[int, int]] | None,
) -> int:
    """Tokens of the static part that this prompt holds unchanged.

    Where a token straddles the end of the static part, that token is not counted."""
    if not static_text:
        return 0
    if offsets is not None and text.startswith(static_text):
        boundary = len(static_text)
        inside = bisect_right([end for _, end in offsets], boundary)
        aligned = inside > 0 and offsets[inside - 1][1] == boundary
        return inside if aligned else max(inside - 1, 0)
    static_ids = encode(tokenizer, static_text)
    shared = 0
    for a, b in zip(static_ids, ids, strict=False):
        if a != b:
            break
        shared += 1
    return shared if shared == len(static_ids) else max(shared - 1, 0)
