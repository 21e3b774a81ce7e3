"""Answer and retrieval metrics, following the official HotpotQA evaluation.

Normalization: lower-case, drop punctuation, drop the articles a/an/the, collapse white
space. F1 is 0 when either side normalizes to yes / no / noanswer and the two differ.
Every answer metric takes the maximum over the gold aliases.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Iterable

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPECIAL = ("yes", "no", "noanswer")


def normalize_answer(s: str) -> str:
    text = "".join(ch for ch in str(s).lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _best(prediction: str, golds: Iterable[str], score) -> float:
    if isinstance(golds, str):
        golds = [golds]
    return max((score(prediction, gold) for gold in golds), default=0.0)


def _em(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1(prediction: str, gold: str) -> float:
    pred, true = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _SPECIAL or true in _SPECIAL) and pred != true:
        return 0.0
    pred_tokens, true_tokens = pred.split(), true.split()
    common = sum((Counter(pred_tokens) & Counter(true_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def _contains(prediction: str, gold: str) -> float:
    gold = normalize_answer(gold)
    return float(bool(gold) and gold in normalize_answer(prediction))


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    return _best(prediction, golds, _em)


def f1_score(prediction: str, golds: Iterable[str]) -> float:
    return _best(prediction, golds, _f1)


def accuracy(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when some normalized gold answer occurs inside the normalized prediction."""
    return _best(prediction, golds, _contains)


def _title_key(title: str) -> str:
    return " ".join(str(title).casefold().split())


def passage_recall(retrieved_titles: Iterable[str], gold_titles: Iterable[str],
                   k: int | None = None) -> float:
    """Share of distinct gold titles among the first ``k`` (default all) retrieved titles.

    Titles compare case-insensitively with white space collapsed; NaN when there is no gold.
    """
    gold = {_title_key(t) for t in gold_titles if str(t).strip()}
    if not gold:
        return math.nan
    retrieved = list(retrieved_titles)
    found = {_title_key(t) for t in (retrieved if k is None else retrieved[:k])}
    return len(gold & found) / len(gold)


def answer_scores(prediction: str, golds: Iterable[str]) -> dict[str, float]:
    golds = list(golds)
    return {"em": exact_match(prediction, golds), "f1": f1_score(prediction, golds),
            "acc": accuracy(prediction, golds)}
