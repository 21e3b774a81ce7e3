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
    tmp_path.mkdir(parents=True, exist_ok=True)
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


def test_a_chunked_index_refuses_ids_that_read_as_windows(tmp_path, capsys):
    """An added document ``a#1`` replaced window 1 of ``a`` (and updating ``a`` deleted
    it); deleting ``a#1`` cut one window out of the middle of ``a``. Both are refused."""
    from index.living import LivingIndex
    from searchagent.errors import InputError
    from searchagent.types import Passage

    folder = bm25_index(tmp_path, [{"id": "a", "title": "Alpha", "text": LONG}, *FILLER],
                        chunk_words=10, chunk_overlap=2)
    write_jsonl(tmp_path / "add.jsonl", [{"id": "b", "text": "ok"}, {"id": "a#1", "text": "x"}])
    assert main(["index", "add", str(folder), str(tmp_path / "add.jsonl")]) == 2
    assert "add.jsonl, line 2, field 'id': 'a#1' ends in '#<digits>'" in capsys.readouterr().err
    with LivingIndex(folder) as living:
        with pytest.raises(InputError, match=r"document 0 \(id 'a#1'\), field 'id'"):
            living.add([Passage("a#1", "Errata", "x")])
        with pytest.raises(InputError, match=r"ids\[2\], field 'id': 'a#2' .* window 2 of "
                                             r"document 'a'"):
            living.delete(["f1", "f1", "a#2"])             # its place in the request
        with pytest.raises(InputError, match=r"'x\\ny#1' ends in"):   # . matched no newline
            living.add([Passage("x\ny#1", "Errata", "x")])
        assert living.generation == 0                          # nothing committed
    assert ids(folder, "alpha3 alpha12") == ["a#0", "a#1"]        # a's own windows, intact
    with LivingIndex(folder) as living:        # a document id with a newline has windows too
        living.add([Passage("n\nm", "Newline", LONG)])
        assert living.delete(["n\nm"])["rows_deleted"] == 4


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


def test_index_info_after_updates_describes_the_live_passages(tmp_path, capsys):
    """``index info`` kept the build's BM25 vocab / postings / avgdl after any update, and
    one generation's rows_deleted / parts_merged in every later one."""
    rows = [{"id": f"p{i}", "title": f"T{i}", "text": f"word{i} shared " * (i + 1)}
            for i in range(8)]
    folder = bm25_index(tmp_path / "living", rows[:5])
    write_jsonl(tmp_path / "add.jsonl", rows[5:])
    for step in (["add", str(folder), str(tmp_path / "add.jsonl")],
                 ["delete", str(folder), "--ids", "p0", "p3"], ["compact", str(folder)]):
        assert main(["index", *step]) == 0
    fresh = bm25_index(tmp_path / "fresh", [r for r in rows if r["id"] not in ("p0", "p3")])
    capsys.readouterr()
    info = {}
    for name, path in (("living", folder), ("fresh", fresh)):
        assert main(["index", "info", str(path), "--json"]) == 0
        info[name] = json.loads(capsys.readouterr().out)["components"]["bm25"]
    for key in ("vocab", "postings"):
        assert info["living"][key] == info["fresh"][key], key
    assert info["living"]["avgdl"] == pytest.approx(info["fresh"]["avgdl"])
    assert "rows_deleted" not in info["living"] and info["living"]["parts_merged"] == 2

    write_jsonl(tmp_path / "more.jsonl", [{"id": "q", "title": "T1", "text": "word0 new"}])
    assert main(["index", "add", str(folder), str(tmp_path / "more.jsonl")]) == 0
    assert main(["index", "info", str(folder), "--json"]) == 0
    bm25 = json.loads(capsys.readouterr().out.split("\n", 1)[1])["components"]["bm25"]
    assert "parts_merged" not in bm25 and bm25["rows_added"] == 1
    assert bm25["vocab"] == info["fresh"]["vocab"] + 2 and bm25["postings"] == \
        info["fresh"]["postings"] + 3              # t1, word0, new: two of them new


