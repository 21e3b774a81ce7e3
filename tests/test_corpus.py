"""Corpus reading: both JSONL shapes, gzip, chunking, and errors that name file/line/field."""

from __future__ import annotations

import gzip
import json

import pytest

from index.corpus import chunk_passage, read_corpus
from searchagent.errors import InputError
from searchagent.types import Passage


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reads_both_shapes_and_gzip(tmp_path):
    lines = [json.dumps({"id": "a", "title": "Alpha", "text": "first passage"}),
             "",
             json.dumps({"id": 7, "contents": "Beta\nsecond passage"}),
             json.dumps({"id": "c", "contents": "just one line"})]
    plain = write_lines(tmp_path / "c.jsonl", lines)
    packed = tmp_path / "c.jsonl.gz"
    with gzip.open(packed, "wt") as out:
        out.write(plain.read_text())
    for path in (plain, packed):
        assert list(read_corpus(path)) == [Passage("a", "Alpha", "first passage"),
                                           Passage("7", "Beta", "second passage"),
                                           Passage("c", "", "just one line")]


@pytest.mark.parametrize("line, field, fragment", [
    ('{"id": "x", "text": "ok"', None, "malformed JSON"),
    ('{"title": "t", "text": "no id"}', "id", "missing field"),
    ('{"id": "x", "title": "t"}', "text", "missing field"),
    ('{"id": "x", "text": 5}', "text", "must be a string"),
    ('["not", "an", "object"]', None, "expected a JSON object"),
    ('{"id": "", "text": "empty id"}', "id", "non-empty"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, field, fragment):
    path = write_lines(tmp_path / "bad.jsonl", ['{"id": "ok", "text": "fine"}', line])
    with pytest.raises(InputError) as err:
        list(read_corpus(path))
    message = str(err.value)
    assert str(path) in message and "line 2" in message and fragment in message
    if field:
        assert f"field {field!r}" in message


def test_duplicate_id_empty_and_unreadable(tmp_path):
    dup = write_lines(tmp_path / "dup.jsonl", ['{"id": "a", "text": "x"}',
                                               '{"id": "a", "text": "y"}'])
    with pytest.raises(InputError, match="line 2.*duplicate id 'a'"):
        list(read_corpus(dup))
    with pytest.raises(InputError, match="empty corpus"):
        list(read_corpus(write_lines(tmp_path / "empty.jsonl", ["", "  "])))
    with pytest.raises(InputError, match="cannot open"):
        list(read_corpus(tmp_path / "missing.jsonl"))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="unreadable"):
        list(read_corpus(broken))


def test_chunking_windows_overlap():
    passage = Passage("p", "T", " ".join(f"w{i}" for i in range(10)))
    chunks = chunk_passage(passage, words=4, overlap=1)
    assert [c.id for c in chunks] == ["p#0", "p#1", "p#2"]
    assert chunks[0].text == "w0 w1 w2 w3" and chunks[1].text.startswith("w3")
    assert chunks[-1].text.endswith("w9") and all(c.title == "T" for c in chunks)
    assert chunk_passage(passage, words=20, overlap=0) == [passage]


def test_the_bundled_sample_reads_as_text_and_its_gold_titles_exist():
    """Titles are shown to users and matched by the evaluation: no HTML entities left from
    HotpotQA ("Ant &amp; Dec"), and every supporting title is a passage title."""
    import re

    from tests.conftest import sample_passages, sample_questions

    passages = sample_passages(limit=10**6)
    entity = re.compile(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", re.IGNORECASE)
    assert len(passages) == 2967
    assert [p["title"] for p in passages if entity.search(p["title"] + p["text"])] == []
    titles = {p["title"] for p in passages}
    gold = {t for q in sample_questions() for t in q["supporting_titles"]}
    assert "Ant & Dec" in gold and sorted(gold - titles) == []


def test_text_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    """A JSON escape of a lone surrogate decodes, then broke the build inside DuckDB with
    a temporary file's name and the wrong line."""
    from searchagent.errors import require_text

    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "title": "x\\ud800", '
                    '"text": "t"}\n')
    with pytest.raises(InputError, match=r"c.jsonl, line 2, field 'title': not valid UTF-8"):
        list(read_corpus(path))
    raw = tmp_path / "raw.jsonl.gz"                    # a Latin-1 byte, gzipped: the error
    raw.write_bytes(__import__("gzip").compress(       # named a decode-buffer offset, no line
        b"".join(b'{"id": "%d", "text": "fine"}\n' % i for i in range(3000))
        + b'{"id": "b", "text": "caf\xe9"}\n'))
    with pytest.raises(InputError, match=r"raw.jsonl.gz, line 3001, field 'text': not valid"):
        list(read_corpus(raw))
    with pytest.raises(InputError, match=r"field 'query': not valid UTF-8 text \(character 10"):
        require_text("insomnia \udcff", "query")         # argv bytes that are not UTF-8
    with pytest.raises(InputError, match="empty question"):
        require_text("  ", "question")


def test_a_chunked_corpus_refuses_ids_that_read_as_windows(tmp_path):
    """With --chunk-words, ``a#1`` would be both document a's second window and a passage
    of its own: updates of ``a`` replaced it, searches folded it into ``a``."""
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "one two three"}\n{"id": "a#1", "text": "four"}\n')
    assert [p.id for p in read_corpus(path)] == ["a", "a#1"]          # whole passages: fine
    with pytest.raises(InputError, match=r"c\.jsonl, line 2, field 'id': 'a#1' ends in "
                       r"'#<digits>', which names window 1 of document 'a'"):
        list(read_corpus(path, chunk_words=2))
    path.write_text('{"id": "a#b", "text": "x"}\n{"id": "#", "text": "y"}\n')
    assert [p.id for p in read_corpus(path, chunk_words=2)] == ["a#b", "#"]


def test_a_control_character_error_says_at_once(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "x\ty"}\n')            # a raw tab inside a string
    with pytest.raises(InputError, match=r"line 1: malformed JSON \(Invalid control "
                       r"character at column 23\)"):
        list(read_corpus(path))
