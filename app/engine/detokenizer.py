"""Turns one row's generated token ids into text deltas, honouring stop sequences."""

from transformers import PreTrainedTokenizerBase


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

    def add(self, token_id: int) -> str:
        """Adds a token, returns the text that is now safe to stream (maybe empty)."""
        self.token_ids.append(token_id)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""  # half of a multi-byte character: wait for the rest
        for s in self.stop:
            at = text.find(s)
            if at != -1:
                self.text = text[:at]
                self.stopped = True
                return self._take(len(self.text))
        self.text = text
        return self._take(max(self.emitted, len(text) - self._holdback))

    def flush(self) -> str:
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        delta = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return delta
