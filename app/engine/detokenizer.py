"""Turns one row's generated token ids into text deltas, honouring stop sequences.

Each token is decoded once, against a short window of the tokens before it (tokenizers'
`DecodeStream`), instead of re-decoding the whole output at every step. Tokenizers with no
fast backend, or whose `decode` tidies spaces afterwards, keep the whole-text decode, since
that is what their `decode` returns.
"""

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream
from transformers import PreTrainedTokenizerBase


def _stream_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return None
    return backend


class TextAssembler:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.token_ids: list[int] = []
        self.emitted = 0  # characters of the final text already handed out
        self.text = ""
        self.stopped = False
        # A partial stop sequence at the end of the text must not be streamed yet.
        self._holdback = max((len(s) for s in stop), default=1) - 1
        self._backend = _stream_backend(tokenizer)
        self._stream = DecodeStream(skip_special_tokens=True) if self._backend else None

    def add(self, token_id: int) -> str:
        """Adds a token, returns the text that is now safe to stream (maybe empty)."""
        self.token_ids.append(token_id)
        decoded = self._decode_next(token_id)
        if decoded is None:
            return ""
        text, clean = decoded
        for s in self.stop:
            at = text.find(s, max(0, clean - len(s) + 1) if s else 0)
            if at != -1:
                self.text = text[:at]
                self.stopped = True
                return self._take(len(self.text))
        self.text = text
        return self._take(max(self.emitted, len(text) - self._holdback))

    def flush(self) -> str:
        return self._take(len(self.text))

    def _decode_next(self, token_id: int) -> tuple[str, int] | None:
        """The whole text so far, and how many of its first characters are known to hold no
        stop sequence; None while the text ends in half of a multi-byte character."""
        if self._stream is not None:
            try:
                piece = self._stream.step(self._backend, token_id)
            except Exception:  # a decoder the stream cannot follow: decode whole texts
                self._stream = None
            else:
                if piece is None:
                    return None  # half of a character, or a special token: no new text
                return self.text + piece, len(self.text)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return None
        return text, 0  # a whole-text decode may change earlier text: search all of it

    def _take(self, upto: int) -> str:
        delta = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return delta
