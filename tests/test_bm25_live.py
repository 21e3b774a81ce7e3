"""LiveBM25: after any adds / deletes, scores equal a fresh rank_bm25.BM25Okapi over the live
passages; old generations stay readable; rollback, compaction and corruption checks."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from retrievers.bm25 import BM25Index, BM25Retriever
from index.corpus import file_sha256 as sha256
from retrievers.bm25_live import LiveBM25, rollback
from searchagent.errors import IndexFormatError

COMMON = [f"c{i}" for i in range(4)]          # in most passages: negative idf, epsilon floor
MIDDLE = [f"m{i}" for i in range(8)]
QUERIES = [["c0"], ["c1", "m2"], ["m3", "m3", "c2"], ["solo0"], ["solo1", "m0"], ["solo3"],
           ["new1", "c3"], ["m7", "m6", "m5", "c0", "c1"], ["absent"], []]


def _passage(rng: random.Random, extra: list[str] = ()) -> list[str]:
    tokens = [t for t in COMMON if rng.random() < 0.75]
    tokens += rng.choices(MIDDLE, k=rng.randint(0, 6))
    tokens += list(extra)
    rng.shuffle(tokens)
    return tokens


def _build(folder: Path, docs: dict[int, list[str]]) -> Path:
    BM25Index.build([docs[row] for row in range(len(docs))]).save(folder)
    return folder


def _ranking(scores: np.ndarray, rows: list[int]) -> list[int]:
    """Rows with a positive score, best first, ties by row (on float32 scores, as top_k)."""
    single = np.float32(scores)
    return [rows[i] for i in sorted(range(len(rows)), key=lambda i: (-single[i], rows[i]))
            if single[i] > 0]


def _assert_matches(index: LiveBM25, docs: dict[int, list[str]]) -> BM25Okapi:
    rows = sorted(docs)
    reference = BM25Okapi([docs[row] for row in rows])
    dead = np.setdiff1d(np.arange(index.n_docs), rows)
    assert index.n_live == len(rows)
    for query in QUERIES:
        expected = reference.get_scores(query)
        scores = index.scores(query)
        np.testing.assert_allclose(scores[rows], expected, rtol=1e-5, atol=1e-7)
        assert not scores[dead].any()
        order = _ranking(expected, rows)
        top_rows, top_scores = index.top_k(query, len(rows) + 3)
        assert list(top_rows) == order
        np.testing.assert_allclose(top_scores, expected[np.searchsorted(rows, top_rows)],
                                   rtol=1e-5)
        assert list(index.top_k(query, 3)[0]) == order[:3]
    return reference


def _assert_files(folder: Path, summary: dict) -> None:
    for rel, entry in summary["files"].items():
        path = folder / rel
        assert path.stat().st_size == entry["size"] and sha256(path) == entry["sha256"], rel
    assert set(summary["written"]) <= set(summary["files"])


def _all_scores(index: LiveBM25) -> list[np.ndarray]:
    return [index.scores(query) for query in QUERIES]


def _updated(tmp_path: Path, seed: int = 7, generations: int = 3):
    """A base of 40 passages and ``generations`` commits of adds, deletes and replacements;
    returns (folder, writer at the last generation, live docs)."""
    rng = random.Random(seed)
    docs = {row: _passage(rng) for row in range(40)}
    folder = _build(tmp_path / "bm25", docs)
    writer = LiveBM25.open(folder, 0)
    next_row = 40
    for generation in range(1, generations + 1):
        doomed = rng.sample(sorted(docs), 5)
        writer.delete(np.array(doomed))
        new = {next_row + i: _passage(rng, [f"new{generation}"]) for i in range(6)}
        next_row += len(new)
        writer.add(np.array(sorted(new)), [new[row] for row in sorted(new)])
        for row in doomed:
            del docs[row]
        docs.update(new)
        writer.commit(generation)
    return folder, writer, docs


def test_random_updates_match_fresh_bm25okapi(tmp_path):
    rng = random.Random(15)
    docs = {row: _passage(rng, ["solo0"] if row == 3 else []) for row in range(60)}
    folder = _build(tmp_path / "bm25", docs)
    writer = LiveBM25.open(folder, 0)
    assert writer.fast_path
    _assert_matches(writer, docs)
    next_row, floored, vanished = 60, 0, 0
    replaced: list[list[str]] = []
    for generation in range(1, 9):
        added: dict[int, list[str]] = {}
        # new passages, one carrying a term that exists nowhere else (and may vanish later)
        for i in range(rng.randint(0, 6)):
            extra = [f"solo{generation % 4}"] if i == 0 else []
            extra += ["new1"] if rng.random() < 0.3 else []
            added[next_row] = _passage(rng, extra)
            next_row += 1
        # re-add passages replaced earlier (their terms may have vanished in between)
        while replaced and rng.random() < 0.5:
            added[next_row] = replaced.pop()
            next_row += 1
        # an empty passage now and then: it counts in N and in avgdl
        if generation % 3 == 0:
            added[next_row] = []
            next_row += 1
        if added:
            rows = sorted(added)
            writer.add(np.array(rows[:2]), [added[r] for r in rows[:2]])
            writer.add(np.array(rows[2:]), [added[r] for r in rows[2:]])
        docs.update(added)
        # delete: every passage with a solo term (so it vanishes), random ones, replacements
        solo = [row for row, tokens in docs.items() if f"solo{(generation + 1) % 4}" in tokens]
        vanished += bool(solo)
        doomed = set(solo) | set(rng.sample(sorted(docs), min(4, len(docs) - 10)))
        for row in sorted(doomed):
            if rng.random() < 0.4:
                replaced.append(docs[row])
        writer.delete(np.array(sorted(doomed)))
        for row in doomed:
            del docs[row]
        summary = writer.commit(generation)
        assert summary["generation"] == generation and summary["n_live"] == len(docs)
        _assert_files(folder, summary)
        reference = _assert_matches(writer, docs)
        _assert_matches(LiveBM25.open(folder, generation, verify="full"), docs)
        floored += any(reference.idf.get(t) == reference.epsilon * reference.average_idf
                       for t in COMMON)
        assert not writer.fast_path
    assert floored >= 4 and vanished >= 2        # the epsilon floor and vanishing terms mattered

    class Store:                                   # LiveBM25 fits BM25Retriever (duck-typed)
        def hits(self, rows, scores):
            return list(zip(rows.tolist(), scores.tolist()))

    hits = BM25Retriever(writer, Store()).search("m3 c2", 4)
    assert [row for row, _ in hits] == list(writer.top_k(["m3", "c2"], 4)[0])


def test_earlier_generation_keeps_its_scores(tmp_path):
    folder, writer, docs = _updated(tmp_path)
    generation = writer.generation
    reader = LiveBM25.open(folder, generation)
    base = LiveBM25.open(folder, 0)
    before, base_before = _all_scores(reader), _all_scores(base)
    writer.delete(np.array(sorted(docs)[:10]))
    writer.add(np.array([writer.n_docs]), [["c0", "m1", "new1"]])
    writer.commit(generation + 1)
    writer.compact(generation + 2)
    for index in (reader, LiveBM25.open(folder, generation, verify="full")):
        for old, now in zip(before, _all_scores(index)):
            np.testing.assert_array_equal(old, now)
    for old, now in zip(base_before, _all_scores(base)):
        np.testing.assert_array_equal(old, now)
    _assert_matches(reader, docs)


def test_rollback_removes_an_uncommitted_generation(tmp_path):
    folder, writer, docs = _updated(tmp_path, generations=2)
    committed = writer.generation
    listing = sorted(p.name for p in folder.iterdir())
    before = _all_scores(LiveBM25.open(folder, committed))
    writer.delete(np.array(sorted(docs)[:5]))
    writer.add(np.array([writer.n_docs, writer.n_docs + 1]), [["new9", "c1"], ["m2"]])
    writer.commit(committed + 1)                      # files written, manifest never renamed
    (folder / f".seg-{committed + 2}.tmp-99999").mkdir()     # a writer that died mid-way
    (folder / f".df-{committed + 2}.npy.tmp-99999").write_bytes(b"partial")
    removed = rollback(folder, committed)
    assert f"gen-{committed + 1}.json" in removed and f"seg-{committed + 1}" in removed
    assert sorted(p.name for p in folder.iterdir()) == listing
    reopened = LiveBM25.open(folder, committed, verify="full")
    for old, now in zip(before, _all_scores(reopened)):
        np.testing.assert_array_equal(old, now)
    # the generation number is free again and the next update starts from the committed one
    reopened.add(np.array([reopened.n_docs]), [["new8", "m4"]])
    docs[reopened.n_docs] = ["new8", "m4"]
    reopened.commit(committed + 1)
    _assert_matches(LiveBM25.open(folder, committed + 1), docs)


def test_compaction_gives_identical_scores_with_fewer_files(tmp_path):
    folder, writer, docs = _updated(tmp_path, generations=4)
    generation = writer.generation
    before = _all_scores(writer)
    files_before = len(LiveBM25.open(folder, generation)._view.files)
    summary = writer.compact(generation + 1)
    _assert_files(folder, summary)
    assert summary["segments"] == [] and summary["base"] == f"seg-{generation + 1}"
    assert len(summary["files"]) < files_before
    assert not any(rel.startswith("seg-1/") or rel == "postings.npz" for rel in summary["files"])
    for index in (writer, LiveBM25.open(folder, generation + 1, verify="full")):
        assert index.fast_path
        for old, now in zip(before, _all_scores(index)):
            np.testing.assert_allclose(now, old, rtol=1e-6, atol=1e-7)
        _assert_matches(index, docs)
    # updates continue on top of the compacted base
    row = writer.n_docs
    writer.add(np.array([row]), [["solo1", "c0"]])
    writer.delete(np.array(sorted(docs)[:3]))
    for old in sorted(docs)[:3]:
        del docs[old]
    docs[row] = ["solo1", "c0"]
    writer.commit(generation + 2)
    _assert_matches(LiveBM25.open(folder, generation + 2), docs)


def test_corrupt_or_missing_files_give_a_clear_error(tmp_path):
    folder, writer, _ = _updated(tmp_path, generations=1)
    rows = folder / "seg-1" / "rows.npy"
    tf = folder / "seg-1" / "tf.npy"
    original_rows, original_tf = rows.read_bytes(), tf.read_bytes()
    rows.write_bytes(b"garbage!" * (len(original_rows) // 8) + b"!" * (len(original_rows) % 8))
    with pytest.raises(IndexFormatError, match=r"seg-1/rows\.npy"):
        LiveBM25.open(folder, 1)
    rows.write_bytes(original_rows)
    tf.write_bytes(original_tf[:-2])
    with pytest.raises(IndexFormatError, match=r"seg-1/tf\.npy.*truncated"):
        LiveBM25.open(folder, 1)
    tf.write_bytes(original_tf[:-1] + bytes([original_tf[-1] ^ 0xFF]))
    LiveBM25.open(folder, 1)                          # sizes match: only sha256 sees it
    with pytest.raises(IndexFormatError, match=r"seg-1/tf\.npy.*sha256"):
        LiveBM25.open(folder, 1, verify="full")
    with pytest.raises(IndexFormatError, match="gen-5.json"):
        LiveBM25.open(folder, 5)
    tf.write_bytes(original_tf)
    header_end = original_rows.index(b"}")           # numpy tokenizes the header: a
    rows.write_bytes(original_rows[:header_end] + b" " + original_rows[header_end + 1:])
    with pytest.raises(IndexFormatError, match=r"seg-1/rows\.npy"):   # TokenError escaped
        LiveBM25.open(folder, 1)


def test_build_without_raw_counts_serves_queries_but_refuses_updates(tmp_path):
    rng = random.Random(3)
    docs = [_passage(rng) for _ in range(30)]
    index = BM25Index.build(docs)
    index.tf = index.doclen = None                    # as written before tf/doclen existed
    index.save(tmp_path / "bm25")
    live = LiveBM25.open(tmp_path / "bm25", 0)
    for query in QUERIES:
        assert [a.tolist() for a in live.top_k(query, 5)] == \
            [a.tolist() for a in index.top_k(query, 5)]
    with pytest.raises(IndexFormatError, match="rebuild"):
        live.add(np.array([30]), [["c0"]])


def test_bad_rows_and_generations_are_refused(tmp_path):
    folder, writer, docs = _updated(tmp_path, generations=1)
    dead = next(row for row in range(writer.n_docs) if row not in docs)
    with pytest.raises(ValueError):
        writer.add(np.array([3]), [["c0"]])           # rows are never reused
    with pytest.raises(ValueError):
        writer.delete(np.array([dead]))               # already deleted
    with pytest.raises(ValueError):
        writer.delete(np.array([writer.n_docs + 5]))  # never written
    with pytest.raises(ValueError):
        writer.commit(writer.generation)
