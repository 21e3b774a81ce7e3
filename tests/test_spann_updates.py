"""SPANN updated in place by LIRE (index/spann/lire.py): inserts, tombstones, splits,
merges, reassignment, generations, rollback, crc verification and compaction."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from index.spann import SpannIndex, build_spann
from index.spann.generations import committed
from index.spann.lire import SpannUpdater, cleanup, rollback
from index.spann.postings import CAPACITY, DEAD, ROW_MASK, VERSION_SHIFT
from searchagent.errors import IndexFormatError, InputError
from tests.test_spann import DIM, PARAMS, mixture

BASE, EXTRA, K = 3000, 3000, 10
WIDE = {"max_postings": 64, "eps_search": 1.0}


def exact(queries, vectors, live, k=K):
    scores = queries @ vectors.T + np.where(live, 0.0, -1e9)
    return np.argsort(-scores, axis=1)[:, :k]


def recall(found, truth) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def results(folder, queries, generation=None, params=WIDE):
    with SpannIndex.open(folder, generation=generation) as index:
        return index.search(queries, K, params=params)[:2]


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """Generation 0 (BASE rows) and generation 1 (+EXTRA rows, a third of BASE deleted)."""
    folder = tmp_path_factory.mktemp("lire") / "spann"
    vectors = np.concatenate([mixture(BASE, 1), mixture(EXTRA, 3)])
    build_spann(vectors[:BASE], folder, PARAMS, progress=False)
    queries = mixture(60, 2)
    gen0 = SpannIndex.open(folder)                    # stays open across the update
    before = gen0.search(queries, K, params=WIDE)[:2]
    live = np.ones(BASE + EXTRA, dtype=bool)
    deleted = np.arange(0, BASE, 3)
    live[deleted] = False
    with SpannUpdater(folder) as updater:
        updater.delete(deleted)
        updater.insert(np.arange(BASE, BASE + EXTRA), vectors[BASE:])
        summary = updater.commit()
    yield {"folder": folder, "vectors": vectors, "queries": queries, "gen0": gen0,
           "before": before, "live": live, "summary": summary}
    gen0.close()


def copy(state, tmp_path):
    target = tmp_path / "spann"
    shutil.copytree(state["folder"], target)
    return target


def test_search_after_insert_delete_commit(state):
    s, folder = state["summary"], state["folder"]
    assert s["generation"] == 1 and committed(folder) == [1]
    assert s["n_vectors"] == int(state["live"].sum()) and s["counters"]["inserts"] == EXTRA
    assert {"gen-1.json", "table-1.npy", "heads-1.npy", "versions-1.npy"} <= set(s["files"])
    assert s["files"]["postings.bin"] == {"min_size": s["postings"]["end"]}
    ids, _ = results(folder, state["queries"])              # newest = generation 1
    assert not (~state["live"][ids[ids >= 0]]).any()        # never a deleted row
    truth = exact(state["queries"], state["vectors"], state["live"])
    assert recall(ids, truth) >= 0.9
    # inserted rows are found: each one's own vector brings it back first
    probe = np.arange(BASE, BASE + EXTRA, 97)
    own, _ = results(folder, state["vectors"][probe])
    assert (own[:, 0] == probe).mean() >= 0.95
    # ids come back as plain rows (no version bits)
    assert ids.max() < BASE + EXTRA
    # the generation-0 index opened before the update still answers as before
    again = state["gen0"].search(state["queries"], K, params=WIDE)[:2]
    np.testing.assert_array_equal(again[0], state["before"][0])
    np.testing.assert_array_equal(again[1], state["before"][1])
    # and generation 0 still opens (full verification) after postings.bin grew
    np.testing.assert_array_equal(results(folder, state["queries"], generation=0)[0],
                                  state["before"][0])


def test_splits_keep_postings_under_cap_and_dead_heads_unprobed(state):
    s = state["summary"]
    assert s["counters"]["splits"] > 0 and s["n_dead_heads"] > 0
    assert s["counters"]["reassigned"] > 0
    with SpannIndex.open(state["folder"]) as index:
        table, reader = index.reader.table, index.reader
        dead = table[:, CAPACITY] == DEAD
        for p in np.flatnonzero(~dead):
            buffer = np.empty(int(table[p, 2]), dtype=np.uint8)
            reader.read(int(p), buffer)
            ids, vectors = reader.parse(int(p), buffer)
            valid = index.versions[ids & ROW_MASK] == (ids >> VERSION_SHIFT)
            assert valid.sum() <= PARAMS["cap"]
            rows = ids[valid] & ROW_MASK
            np.testing.assert_allclose(vectors[valid], state["vectors"][rows], atol=1e-6)
        probed = []
        original = reader.mapped
        reader.mapped = lambda posting: probed.append(posting) or original(posting)
        index.search(state["queries"], K, params={"max_postings": 10_000, "eps_search": 1e9})
        assert probed and not dead[probed].any()
        assert len(set(probed)) == index.n_heads == int((~dead).sum())


def test_merges_after_mass_deletes(state, tmp_path):
    folder = copy(state, tmp_path)
    live = state["live"].copy()
    rng = np.random.default_rng(5)
    doomed = rng.choice(np.flatnonzero(live), int(live.sum() * 0.85), replace=False)
    live[doomed] = False
    with SpannUpdater(folder) as updater:
        updater.delete(doomed)
        summary = updater.commit()
    assert summary["counters"]["merges"] > 0 and summary["n_vectors"] == live.sum()
    assert summary["posting_length"]["min"] >= PARAMS["target"] // 4
    ids, _ = results(folder, state["queries"])
    assert not (~live[ids[ids >= 0]]).any()
    assert recall(ids, exact(state["queries"], state["vectors"], live)) >= 0.9


def test_append_only_never_splits(state, tmp_path):
    folder = tmp_path / "spann"
    vectors = state["vectors"]
    build_spann(vectors[:BASE], folder, PARAMS, progress=False)
    with SpannUpdater(folder, append_only=True) as updater:
        heads = updater.heads.h
        updater.insert(np.arange(BASE, BASE + EXTRA), vectors[BASE:])
        summary = updater.commit()
    c = summary["counters"]
    assert c["splits"] == c["merges"] == c["reassigned"] == 0 and c["relocations"] > 0
    assert summary["n_heads"] == heads and summary["n_dead_heads"] == 0
    assert summary["posting_length"]["max"] > PARAMS["cap"]          # postings only grow
    ids, _ = results(folder, state["queries"])
    truth = exact(state["queries"], vectors, np.ones(len(vectors), bool))
    assert recall(ids, truth) >= 0.9


def test_rollback_of_uncommitted_and_later_generations(state, tmp_path):
    folder = copy(state, tmp_path)
    postings = folder / "postings.bin"
    end = state["summary"]["postings"]["end"]
    committed_results = results(folder, state["queries"])
    extra = mixture(1500, 7)
    rows = np.arange(BASE + EXTRA, BASE + EXTRA + 1500)
    # an updater abandoned before its commit (a crash): bytes past the end, no gen files
    updater = SpannUpdater(folder)
    updater.insert(rows, extra)
    updater.close()
    assert postings.stat().st_size > end and committed(folder) == [1]
    rollback(folder, 1)
    assert postings.stat().st_size == end
    for got, want in zip(results(folder, state["queries"]), committed_results):
        np.testing.assert_array_equal(got, want)
    # a generation written beyond the committed one (the index manifest never named it)
    with SpannUpdater(folder) as updater:
        updater.insert(rows, extra)
        updater.commit(2)
    assert committed(folder) == [1, 2]
    with pytest.raises(InputError, match="not the newest"):
        SpannUpdater(folder, generation=1)
    removed = rollback(folder, 1)
    assert "gen-2.json" in removed and committed(folder) == [1]
    assert not any(folder.glob("*-2.*")) and postings.stat().st_size == end
    for got, want in zip(results(folder, state["queries"]), committed_results):
        np.testing.assert_array_equal(got, want)
    # and the rows are free again: the same insert commits cleanly
    with SpannUpdater(folder, generation=1) as updater:
        updater.insert(rows, extra)
        assert updater.commit(2)["n_vectors"] == state["summary"]["n_vectors"] + 1500


def test_flipped_posting_byte_fails_crc(state, tmp_path):
    folder = copy(state, tmp_path)
    s = state["summary"]
    table = np.load(folder / "table-1.npy")
    base_end = s["postings"]["base"]["size"]
    written = np.flatnonzero((table[:, CAPACITY] != DEAD) & (table[:, 0] >= base_end)
                             & (table[:, 1] > 0))
    p = int(written[len(written) // 2])
    offset, count, _, capacity, _ = (int(v) for v in table[p])
    with open(folder / "postings.bin", "r+b") as handle:       # a byte of its vectors
        handle.seek(offset + 8 * capacity + 5)
        byte = handle.read(1)
        handle.seek(offset + 8 * capacity + 5)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IndexFormatError, match=rf"postings\.bin: posting {p} .*crc32"):
        SpannIndex.open(folder, verify="full")
    SpannIndex.open(folder, verify="size").close()              # sizes/structure still fine
    # a flipped byte in the build's region is caught by the build's sha256
    folder2 = copy(state, tmp_path / "b")
    with open(folder2 / "postings.bin", "r+b") as handle:
        handle.seek(4096 + 100)
        byte = handle.read(1)
        handle.seek(4096 + 100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IndexFormatError, match="build's region"):
        SpannIndex.open(folder2, verify="full")


def test_compaction_drops_stale_entries_and_dead_heads(state, tmp_path):
    folder = copy(state, tmp_path)
    before = state["summary"]
    assert before["n_entries"] > before["n_valid_entries"]         # stale entries exist
    with SpannUpdater(folder) as updater:
        summary = updater.compact()
    assert summary["generation"] == 2 and summary["postings"]["file"] == "postings-2.bin"
    assert summary["n_vectors"] == before["n_vectors"]
    assert summary["n_entries"] == summary["n_valid_entries"] < before["n_entries"]
    assert summary["n_dead_heads"] == 0 and summary["n_heads"] == before["n_live_heads"]
    ids, _ = results(folder, state["queries"])
    assert not (~state["live"][ids[ids >= 0]]).any()
    assert recall(ids, exact(state["queries"], state["vectors"], state["live"])) >= 0.9
    # generation 1 stays readable until a cleanup; then only generation 2's files remain
    # (the updater, opened at 1 with no reader of 0 around, already removed 0's table)
    assert not (folder / "table.npy").exists()
    np.testing.assert_array_equal(results(folder, state["queries"], generation=1)[0],
                                  results(state["folder"], state["queries"], generation=1)[0])
    removed = cleanup(folder, 2)
    assert {"postings.bin", "gen-1.json", "table-1.npy"} <= set(removed)
    SpannIndex.open(folder, verify="full").close()


def test_hnsw_heads_skip_dead_heads(tmp_path):
    vectors = np.concatenate([mixture(1500, 1), mixture(1500, 3)])
    folder = tmp_path / "spann"
    build_spann(vectors[:1500], folder, {**PARAMS, "head_index": "hnsw"}, progress=False)
    with SpannUpdater(folder) as updater:
        updater.insert(np.arange(1500, 3000), vectors[1500:])
        summary = updater.commit()
    assert summary["head_index"] == "hnsw" and summary["n_dead_heads"] > 0
    assert "heads-1.faiss" in summary["files"]
    queries = mixture(40, 2)
    with SpannIndex.open(folder) as index:
        dead = index.reader.table[:, CAPACITY] == DEAD
        _, heads = index.heads.search(queries, index.n_heads)
        assert (heads >= 0).all() and not dead[heads].any()
        ids = index.search(queries, K, params=WIDE)[0]
    truth = exact(queries, vectors, np.ones(len(vectors), bool))
    assert recall(ids, truth) >= 0.9


def test_tiny_index_grows_from_one_head(tmp_path):
    """One head (60 vectors): the first split has no other heads to reassign from; then
    deletes shrink it back through merges down to a last head, which is never merged."""
    vectors = mixture(400, 4)
    folder = tmp_path / "spann"
    build_spann(vectors[:60], folder, {**PARAMS, "target": 64, "cap": 128}, progress=False)
    with SpannUpdater(folder) as updater:
        assert updater.heads.n_live == 1
        updater.insert(np.arange(60, 400), vectors[60:])
        grown = updater.commit()
        updater.delete(np.arange(0, 395))
        shrunk = updater.commit()
    assert grown["counters"]["splits"] > 0 and grown["n_live_heads"] > 1
    assert shrunk["n_live_heads"] >= 1 and shrunk["n_vectors"] == 5
    ids, _ = results(folder, vectors[395:], params={"max_postings": 64})
    assert sorted(ids[:, 0]) == list(range(395, 400))


def test_bad_updates_are_refused(state, tmp_path):
    folder = copy(state, tmp_path)
    with SpannUpdater(folder) as updater:
        with pytest.raises(InputError, match="never reused"):
            updater.insert([5], state["vectors"][:1])
        with pytest.raises(InputError, match="not live"):
            updater.delete([0])                                  # deleted at generation 1
        with pytest.raises(InputError, match="shape"):
            updater.insert([10**6], np.zeros((1, DIM + 1), np.float32))
        with pytest.raises(InputError, match="cannot commit"):
            updater.commit(1)


def test_full_postings_shed_replicas_and_keep_every_vector(tmp_path):
    """A build that fills its postings with replicas (8 per vector): inserts trim redundant
    replicas of full postings rather than split them all; no vector loses its last entry."""
    vectors = np.concatenate([mixture(BASE, 1), mixture(600, 11)])
    folder = tmp_path / "spann"
    build_spann(vectors[:BASE], folder, {**PARAMS, "replicas": 8, "eps": 10.0}, progress=False)
    with SpannUpdater(folder) as updater:
        updater.insert(np.arange(BASE, BASE + 600), vectors[BASE:])
        summary = updater.commit()
        assert updater.copies[:BASE + 600].min() >= 1
    assert summary["changes"]["trimmed"] > summary["changes"]["splits"] > 0
    with SpannIndex.open(folder) as index:
        own = index.search(vectors, 1, params=WIDE)[0][:, 0]
    assert (own == np.arange(BASE + 600)).all()


def assert_postings_sound(folder) -> None:
    """No live posting holds more than cap valid entries or a row twice."""
    with SpannIndex.open(folder) as index:
        table, reader = index.reader.table, index.reader
        for p in np.flatnonzero(table[:, CAPACITY] != DEAD):
            buffer = np.empty(int(table[p, 2]), dtype=np.uint8)
            reader.read(int(p), buffer)
            ids = reader.parse(int(p), buffer)[0]
            ok = ids[index.versions[ids & ROW_MASK] == (ids >> VERSION_SHIFT)]
            assert len(np.unique(ok & ROW_MASK)) == len(ok) <= PARAMS["cap"]


def test_refill_copies_neighbours_into_thinned_postings(tmp_path):
    """Deletes thin the postings; the commit refills them with replicas of neighbouring
    vectors (index/spann/refill.py), never past cap, replicas or twice in one posting."""
    vectors = mixture(BASE, 1)
    build_spann(vectors, tmp_path / "build", PARAMS, progress=False)
    live = np.ones(BASE, dtype=bool)
    live[np.arange(0, BASE, 3)] = False
    queries = mixture(60, 2)
    truth = exact(queries, vectors, live)
    summaries, found = {}, {}
    for room in (0, 8):
        folder = tmp_path / f"room{room}"
        shutil.copytree(tmp_path / "build", folder)
        with SpannUpdater(folder, fill_room=room) as updater:
            updater.delete(np.flatnonzero(~live))
            summaries[room] = updater.commit()
            per_row = updater._valid_copies()
        assert per_row.max() <= PARAMS["replicas"] and (per_row[live] >= 1).all()
        assert_postings_sound(folder)
        found[room] = recall(results(folder, queries, params={"max_postings": 3})[0], truth)
    assert summaries[0]["changes"]["filled"] == 0 < summaries[8]["changes"]["filled"]
    assert summaries[8]["replication_factor"] > summaries[0]["replication_factor"]
    assert summaries[8]["posting_length"]["max"] <= PARAMS["cap"]
    assert found[8] >= found[0]


def test_split_fill_gives_new_postings_the_neighbours_replicas(tmp_path):
    """With ``fill_split`` a split's new postings take replicas of the neighbouring vectors
    that reassignment reads (index/spann/refill.py): more entries per vector, never past
    cap or replicas, every vector still found first by its own search."""
    vectors = np.concatenate([mixture(BASE, 1), mixture(EXTRA, 3)])
    build_spann(vectors[:BASE], tmp_path / "build", PARAMS, progress=False)
    summaries = {}
    for fill in (False, True):
        folder = tmp_path / f"fill{fill}"
        shutil.copytree(tmp_path / "build", folder)
        with SpannUpdater(folder, fill_split=fill) as updater:
            updater.insert(np.arange(BASE, BASE + EXTRA), vectors[BASE:])
            summaries[fill] = updater.commit()
            per_row = updater._valid_copies()
        assert per_row.max() <= PARAMS["replicas"] and per_row.min() >= 1
        assert_postings_sound(folder)
        with SpannIndex.open(folder) as index:
            own = index.search(vectors, 1, params=WIDE)[0][:, 0]
        assert (own == np.arange(BASE + EXTRA)).all()
    assert summaries[True]["changes"]["splits"] > 0
    assert summaries[False]["changes"]["filled"] == 0 < summaries[True]["changes"]["filled"]
    assert summaries[True]["replication_factor"] > summaries[False]["replication_factor"]
