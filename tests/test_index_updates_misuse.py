"""Updating an index the ways users get wrong or that break part way, on small BM25-only
indexes (no embedding: fast): chunk ids, leftovers of a killed writer, ``index info``
after updates, and the message when another process has the doc store open."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index.build import build_index
from retrievers.searcher import Searcher
from searchagent.cli import main
from searchagent.config import Config


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bm25_index(tmp_path: Path, rows: list[dict], **index) -> Path:
    config = Config().updated({"index": {"dense": False, **index}}, "test")
    build_index(write_jsonl(tmp_path / "corpus.jsonl", rows), tmp_path / "index", config)
    return tmp_path / "index"


def ids(folder: Path, query: str) -> list[str]:
    searcher = Searcher(folder)
    try:
        return [hit.id for hit in searcher.search(query, 10, "bm25")]
    finally:
        searcher.close()


LONG = " ".join(f"alpha{i}" for i in range(30))
FILLER = [{"id": f"f{i}", "title": f"Filler {i}", "text": f"giraffes eat acacia leaves {i}"}
          for i in range(6)]           # BM25's idf needs a few passages without the terms


def test_chunked_delete_and_replace_touch_only_the_ids_own_windows(tmp_path, capsys):
    """With chunking, id X's windows are X#0, X#1, ...; a passage whose own id merely
    starts with "X#" (a#intro, a section anchor) is another passage and must stay."""
    folder = bm25_index(tmp_path, [
        {"id": "a", "title": "Alpha", "text": LONG},
        {"id": "a#intro", "title": "Zebras", "text": "zebras and lions on the savanna"},
        *FILLER], chunk_words=10, chunk_overlap=2)
    windows = 4                                      # 30 words, step 8
    assert main(["index", "delete", str(folder), "--ids", "a"]) == 0
    deleted = json.loads(capsys.readouterr().out)
    assert (deleted["deleted_ids"], deleted["rows_deleted"]) == (1, windows)
    assert ids(folder, "zebras lions") == ["a#intro"]
    assert ids(folder, "alpha3") == []

    write_jsonl(tmp_path / "again.jsonl", [{"id": "a", "title": "Alpha", "text": LONG}])
    assert main(["index", "add", str(folder), str(tmp_path / "again.jsonl")]) == 0
    write_jsonl(tmp_path / "new.jsonl", [{"id": "a", "title": "Alpha", "text": "short now"}])
    assert main(["index", "add", str(folder), str(tmp_path / "new.jsonl")]) == 0
    capsys.readouterr()
    assert ids(folder, "zebras lions") == ["a#intro"]          # replacing a: a#intro stays
    assert ids(folder, "alpha3") == []
    assert Searcher(folder).manifest["counts"]["passages"] == 2 + len(FILLER)


def test_a_writer_killed_mid_write_leaves_no_temporary_files_behind(tmp_path, capsys):
    """A kill -9 inside a durable write leaves its temporary file (``.df-1.tmp-<pid>-<hex>
    .npy``, a ``.seg-1.tmp-<pid>`` folder, ``.manifest.tmp-...``); nothing removed them,
    so every crash kept its bytes (a dense segment's: hundreds of MB) for good."""
    from searchagent.files import sibling_temp

    folder = bm25_index(tmp_path, [{"id": "a", "title": "A", "text": "quokkas"}, *FILLER])
    left = [sibling_temp(folder / "bm25" / "df-1.npy"), sibling_temp(folder / "manifest.json"),
            sibling_temp(folder / "journal.json")]
    for path in left:
        path.write_bytes(b"partial")
    (folder / "bm25" / ".seg-1.tmp-4242").mkdir()
    (folder / "bm25" / ".seg-1.tmp-4242" / "tf.npy").write_bytes(b"partial")
    kept = sorted(p.name for p in folder.rglob("*") if ".tmp-" not in str(p))
    write_jsonl(tmp_path / "one.jsonl", [{"id": "b", "title": "B", "text": "wombats"}])
    assert main(["index", "add", str(folder), str(tmp_path / "one.jsonl")]) == 0
    capsys.readouterr()
    assert not [str(p) for p in folder.rglob("*.tmp-*")]
    assert set(kept) <= {p.name for p in folder.rglob("*")}
    assert ids(folder, "wombats") == ["b"] and ids(folder, "quokkas") == ["a"]
