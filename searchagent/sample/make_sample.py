"""Rebuild the bundled sample from HotpotQA (run once; the output is committed).

    python searchagent/sample/make_sample.py ../shared/data/hotpotqa/megagonlabs__RPT/dev.jsonl

Writes ``corpus.jsonl.gz`` (every context paragraph, de-duplicated by title+text) and
``questions.jsonl`` (id, question, answers, supporting titles, type) next to this file.
HotpotQA keeps HTML entities in some titles ("Ant &amp; Dec"); titles and texts are
unescaped for display, and a passage's id stays the hash of the published title and text.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(source: str) -> None:
    passages: dict[tuple[str, str], str] = {}
    questions = []
    for line in open(source, encoding="utf-8"):
        row = json.loads(line)
        for title, sentences in zip(row["context"]["title"], row["context"]["sentences"]):
            text = "".join(sentences).strip()
            key = (title, text)
            if key not in passages:
                passages[key] = hashlib.sha1(f"{title}\n{text}".encode()).hexdigest()[:16]
        questions.append({"id": row["id"], "question": row["question"],
                          "answers": [row["answer"]],
                          "supporting_titles": sorted({html.unescape(title) for title in
                                                       row["supporting_facts"]["title"]}),
                          "type": row.get("type", "")})
    with gzip.open(HERE / "corpus.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as out:
        for (title, text), pid in passages.items():
            out.write(json.dumps({"id": pid, "title": html.unescape(title),
                                  "text": html.unescape(text)}) + "\n")
    with open(HERE / "questions.jsonl", "w", encoding="utf-8") as out:
        for question in questions:
            out.write(json.dumps(question) + "\n")
    print(f"{len(passages)} passages, {len(questions)} questions")


if __name__ == "__main__":
    main(sys.argv[1])
