"""Each text_similarity metric gives what its reference library gives, on 20 pairs."""

import asyncio

import pytest
from nltk.translate.gleu_score import sentence_gleu
from rapidfuzz import fuzz
from rouge_score import rouge_scorer
from sacrebleu import sentence_bleu

from app.graders.service import grade, sample_from_text, validate_grader

PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("I like green eggs and ham.", "I do not like green eggs and ham."),
    ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumps over the lazy fox."),
    ("Revenue grew 4% in Q3.", "Q3 revenue rose by four percent."),
    ("hello", "hello"),
    ("hello world", "goodbye world"),
    ("", "something"),
    ("Water boils at 100 degrees Celsius at sea level.", "At sea level, water boils at 100 C."),
    ("She sells sea shells by the sea shore.", "She sells shells on the shore."),
    ("To be or not to be, that is the question.", "To be, or not to be: that is the question."),
    ("The meeting is moved to Tuesday at 3pm.", "Meeting moved: Tuesday 15:00."),
    ("Add two cups of flour and mix well.", "Mix in 2 cups of flour."),
    ("The patient reports mild headache and nausea.", "Patient has a mild headache, also nausea."),
    ("Error: file not found", "error - the file was not found"),
    ("Machine learning models need data.", "Data is needed by machine learning models."),
    (
        "Return the order within 30 days for a refund.",
        "Refunds are given for returns within 30 days.",
    ),
    ("北京是中国的首都。", "中国的首都是北京。"),
    ("a b c d e f g", "a b c d e f g h"),
    ("The train leaves at noon.", "Trains depart hourly from platform 9."),
]


def score(metric: str, text: str, reference: str) -> float:
    grader = validate_grader(
        {
            "type": "text_similarity",
            "name": "t",
            "input": "{{sample.output_text}}",
            "reference": "{{item.r}}",
            "evaluation_metric": metric,
        }
    )
    return asyncio.run(grade(grader, sample_from_text(text), {"r": reference})).score


ROUGE = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {"rouge_l": "rougeL"}


def library(metric: str, text: str, reference: str) -> float:
    if metric == "fuzzy_match":
        return fuzz.ratio(text, reference) / 100
    if metric == "bleu":
        return sentence_bleu(text, [reference]).score / 100
    if metric == "gleu":
        return sentence_gleu([reference.split()], text.split())
    key = ROUGE[metric]
    return rouge_scorer.RougeScorer([key]).score(reference, text)[key].fmeasure


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", *ROUGE])
def test_metric_matches_its_library(metric: str) -> None:
    ours = [score(metric, text, reference) for text, reference in PAIRS]
    theirs = [library(metric, text, reference) for text, reference in PAIRS]
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert len(set(theirs)) > 3  # the pairs tell scores apart
