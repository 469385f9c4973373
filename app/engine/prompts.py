"""Prompt rendering through the tokenizer's chat template.

The server and the training worker both call these, so a prompt is tokenised the same way
when it is trained on and when it is served.

Message contents are text, never control tokens. `render_chat` wraps any control-token text
in a message (`<|im_end|>`, say) in two private-use markers; `encode` reads a marked token as
the plain characters it is made of, drops the markers, and reads everything else as before, so
only the chat template's own `<|im_start|>`/`<|im_end|>` are real. Text with nothing marked is
tokenised exactly as a single tokenizer call would. `literal` marks text that is not a chat
message (a completion template's prompt); `shown` is a marked text as a client sees it.
"""

import re
import weakref
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from app.engine.errors import InvalidInput

# Supplementary private-use characters (no model has them in its vocabulary). Marking drops
# any already in the text first, so nobody can forge a marked token or a lone marker.
LITERAL_START = "\U000f0000"
LITERAL_END = "\U000f0001"
_MARKERS = re.compile(f"[{LITERAL_START}{LITERAL_END}]")


@dataclass
class _Controls:
    """One tokenizer's control tokens, worked out once."""

    any_token: re.Pattern  # any control token
    marked: re.Pattern  # a marked control token (group 1), or a lone marker
    newline: list[int]
    as_text: dict[str, list[int]] = field(default_factory=dict)  # token -> its characters' ids


_controls: "weakref.WeakKeyDictionary[PreTrainedTokenizerBase, _Controls]"
_controls = weakref.WeakKeyDictionary()


def control_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The tokens user text must never produce: every special added token, and any other
    added token the chat template writes itself (a `<think>`, say), longest first."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    found = {
        t.content
        for t in tokenizer.added_tokens_decoder.values()
        if t.content and (t.special or (t.content in template and not t.content.isspace()))
    }
    return sorted(found, key=len, reverse=True)


def _controls_of(tokenizer: PreTrainedTokenizerBase) -> _Controls:
    controls = _controls.get(tokenizer)
    if controls is None:
        tokens = "|".join(map(re.escape, control_tokens(tokenizer))) or "(?!)"
        marked = f"{LITERAL_START}({tokens}){LITERAL_END}|[{LITERAL_START}{LITERAL_END}]"
        controls = _Controls(re.compile(tokens), re.compile(marked), encode_raw(tokenizer, "\n"))
        _controls[tokenizer] = controls
    return controls


def literal(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """`text` with its control-token text marked, so `encode` reads it as plain text."""
    control = _controls_of(tokenizer).any_token
    return control.sub(f"{LITERAL_START}\\g<0>{LITERAL_END}", _MARKERS.sub("", text))


def shown(text: str) -> str:
    """A marked prompt text as it reads: the same characters, without the markers."""
    return _MARKERS.sub("", text)


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for `messages`, their contents marked (`literal`): pass it to `encode`,
    and through `shown` before showing it to anyone."""
    messages = [
        {**m, "content": literal(tokenizer, m["content"])} if isinstance(m["content"], str) else m
        for m in messages
    ]
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    # A model without a chat template still gets a readable transcript.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")


def encode_raw(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Text as the tokenizer reads it, control-token text included: a raw completions
    prompt, which (as on OpenAI's and vLLM's completions endpoints) may write its own."""
    # Plain prompts get no special tokens added, so the same text always maps to the same ids.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt text from `render_chat` or `literal`: marked control-token text
    becomes the plain tokens of its characters; the rest is read as `encode_raw` reads it."""
    if LITERAL_START not in text and LITERAL_END not in text:
        return encode_raw(tokenizer, text)
    controls = _controls_of(tokenizer)
    # [text, marked token, text, ...]; a lone marker (a template that cut a marked token
    # apart) splits with None in place of the token, so the text around it cannot join.
    pieces = controls.marked.split(text)
    texts = _text_pieces(tokenizer, controls, pieces[0::2])
    ids = texts[0]
    for token, following in zip(pieces[1::2], texts[1:], strict=True):
        if token:
            ids += _token_as_text(tokenizer, controls, token)
        ids += following
    return ids


def _text_pieces(
    tokenizer: PreTrainedTokenizerBase, controls: _Controls, pieces: list[str]
) -> list[list[int]]:
    """The ids of each piece of text between marked tokens, in one batched call. A piece after
    the first is encoded after a newline that is then cut off, so a SentencePiece tokenizer
    does not add the space it puts at the start of a text."""
    n = len(controls.newline)
    batch = [pieces[0]] + ["\n" + p for p in pieces[1:]]
    out = [list(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]]
    for i in range(1, len(out)):
        if not pieces[i]:
            out[i] = []
        elif out[i][:n] == controls.newline:
            out[i] = out[i][n:]
        else:  # the newline merged with the piece's start
            out[i] = encode_raw(tokenizer, pieces[i])
    return out


def _token_as_text(
    tokenizer: PreTrainedTokenizerBase, controls: _Controls, token: str
) -> list[int]:
    ids = controls.as_text.get(token)
    if ids is None:
        ids = _without_added_tokens(tokenizer, "\n" + token)
        if ids[: len(controls.newline)] == controls.newline:
            ids = ids[len(controls.newline) :]
        else:
            ids = _without_added_tokens(tokenizer, token)
        if tokenizer.convert_tokens_to_ids(token) in ids:
            raise InvalidInput(
                f"This model's tokenizer can only read {token!r} as its control token; "
                "remove it from the text.",
                param="messages",
                code="control_token_in_text",
            )
        controls.as_text[token] = ids
    return list(ids)


def _without_added_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The tokenizer's normaliser, pre-tokeniser and model, without its added-token matching:
    the ids of `text`'s characters. Not `split_special_tokens=True`, which flips a flag on
    the shared tokenizer (a race between request threads) and still matches non-special
    added tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: its own way of splitting them
        return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    splits = [text]
    if backend.pre_tokenizer is not None:
        splits = [s for s, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    return [token.id for split in splits for token in backend.model.tokenize(split)]


# User messages that start differently (letter, digit, space, punctuation, non-ASCII), so a
# token that merges the end of the chat header with the first character of the message
# differs between them and is left out of the shared part.
_PROBES = ("Hello there", "42 is a number", " leading space", "?!", "Ünïcode", "a")


def shared_chat_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids every one-user-message chat prompt starts with: the template's default
    system prompt and the user header. Served from the prefix cache like a template's fixed
    prefix, so a chat request's prefill runs only its own message."""
    try:
        rendered = [
            encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": p}]))
            for p in _PROBES
        ]
    except Exception:  # a template that needs more than one user message: no shared prefix
        return []
    shared = rendered[0]
    for ids in rendered[1:]:
        same = 0
        while same < min(len(shared), len(ids)) and shared[same] == ids[same]:
            same += 1
        shared = shared[:same]
    return shared
