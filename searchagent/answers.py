"""The answer convention: generations end with "So the answer is: <answer>".

``extract_answer`` finds the marker (or a looser equivalent) and cleans the span;
normalization for scoring lives in ``eval/metrics.py`` (SQuAD-style), not here.
"""

from __future__ import annotations

import re

ANSWER_MARKER = "So the answer is:"
ANSWER_PLACEHOLDER = "<short answer>"     # what the prompts' instruction shows after the marker

_MARKER = re.compile(r"(?:so\s+)?the\s+(?:final\s+)?answer\s+is\b\s*[:\-]?\s*",  # not "isn't"
                     re.IGNORECASE)
_LEADING = re.compile(r"^(?:final\s+answer|answer|a)\s*[*_]*\s*:\s*[*_]*\s*", re.IGNORECASE)
_WRAPPING = re.compile(r"^(?:[-*•]\s+|[*_`]+)+")    # bullets, markdown emphasis or code
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}
_PERIOD = re.compile(r"(\S*)\.(?=\s|$)")
_ABBREVIATION = re.compile(r"^(?:[A-Za-z]|(?:[A-Za-z]\.)+[A-Za-z])$")    # "J.", "U.S."
# words a period does not end a sentence after (not "Yes", "No" or "Tom": an answer's end)
ABBREVIATIONS = frozenset(
    "Mr Mrs Ms Dr St Mt Ft Jr Sr Lt Col Gen Gov Sen Rep Rev Prof Capt Sgt Cpl Adm Maj Pres "
    "Inc Co Corp Ltd Bros Ave Blvd Rd vs Vol Fig Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct "
    "Nov Dec".split())
_CJK_STOP = "。！？"
_NONE = re.compile(r"(?:not (?:in|mentioned|given|stated|provided|available|specified|known|"
                   r"clear|found)|unknown|unclear)\b")     # lower case: 'Not Fade Away' is one
_PLACEHOLDER = re.compile(r"^[\s\"'*]*<\s*short\s+answer\s*>", re.IGNORECASE)
_DOTTED = re.compile(r"(?:^|\s)(?:[A-Za-z]\.){2,}$")     # "U.S.", "D.C.": keep the final period
# a question answered yes or no: it opens with an auxiliary verb ("Are ... both ...?")
_YES_NO_QUESTION = re.compile(r"^\s*(?:is|are|was|were|do|does|did|can|could|has|have|had|"
                              r"will|would|should|shall|may|might|must)\b", re.IGNORECASE)
_YES_NO_ANSWER = re.compile(r"^(yes|no)\b(?:\s*[,;:!\u2014\u2013-]|\s*$)", re.IGNORECASE)


def _sentence_end(text: str) -> int:
    """Index of the first sentence end, or -1: a period (not after 'Dr', 'St', 'J', 'U.S',
    nor 'No' before a number) or a CJK full stop, question or exclamation mark."""
    cjk = min((i for i in (text.find(c) for c in _CJK_STOP) if i >= 0), default=-1)
    for match in _PERIOD.finditer(text):
        if 0 <= cjk < match.start():
            break
        word = match.group(1).lstrip("\"'(*_[`“‘«")
        number_next = text[match.end():].lstrip()[:1].isdigit()
        if word and not (_ABBREVIATION.match(word) or word in ABBREVIATIONS
                         or (word == "No" and number_next)):
            return match.end() - 1
    return cjk


def _stated(text: str) -> list[re.Match]:
    """The marker's occurrences that are followed by an answer: not by nothing, nor by the
    instruction's ``<short answer>`` placeholder (which a small model sometimes copies),
    nor by a statement that there is none ("the answer is not in the passages": multi-hop
    then retrieves again instead of stopping on it)."""
    return [m for m in _MARKER.finditer(text)
            if clean_answer(text[m.end():]) and not _NONE.match(text[m.end():].lstrip())]


def has_marker(text: str) -> bool:
    """Whether a generation uses the marker at all (answer or copied placeholder)."""
    return bool(_MARKER.search(text))


def has_answer(text: str) -> bool:
    """Whether a generation states its answer with the marker (or 'the answer is')."""
    return bool(_stated(text))


def extract_answer(text: str, question: str = "") -> str:
    """The short answer inside a generation; the whole first line when there is no marker;
    empty when no marker is followed by an answer (only by the copied placeholder). To a
    yes/no ``question``, an answer that opens with "Yes," or "No," is that word (the
    official HotpotQA F1 gives "No, it is in Korea" against "no" nothing)."""
    matches = _stated(text)
    if not matches and has_marker(text):
        return ""
    answer = clean_answer(text[matches[-1].end():] if matches else text)
    said = _YES_NO_ANSWER.match(answer) if _YES_NO_QUESTION.match(question) else None
    return said.group(1) if said else answer


def clean_answer(span: str) -> str:
    """First line, first sentence, no leading bullet, markdown emphasis or 'Answer:', no
    wrapping quotes (straight or curly) or final period."""
    span = span.strip()
    span = span.splitlines()[0].strip() if span else ""
    span = _LEADING.sub("", _WRAPPING.sub("", span))
    end = _sentence_end(span)
    if end >= 0:
        span = span[:end]
    span = span.strip().strip("*_`").strip()
    if len(span) >= 2 and _QUOTES.get(span[0]) == span[-1]:
        span = span[1:-1].strip()
    if _PLACEHOLDER.match(span):
        return ""
    return (span if _DOTTED.search(span) else span.rstrip(".")).strip()


def first_sentence(text: str) -> str:
    """The first sentence of a reasoning step (IRCoT keeps one sentence per hop)."""
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    end = _sentence_end(text)
    return text[:end + 1] if end >= 0 else text
