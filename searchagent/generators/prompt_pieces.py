"""A chat prompt as template pieces and content pieces, so that text a user or a passage
holds is tokenized as plain text: a ``<|im_end|>`` typed into a question must not close
the user's turn and open a forged assistant turn, as it does when the whole rendered
prompt is tokenized with control tokens parsed.

A backend renders its chat template around ``marked(conversation)``, splits the result
with ``pieces(rendered, conversation, prefill)`` and tokenizes each template piece with
control tokens parsed and each content piece without.
"""

from __future__ import annotations

_MARK = "\ue000{}\ue001"       # private-use characters: no text or template holds them


def marked(conversation: list[dict]) -> list[dict]:
    """``conversation`` with each message's content swapped for a mark."""
    return [{**m, "content": _MARK.format(i)} for i, m in enumerate(conversation)]


def pieces(rendered: str, conversation: list[dict],
           prefill: str = "") -> list[tuple[str, bool]] | None:
    """``(text, is_content)`` pieces of a template rendered around ``marked(conversation)``,
    each mark replaced by its message's content, then the ``prefill`` (content); None when
    the template did not keep every mark once and in order (it edits contents)."""
    out: list[tuple[str, bool]] = []
    rest = rendered
    for i, message in enumerate(conversation):
        before, found, rest = rest.partition(_MARK.format(i))
        if not found or _MARK.format(i) in rest:
            return None
        out += [(before, False), (message["content"], True)]
    out.append((rest, False))
    if prefill:
        out.append((prefill, True))
    return [(text, is_content) for text, is_content in out if text]
