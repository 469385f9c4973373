"""The streaming detokenizer gives the same deltas, text and stop as decoding the whole
output at every token (what it replaced), on the tiny byte-level tokenizer: multi-byte
characters split across tokens, special tokens, stop sequences and their holdback."""

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from app.engine.detokenizer import TextAssembler


class WholeTextAssembler:
    """The reference: re-decode everything, search every stop in the whole text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...]) -> None:
        self.tokenizer, self.stop = tokenizer, stop
        self.token_ids: list[int] = []
        self.emitted, self.text, self.stopped = 0, "", False
        self._holdback = max((len(s) for s in stop), default=1) - 1

    def add(self, token_id: int) -> str:
        self.token_ids.append(token_id)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        for s in self.stop:
            at = text.find(s)
            if at != -1:
                self.text, self.stopped = text[:at], True
                return self._take(len(self.text))
        self.text = text
        return self._take(max(self.emitted, len(text) - self._holdback))

    def flush(self) -> str:
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        delta = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return delta


def _run(
    assembler: TextAssembler | WholeTextAssembler, ids: list[int]
) -> tuple[list[str], str, bool]:
    deltas = []
    for token in ids:
        deltas.append(assembler.add(token))
        if assembler.stopped:
            break
    deltas.append(assembler.flush())
    return deltas, assembler.text, assembler.stopped


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


TEXTS = [
    "The capital of France is Paris. Très bien, naïve café!",
    "snowman ☃ and a check ✓, then 日本語 and an emoji 🙂 at the end",
    "positive<|im_end|> negative<|im_start|>neutral",  # special tokens are skipped
]
STOPS = [(), ("Paris",), ("is", "café"), ("☃ and",), ("🙂",), ("neutral", "<no match>")]


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("text", TEXTS)
def test_same_as_whole_text_decode(tokenizer, text: str, stop: tuple[str, ...]) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    streaming = TextAssembler(tokenizer, stop)
    assert streaming._stream is not None  # the incremental path is the one under test
    got = _run(streaming, ids)
    assert got == _run(WholeTextAssembler(tokenizer, stop), ids)
    deltas, final, stopped = got
    assert "".join(deltas) == final
    assert not any("\ufffd" in d for d in deltas)  # no half characters streamed
    if not stop:
        assert final == tokenizer.decode(ids, skip_special_tokens=True)
    assert stopped == any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in stop)


def test_random_token_ids_match_whole_text_decode(tokenizer) -> None:
    """Random ids include lone continuation bytes and specials: whatever the bytes, the
    deltas match the reference's."""
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 24))]
        stop = rng.choice(STOPS)
        assert _run(TextAssembler(tokenizer, stop), ids) == _run(
            WholeTextAssembler(tokenizer, stop), ids
        ), ids


def test_tokenizer_that_tidies_spaces_decodes_whole_text(tokenizer) -> None:
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer.name_or_path, clean_up_tokenization_spaces=True
    )
    ids = tokenizer.encode(TEXTS[0], add_special_tokens=False)
    whole = TextAssembler(tokenizer, ("café",))
    assert whole._stream is None
    assert _run(whole, ids) == _run(WholeTextAssembler(tokenizer, ("café",)), ids)
