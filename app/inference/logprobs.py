"""Engine log-probabilities -> the OpenAI shapes (chat's per-token objects, completions'
parallel lists). Token texts come from decoding each id on its own."""

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from app.engine.requests import TokenLogprob
from app.protocol.chat import ChatLogprobs, ChatTokenLogprob
from app.protocol.common import TopLogprob
from app.protocol.completions import CompletionLogprobs


def _text(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str:
    return tokenizer.decode([token_id])


def _top(tokenizer: PreTrainedTokenizerBase, token_id: int, logprob: float) -> TopLogprob:
    text = _text(tokenizer, token_id)
    return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8")))


def chat_logprobs(
    tokenizer: PreTrainedTokenizerBase, entries: Sequence[TokenLogprob]
) -> ChatLogprobs:
    content = []
    for e in entries:
        chosen = _top(tokenizer, e.token_id, e.logprob)
        content.append(
            ChatTokenLogprob(
                **chosen.model_dump(),
                top_logprobs=[_top(tokenizer, t, lp) for t, lp in e.top],
            )
        )
    return ChatLogprobs(content=content)


def completion_logprobs(
    tokenizer: PreTrainedTokenizerBase,
    entries: Sequence[TokenLogprob],
    offset: int,
    with_top: bool,
) -> CompletionLogprobs:
    """`offset`: where the first token's text starts in the choice's text."""
    tokens, offsets = [], []
    for e in entries:
        tokens.append(_text(tokenizer, e.token_id))
        offsets.append(offset)
        offset += len(tokens[-1])
    top = None
    if with_top:
        top = [{_text(tokenizer, t): lp for t, lp in e.top} for e in entries]
    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=top,
        text_offset=offsets,
    )
