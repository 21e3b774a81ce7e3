"""The DuckDB doc store: order, lookups by row and id, concurrent readers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from retrievers.docstore import DocStore, write_docstore
from searchagent.types import Passage


def test_round_trip_and_threads(tmp_path):
    passages = [Passage(f"id{i}", f"T{i}", f"text with ünïcode {i} \"quotes\"\nnewline")
                for i in range(1000)]
    path = tmp_path / "docs.duckdb"
    assert write_docstore(path, passages, batch=300) == 1000
    store = DocStore(path)
    assert store.size == 1000
    assert store.fetch([5, 999, 5000]) == {5: passages[5], 999: passages[999]}
    assert store.rows_for_ids(["id7", "nope"]) == {"id7": 7}
    hits = store.hits([9, 3], [2.0, 1.0])
    assert [(h.id, h.row, h.score) for h in hits] == [("id9", 9, 2.0), ("id3", 3, 1.0)]
    assert [row for row, _, _ in store.iter_texts(batch=128)] == list(range(1000))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: store.fetch([r])[r].id, range(0, 1000, 7)))
    assert results == [f"id{r}" for r in range(0, 1000, 7)]


def test_the_first_update_waits_for_a_searchs_open_transaction(tmp_path):
    """The first document update over REST raced searches: CHECKPOINT refuses while a read
    transaction is open, and that was a 500 (DuckDB's TransactionException)."""
    import threading

    from index.corpus import load_corpus
    from retrievers.docstore_live import LiveDocStore

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "title": "T", "text": "one"}\n')
    load_corpus(corpus, tmp_path / "docs.duckdb")
    store = LiveDocStore(tmp_path / "docs.duckdb")
    reader = store._con.cursor()
    reader.execute("BEGIN TRANSACTION")
    reader.execute("SELECT count(*) FROM passages").fetchall()
    threading.Timer(0.3, lambda: reader.execute("COMMIT")).start()
    store.add_generation_tags()
    assert store.tagged and store.counts() == {"rows": 1, "live": 1, "deleted": 0}
    store.close()
