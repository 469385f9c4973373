"""Request -> prompt token ids for a variant, with the context-window checks."""

import threading
from dataclasses import dataclass, field
from typing import Any

from app.engine.prompts import encode, encode_raw, render_chat
from app.engine.protocol import InferenceEngine
from app.engine.structured import OutputConstraint
from app.errors import BadRequest, ContextLengthExceeded
from app.inference.labels import LabelPlan
from app.inference.structured import effective_constraint
from app.protocol.chat import ChatCompletionRequest
from app.protocol.common import GenerationRequest
from app.routing.resolve import Variant
from app.settings import get_settings
from app.templates import rendering as templates

DEFAULT_MAX_TOKENS = 512


@dataclass
class PreparedPrompt:
    token_ids: list[int]
    examples_used: int | None = None
    # Leading tokens that are the same for every request of this variant (a template's
    # system prompt and static examples): the engine may reuse their key/value cache.
    prefix_len: int = 0
    defaults: dict[str, Any] = field(default_factory=dict)
    # The output constraint the answer keeps to: the request's own, else the template's
    # default (compiled and checked already); None: free text.
    constraint: OutputConstraint | None = None


def prepare_chat(
    engine: InferenceEngine,
    variant: Variant,
    req: ChatCompletionRequest,
    stop: threading.Event | None = None,
) -> PreparedPrompt:
    """`stop`: set when nobody waits for the answer any more (stops a grammar compile)."""
    prepared = _prepare_chat(engine, variant, req)
    prepared.constraint = effective_constraint(engine, variant, req, stop)
    return prepared


def prepare_completion(
    engine: InferenceEngine,
    variant: Variant,
    prompt: str,
    req: GenerationRequest,
    stop: threading.Event | None = None,
) -> PreparedPrompt:
    prepared = _prepare_completion(engine, variant, prompt, req)
    prepared.constraint = effective_constraint(engine, variant, req, stop)
    return prepared


def _prepare_chat(
    engine: InferenceEngine, variant: Variant, req: ChatCompletionRequest
) -> PreparedPrompt:
    messages = [m.as_template_dict() for m in req.messages]
    if variant.kind == "template" and variant.template is not None:
        request = templates.TemplateRequest(
            messages=messages, variables=req.variables, max_tokens=req.requested_max_tokens()
        )
        return _from_template(engine, variant.template, request)
    text = render_chat(engine.tokenizer, messages)
    return PreparedPrompt(encode(engine.tokenizer, text))


def _prepare_completion(
    engine: InferenceEngine, variant: Variant, prompt: str, req: GenerationRequest
) -> PreparedPrompt:
    if variant.kind == "template" and variant.template is not None:
        request = templates.TemplateRequest(
            prompt=prompt, variables=req.variables, max_tokens=req.requested_max_tokens()
        )
        return _from_template(engine, variant.template, request)
    # A raw prompt, as on OpenAI's completions endpoint: its control-token text is read as
    # those tokens. Chat messages and template text never are (engine/prompts.py).
    return PreparedPrompt(encode_raw(engine.tokenizer, prompt))


def _from_template(
    engine: InferenceEngine, tmpl: templates.ResolvedTemplate, request: templates.TemplateRequest
) -> PreparedPrompt:
    built = templates.prepare(engine.tokenizer, engine.context_window, tmpl, request)
    return PreparedPrompt(
        built.token_ids,
        examples_used=len(built.examples),
        prefix_len=built.prefix_len,
        defaults=dict(tmpl.params),
    )


def check_request_size(sequences: list[tuple[int, int]], labels: LabelPlan | None = None) -> None:
    """`sequences`: (prompt tokens, max_tokens) of each sequence the request would run (every
    prompt, n times); `labels`: its label rows, each a prompt plus a label. One request may
    not hold more of the engine than MAX_REQUEST_TOKENS."""
    limit = get_settings().max_request_tokens
    total = sum(prompt + completion for prompt, completion in sequences)
    if total > limit:
        raise BadRequest(
            f"This request asks for up to {total} tokens ({len(sequences)} sequences of prompt "
            f"plus max_tokens), above this server's limit of {limit} per request. Ask for "
            "fewer max_tokens, a smaller n or fewer prompts.",
            param="max_tokens",
            code="request_too_large",
        )
    if labels is None:
        return
    scoring = sum(prompt + label for prompt, label in labels.sequences())
    if total + scoring > limit:
        raise BadRequest(
            f"This request asks for up to {total + scoring} tokens: {total} for its "
            f"{len(sequences)} sequences of prompt plus max_tokens and {scoring} for its "
            f"{len(labels.rows)} label scores (one prompt plus one label each), above this "
            f"server's limit of {limit} per request. Send fewer labels or prompts, or leave "
            "out logprobs (the labels then only constrain the answer).",
            param=labels.param,
            code="request_too_large",
        )


def max_tokens_for(
    engine: InferenceEngine, req: GenerationRequest, prompt_len: int, defaults: dict[str, Any]
) -> int:
    """The completion budget; a request that cannot fit is refused, never truncated silently."""
    cap = get_settings().max_tokens_cap
    requested = req.requested_max_tokens() or defaults.get("max_tokens")
    if requested is not None and requested > cap:
        raise BadRequest(
            f"max_tokens is {requested}, above this server's cap of {cap}.",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    room = engine.context_window - prompt_len
    if requested is None:
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {engine.context_window} tokens; "
                f"the prompt has {prompt_len}.",
                param="messages",
            )
        return min(DEFAULT_MAX_TOKENS, cap, room)
    if prompt_len + requested > engine.context_window:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {engine.context_window} tokens. "
            f"The request has {prompt_len} prompt tokens and asks for {requested} more.",
            param="max_tokens",
        )
    return int(requested)