def test_an_update_while_another_process_reads_names_the_reader(tmp_path):
    """A search in another process (read-only) keeps DuckDB from letting a writer in; the
    error said the doc store was "open for updates by another process" instead."""
    import subprocess
    import sys

    from index.living import LivingIndex
    from searchagent.errors import IndexFormatError

    folder = bm25_index(tmp_path, FILLER)
    reader = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom retrievers.docstore import DocStore\n"
         f"store = DocStore({str(folder / 'docs.duckdb')!r})\nprint('open', flush=True)\n"
         "sys.stdin.read()"], cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(IndexFormatError) as caught:
            LivingIndex(folder)
        assert "open in another process (a server, a search" in str(caught.value)
        assert "open for updates" not in str(caught.value)
        assert f"pid {reader.pid})" in str(caught.value)               # who holds it,
        assert "duckdb.org" not in str(caught.value)                  # not DuckDB's advice
    finally:
        reader.communicate("", timeout=30)
    with LivingIndex(folder) as living:              # the lock went with the reader
        assert living.delete(["f0"])["deleted_ids"] == 1


@pytest.mark.parametrize("passage, field", [
    (("bad-text", "T", "half \ud800 a character"), "text"),
    (("bad-title", 7, "fine text"), "title"),
    (("", "T", "no id"), "id"),
    (("blank", " ", "  "), "text")])
def test_a_bad_passage_through_the_python_api_is_an_input_error(tmp_path, passage, field):
    """``LivingIndex.add`` (``LiveSearcher.add``) got no checks of its own: a lone surrogate
    failed inside DuckDB as "doc store update failed" (IndexFormatError: a 500 that blames
    the index), an empty id or passage was stored."""
    from index.journal import JOURNAL
    from index.living import LivingIndex
    from searchagent.errors import InputError
    from searchagent.types import Passage

    folder = bm25_index(tmp_path, FILLER)
    with LivingIndex(folder) as living:
        with pytest.raises(InputError, match=f"document 1.*field '{field}'|"
                                             f"field '{field}'.*document 1") as caught:
            living.add([Passage("ok", "Fine", "fine words"), Passage(*passage)])
        assert living.generation == 0 and not (folder / JOURNAL).exists()
        assert living.add([Passage("ok", "Fine", "fine words")])["generation"] == 1
    assert caught.value.field == field


