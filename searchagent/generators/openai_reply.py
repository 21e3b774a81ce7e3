"""Reading an OpenAI-compatible chat completion (``openai_http``): the message text, the
token log-probabilities (chat or older completions format) and a ``Retry-After`` header."""

from __future__ import annotations


def content_text(content) -> str:
    """A reply message's text: a string, null, or a list of content parts
    (``[{"type": "text", "text": ...}]``); anything else is not a chat completion."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        return "".join(str(part.get("text") or "") for part in content
                       if part.get("type", "text") == "text")
    raise TypeError(f"choices[0].message.content is a {type(content).__name__}, "
                    "expected a string")


def chat_logprobs(block) -> list[tuple[str | None, float]] | None:
    """(token text, log-probability) pairs of ``choices[0].logprobs``, in the chat format
    ({content: [{token, logprob}]}) or the older completions one ({tokens, token_logprobs})."""
    if not block:
        return None
    if isinstance(block.get("content"), list):
        return [(item.get("token"), float(item["logprob"])) for item in block["content"]]
    if isinstance(block.get("token_logprobs"), list):
        tokens = block.get("tokens") or [None] * len(block["token_logprobs"])
        return [(token, float(x)) for token, x in zip(tokens, block["token_logprobs"])
                if x is not None]
    return None


def logprobs_of(tokens, kept_chars: int | None) -> list[float] | None:
    """The log-probabilities of the tokens within the first ``kept_chars`` characters of
    the reply (None: all of them): a reply cut at a stop string here is scored on what is
    kept. Tokens without their text cannot be placed: no score then."""
    if not tokens:
        return None
    if kept_chars is None:
        return [logprob for _, logprob in tokens]
    if any(token is None for token, _ in tokens):
        return None
    out, at = [], 0
    for token, logprob in tokens:
        if at >= kept_chars:
            break
        out.append(logprob)
        at += len(token)
    return out or None


def retry_after(value: str | None, cap: float) -> float:
    """Seconds a ``Retry-After`` header asks for (a number; dates are not honoured)."""
    try:
        return min(max(float(value), 0.0), cap) if value else 0.0
    except ValueError:
        return 0.0
