"""Every prompt the strategies send, in one place.

The few-shot demonstrations come only from training data: HotpotQA questions in the RPT
``train.jsonl`` (ids below; disjoint from the dev questions used for evaluation and from
the bundled sample), with their supporting sentences as the passages and a reasoning
written from those sentences.
"""

from __future__ import annotations

from searchagent.answers import ANSWER_MARKER, ANSWER_PLACEHOLDER

SYSTEM = ("You are a precise question answering assistant. Answer with a short phrase "
          f"(a name, a number, a date, yes or no). Always finish with '{ANSWER_MARKER} "
          f"{ANSWER_PLACEHOLDER}'.")

FEWSHOT = [
    {"id": "5ab430f655429942dd415eca",
     "question": "\"The Chance of a Lunchtime\" is an episode of a BBC sitcom written by who?",
     "passages": [("The Chance of a Lunchtime", "\"The Chance of a Lunchtime\" is an episode "
                   "of the BBC sitcom \"Only Fools and Horses\"."),
                  ("Only Fools and Horses", "Only Fools and Horses is a British television "
                   "sitcom created and written by John Sullivan.")],
     "reasoning": ["\"The Chance of a Lunchtime\" is an episode of Only Fools and Horses.",
                   "Only Fools and Horses was written by John Sullivan."],
     "answer": "John Sullivan"},
    {"id": "5a8ae61955429970aeb70326",
     "question": "Are both Deerhunter and Nine Lashes American Christian rock bands?",
     "passages": [("Deerhunter", "Deerhunter is an American rock band from Atlanta, Georgia, "
                   "formed in 2001."),
                  ("Nine Lashes", "Nine Lashes is an American Christian rock band from "
                   "Birmingham, Alabama formed in 2006.")],
     "reasoning": ["Deerhunter is an American rock band, not a Christian rock band.",
                   "Nine Lashes is an American Christian rock band."],
     "answer": "no"},
]


def format_passages(passages: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"Title: {title}\n{text}" for title, text in passages)


ANSWER_PREFILL = {"role": "assistant", "content": ANSWER_MARKER}


def _demo_turns(kind: str, shots: int) -> list[dict]:
    """Demonstrations as chat turns; ``kind`` is parametric | reading | reasoning."""
    turns: list[dict] = []
    for demo in FEWSHOT[:shots]:
        if kind == "parametric":
            user = parametric_user(demo["question"])
        else:
            user = reading_user(demo["question"], demo["passages"])
        reply = f"{ANSWER_MARKER} {demo['answer']}"
        if kind == "reasoning":
            reply = " ".join(demo["reasoning"]) + " " + reply
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return turns


def parametric_user(question: str) -> str:
    return f"Question: {question}\nAnswer from memory."


def reading_user(question: str, passages: list[tuple[str, str]]) -> str:
    return (f"{format_passages(passages)}\n\nAnswer the question using the passages above.\n"
            f"Question: {question}")


def parametric_messages(question: str, shots: int = 1) -> list[dict]:
    """Closed book: the question alone; the reply continues the answer marker."""
    return [{"role": "system", "content": SYSTEM}, *_demo_turns("parametric", shots),
            {"role": "user", "content": parametric_user(question)}, dict(ANSWER_PREFILL)]


def reading_messages(question: str, passages: list[tuple[str, str]],
                     shots: int = 1) -> list[dict]:
    """Open book: answer from the given passages; the reply continues the answer marker."""
    return [{"role": "system", "content": SYSTEM}, *_demo_turns("reading", shots),
            {"role": "user", "content": reading_user(question, passages)}, dict(ANSWER_PREFILL)]


def reasoning_messages(question: str, passages: list[tuple[str, str]], steps: list[str],
                       shots: int = 1) -> list[dict]:
    """IRCoT step: write the next single reasoning sentence, or the answer when known.

    The passages come first and grow append-only across hops, so a backend with prefix
    caching reuses the KV state of everything retrieved in earlier hops."""
    so_far = " ".join(steps)
    instruction = ("Write the next reasoning sentence, one fact from the passages. If you "
                   f"know the answer, write '{ANSWER_MARKER} {ANSWER_PLACEHOLDER}'.")
    user = reading_user(question, passages) + (f"\nReasoning so far: {so_far}" if so_far
                                                else "") + f"\n{instruction}"
    return [{"role": "system", "content": SYSTEM}, *_demo_turns("reasoning", shots),
            {"role": "user", "content": user}]


def final_messages(question: str, passages: list[tuple[str, str]], steps: list[str],
                   shots: int = 1) -> list[dict]:
    """Multi-hop's closing call: the last reasoning prompt with the answer marker prefilled
    (same prefix as the reasoning calls, so their KV state is reused)."""
    return reasoning_messages(question, passages, steps, shots) + [dict(ANSWER_PREFILL)]
