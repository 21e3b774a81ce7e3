"""The one tokenizer BM25 (and its rank-bm25 parity test) uses."""

from __future__ import annotations

import re
import unicodedata

TOKEN = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i in is it its of on or "
    "she that the their them they this to was were which who whom will with what when "
    "where why how did does do".split())


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens without English stopwords, of the text in NFC: an accent
    typed as a combining mark (decomposed, as macOS input and many PDFs give it) is not a
    word character, so "Mu\u0308ller" split into "mu" and "ller". Text already in NFC (what
    JSON corpora hold) tokenizes as before, so indexes built from it need no rebuild."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return [t for t in TOKEN.findall(text.lower()) if t not in STOPWORDS]