def test_an_id_file_saved_with_a_byte_order_mark_deletes_its_first_id(tmp_path, capsys):
    """An id file from a Windows editor starts with a UTF-8 BOM; the first id was read as
    '\\ufefff0' and reported missing."""
    folder = bm25_index(tmp_path, FILLER)
    (tmp_path / "ids.txt").write_bytes(b"\xef\xbb\xbff0\r\nf1\r\n")
    assert main(["index", "delete", str(folder), "--ids", str(tmp_path / "ids.txt")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["deleted_ids"], result["missing_ids"]) == (2, [])


def test_a_full_disk_mid_update_says_so_and_rolls_back(tmp_path, capsys, monkeypatch):
    """numpy's short write on a full disk ("132551 requested and 110560 written") reached
    the user with no file, no "disk full" and no word on the index's state."""
    import numpy as np

    folder = bm25_index(tmp_path, FILLER)
    real_save = np.save

    def short_write(handle, array, **kwargs):
        handle.write(b"\x93NUMPY")
        raise OSError("132551 requested and 110560 written")

    monkeypatch.setattr(np, "save", short_write)
    write_jsonl(tmp_path / "one.jsonl", [{"id": "b", "title": "B", "text": "wombats"}])
    assert main(["index", "add", str(folder), str(tmp_path / "one.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "short write: is the disk full?" in err and f"{folder}/bm25/" in err
    assert f"rolled back, {folder} is at generation 0" in err
    monkeypatch.setattr(np, "save", real_save)
    assert not list(folder.rglob("*.tmp-*")) and ids(folder, "wombats") == []
    assert main(["index", "add", str(folder), str(tmp_path / "one.jsonl")]) == 0


def test_a_failed_doc_store_commit_keeps_its_reason(tmp_path):
    """DuckDB ends a transaction whose COMMIT fails (a full disk); the ROLLBACK after it
    raised "cannot rollback - no transaction is active", which hid the reason."""
    import duckdb

    from index.living import LivingIndex
    from searchagent.errors import IndexFormatError
    from searchagent.types import Passage

    class FailingCommit:
        def __init__(self, con):
            self.con, self.failed = con, False

        def execute(self, sql, *args):
            if sql == "COMMIT" and not self.failed:             # the update's own commit
                self.failed = True
                self.con.execute("ROLLBACK")
                raise duckdb.TransactionException("Failed to commit: Could not write file "
                                                  "docs.duckdb.wal: No space left on device")
            return self.con.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.con, name)

    folder = bm25_index(tmp_path, FILLER)
    with LivingIndex(folder) as living:
        real = living.docstore._con
        living.docstore._con = FailingCommit(real)
        with pytest.raises(IndexFormatError, match="No space left on device"):
            living.add([Passage("b", "B", "wombats")])
        living.docstore._con = real
        assert living.add([Passage("b", "B", "wombats")])["generation"] == 1


def test_a_failure_after_the_commit_point_keeps_the_committed_generation(tmp_path, capsys,
                                                                         monkeypatch):
    """The manifest's rename is the commit; an error after it (the folder's fsync) rolled
    the components back to the previous generation under a manifest naming the new one:
    its files were deleted and no search could open the index."""
    import searchagent.files
    from index.manifest import verify_index

    folder = bm25_index(tmp_path, FILLER)
    real_fsync = searchagent.files.fsync_dir

    def failing_fsync(path):
        if Path(path) == folder and json.loads((folder / "manifest.json").read_text()
                                               ).get("generation") == 1:
            raise OSError(5, "Input/output error", str(path))
        real_fsync(path)

    monkeypatch.setattr(searchagent.files, "fsync_dir", failing_fsync)
    write_jsonl(tmp_path / "one.jsonl", [{"id": "b", "title": "B", "text": "wombats"}])
    assert main(["index", "add", str(folder), str(tmp_path / "one.jsonl")]) == 2
    assert "is at generation 1 (committed before the failure)" in capsys.readouterr().err
    monkeypatch.setattr(searchagent.files, "fsync_dir", real_fsync)
    assert verify_index(folder, "full")["generation"] == 1
    assert ids(folder, "wombats") == ["b"]
    assert main(["index", "delete", str(folder), "--ids", "b"]) == 0
    assert json.loads(capsys.readouterr().out)["generation"] == 2


def test_finding_the_windows_of_many_ids_is_a_hash_join(tmp_path):
    """With chunking, the ids' rows were found by a join on a prefix test: a nested loop
    over ids x windows (17 s for 4,000 ids on 300,000 windows here; minutes for a REST
    delete of 10,000 ids on a million), under the writer lock. The plan is checked, not
    the time (speed lives in benchmarks)."""
    import duckdb

    from retrievers.docstore_live import LiveDocStore

    path = tmp_path / "docs.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE passages AS SELECT range AS row, 'doc' || (range // 3) || '#' "
                "|| (range % 3) AS id, '' AS title, 'text' AS text FROM range(300000)")
    con.close()
    store = LiveDocStore(path)
    try:
        wanted = [f"doc{i}" for i in range(0, 100_000, 25)] + ["doc7#1", "nope"]
        plan = "".join(str(row[-1]) for row in store._con.execute(
            "EXPLAIN " + store.live_rows_sql(), [wanted]).fetchall()).upper().replace(" ", "_")
        assert plan.count("HASH_JOIN") == 2 and "NL_JOIN" not in plan \
            and "NESTED_LOOP" not in plan                      # "Hash Join" or "HASH_JOIN"
        found = store.live_rows(wanted)
        assert len(found) == 4001 and found["doc25"] == [75, 76, 77]
        assert found["doc7#1"] == [22] and "nope" not in found
    finally:
        store.close()
