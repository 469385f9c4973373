"""A request's generated token ids -> the events the built-in engine would send for them.

vLLM streams token ids (`return_token_ids`); adaptd turns them into text with its own
detokenizer and stop-sequence handling, so both engines answer with the same text for the
same tokens, and counts tokens as the built-in engine does (eos excluded).
"""

from app.engine.detokenizer import TextAssembler
from app.engine.requests import Delta, Event, Finished, TokenLogprob
from app.engine.sampling import SamplingParams


class OutputAssembler:
    def __init__(
        self,
        tokenizer,  # a transformers tokenizer
        params: SamplingParams,
        prompt_len: int,
        eos_ids: set[int],
    ) -> None:
        self.params = params
        self.prompt_len = prompt_len
        self.eos_ids = eos_ids
        self.text = TextAssembler(tokenizer, params.stop)
        self.generated: list[int] = []
        self.logprobs: list[TokenLogprob] = []
        self._pending: list[TokenLogprob] = []
        self.finished: str | None = None  # the finish reason, once decided

    def add(self, token: int, entry: TokenLogprob | None) -> list[Event]:
        """One generated token; returns the events it makes (the last one Finished when
        this token ends the request)."""
        if self.finished is not None:
            return []
        if token in self.eos_ids:
            return self.finish("stop")
        self.generated.append(token)
        if entry is not None:
            self._pending.append(entry)
        events: list[Event] = []
        delta = self.text.add(token)
        if delta:
            events.append(Delta(delta, self._hand_out()))
        if self.text.stopped:
            return events + self.finish("stop")
        if len(self.generated) >= self.params.max_tokens:
            return events + self.finish("length")
        return events

    def finish(self, reason: str) -> list[Event]:
        if self.finished is not None:
            return []
        self.finished = reason
        events: list[Event] = []
        if self.text.stopped:
            self._pending.clear()  # a stop sequence's tokens: not in the text
        tail = self.text.flush()
        if tail or self._pending:
            events.append(Delta(tail, self._hand_out()))
        events.append(
            Finished(
                reason,
                self.prompt_len,
                len(self.generated),
                self.text.text,
                tuple(self.generated),
                tuple(self.logprobs) if self.params.logprobs is not None else None,
            )
        )
        return events

    def _hand_out(self) -> tuple[TokenLogprob, ...]:
        out = tuple(self._pending)
        self.logprobs.extend(out)
        self._pending.clear()
        return out
