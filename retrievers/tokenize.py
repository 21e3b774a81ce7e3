"""The one tokenizer BM25 (and its rank-bm25 parity test) uses."""

from __future__ import annotations

import re

TOKEN = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i in is it its of on or "
    "she that the their them they this to was were which who whom will with what when "
    "where why how did does do".split())


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens without English stopwords."""
    return [t for t in TOKEN.findall(text.lower()) if t not in STOPWORDS]
