"""Read a corpus JSONL (optionally .gz) into passages, validating every line.

Two shapes are accepted per line: ``{"id", "title", "text"}`` and the FlashRAG/Pyserini
``{"id", "contents"}`` (title = first line of contents). Long texts can be chunked into
overlapping word windows; chunk ids are ``<id>#<n>``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from retrievers.docstore import pop_duplicate_source, write_docstore
from retrievers.windows import document_id
from searchagent.errors import InputError, json_lines, require_utf8
from searchagent.types import Passage


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``*.gz``; errors name the file. A byte
    that is not UTF-8 arrives as a lone surrogate, so ``require_utf8`` names its line and
    field (a strict decoder failed at a buffer offset, naming only the file)."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8",
                                    errors="surrogateescape")
        return open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", path=str(path)) from exc


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_record(record: object, path: str, line: int) -> Passage:
    """Turn one decoded JSON line into a Passage, naming the bad field on error."""
    if not isinstance(record, dict):
        raise InputError("expected a JSON object", path=path, line=line)
    if "id" not in record:
        raise InputError("missing field", path=path, line=line, field="id")
    pid = record["id"]
    if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) == "":
        raise InputError("must be a non-empty string or integer", path=path, line=line,
                         field="id")
    if "text" in record:
        title, text = record.get("title", ""), record["text"]
        for name, value in (("title", title), ("text", text)):
            if not isinstance(value, str):
                raise InputError("must be a string", path=path, line=line, field=name)
    elif "contents" in record:
        if not isinstance(record["contents"], str):
            raise InputError("must be a string", path=path, line=line, field="contents")
        title, _, text = record["contents"].partition("\n")
        if not text:  # a single line: no separate title
            title, text = "", title
    else:
        raise InputError("missing field (need 'text' or 'contents')", path=path, line=line,
                         field="text")
    title, text = title.strip(), text.strip()
    if not text and not title:
        raise InputError("empty passage", path=path, line=line, field="text")
    for name, value in (("id", str(pid)), ("title", title), ("text", text)):
        require_utf8(value, name, path, line)
    return Passage(id=str(pid), title=title, text=text)


def refuse_window_id(pid: str, path: str, line: int | None = None,
                     item: int | None = None) -> None:
    """In an index built in windows (``index.chunk_words``) an id ``X#n`` reads as window n
    of document ``X``: updates replace and delete a document with all its windows by that
    pattern, and searches collapse by it. Such a corpus id is refused."""
    document = document_id(pid)
    if document != pid:
        raise InputError(f"{pid!r} ends in '#<digits>', which names window "
                         f"{pid[len(document) + 1:]} of document {document!r} in an index "
                         "built with --chunk-words; pick ids without it",
                         path=path, line=line, field="id", item=item)


def check_passages(documents: list[Passage], windows: bool = False) -> list[str]:
    """The documents' ids, once each is known to be a passage the doc store and tokenizers
    take (what ``parse_record`` checks of a file's lines; ``windows``: and that no id reads
    as a window's, ``refuse_window_id``), with an error naming the document and field
    otherwise."""
    seen: set[str] = set()
    for n, doc in enumerate(documents):
        try:
            _check_passage(doc, n, windows, seen)
        except InputError as exc:
            exc.item = n            # the server names ``body.documents.N.<field>``
            raise
        seen.add(doc.id)
    return [doc.id for doc in documents]


def _check_passage(doc: Passage, n: int, windows: bool, seen: set[str]) -> None:
    if not isinstance(doc.id, str) or not doc.id:
        raise InputError("must be a non-empty string", path=f"document {n}", field="id")
    where = f"document {n} (id {doc.id!r})"
    if windows:
        refuse_window_id(doc.id, where)
    for name, value in (("id", doc.id), ("title", doc.title), ("text", doc.text)):
        if not isinstance(value, str):
            raise InputError("must be a string", path=where, field=name)
        require_utf8(value, name, where)
    if not (doc.title.strip() or doc.text.strip()):
        raise InputError("empty passage", path=where, field="text")
    if doc.id in seen:
        raise InputError(f"duplicate id {doc.id!r} in one update", path=where, field="id")


def chunk_passage(passage: Passage, words: int, overlap: int) -> list[Passage]:
    """Split a passage into windows of ``words`` words that overlap by ``overlap``."""
    tokens = passage.text.split()
    if words <= 0 or len(tokens) <= words:
        return [passage]
    step = max(1, words - overlap)
    chunks = []
    for n, start in enumerate(range(0, len(tokens), step)):
        chunks.append(Passage(f"{passage.id}#{n}", passage.title,
                              " ".join(tokens[start:start + words])))
        if start + words >= len(tokens):
            break
    return chunks


def read_corpus(path: str | Path, chunk_words: int = 0, chunk_overlap: int = 0,
                windows: bool = False) -> Iterator[Passage]:
    """Yield validated passages; duplicate ids and an empty corpus are errors, and so is an
    id that reads as a window's where the passages are or will be cut in windows
    (``chunk_words``, or ``windows``: an update of a chunked index chunks them itself).

    Duplicates are found with a set of the ids seen, which grows with the corpus: fine for
    the small files ``index add`` reads; a build uses ``load_corpus`` instead."""
    name = str(path)
    seen: set[str] = set()
    for line_no, passage in _records(path, chunk_words, chunk_overlap, windows):
        if passage.id in seen:
            raise InputError(f"duplicate id {passage.id!r}", path=name, line=line_no,
                             field="id")
        seen.add(passage.id)
        yield from chunk_passage(passage, chunk_words, chunk_overlap)


def load_corpus(path: str | Path, docstore: str | Path, chunk_words: int = 0,
                chunk_overlap: int = 0) -> int:
    """Validate the corpus into a new doc store (``write_docstore``) with a progress bar;
    return the number of passages. Duplicate ids are found by one DuckDB query over the
    loaded (line, id) pairs rather than a set in memory, so memory stays flat for any corpus
    size; the error names the file, the repeating line and the first one."""
    name = str(path)
    sources = Path(f"{docstore}.sources")
    sources.unlink(missing_ok=True)

    def items() -> Iterator[tuple[int, str | None, Passage]]:
        for line_no, passage in _records(path, chunk_words, chunk_overlap):
            for n, chunk in enumerate(chunk_passage(passage, chunk_words, chunk_overlap)):
                yield line_no, passage.id if n == 0 else None, chunk

    count = write_docstore(docstore, tqdm(items(), desc="docstore: reading corpus",
                                          unit="passage", mininterval=1.0), sources=sources)
    duplicate = pop_duplicate_source(sources)
    if duplicate is not None:
        pid, first, again = duplicate
        raise InputError(f"duplicate id {pid!r} (first on line {first})", path=name,
                         line=again, field="id")
    return count


def _records(path: str | Path, chunk_words: int, chunk_overlap: int, windows: bool = False
             ) -> Iterator[tuple[int, Passage]]:
    """(line number, validated passage) for each record; an empty corpus is an error."""
    if chunk_overlap < 0 or (chunk_words and chunk_overlap >= chunk_words):
        raise InputError("chunk overlap must be >= 0 and smaller than chunk words",
                         field="chunk_overlap")
    name = str(path)
    found = False
    with open_text(path) as handle:
        try:
            for line_no, record in json_lines(handle, name):
                found = True
                passage = parse_record(record, name, line_no)
                if chunk_words or windows:
                    refuse_window_id(passage.id, name, line_no)
                yield line_no, passage
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError) as exc:
            raise InputError(f"unreadable file: {exc}", path=name) from exc
    if not found:
        raise InputError("empty corpus: no passages found", path=name)
