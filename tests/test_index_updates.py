"""A living index end to end (real embedder, DuckDB, BM25, SPANN or FAISS): add, replace,
delete and compact through the CLI; each result equals a fresh build over the same live
passages; kill -9 at every stage of an update leaves the last committed generation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.build import build_index
from index.journal import FAULT_ENV, JOURNAL
from index.manifest import verify_index
from retrievers.searcher import Searcher
from searchagent.cli import main
from searchagent.config import Config
from searchagent.errors import IndexFormatError
from searchagent.types import Passage
from tests.conftest import sample_passages

ROOT = Path(__file__).resolve().parents[1]
BASE, EXTRA = 60, 140          # built passages; passages added later (SPANN splits)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pool() -> list[dict]:
    return sample_passages(BASE + EXTRA)


@pytest.fixture(scope="module", params=["spann", "Flat"])
def built(request, pool, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(f"living-{request.param}")
    corpus = write_jsonl(folder / "base.jsonl", pool[:BASE])
    config = Config().updated({"index": {"faiss": request.param, "dtype": "float32"}}, "test")
    build_index(corpus, folder / "index", config)
    return folder / "index"


@pytest.fixture
def index_dir(built, tmp_path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


def fresh_build(rows: list[dict], out: Path, like: Path) -> Path:
    faiss = json.loads((like / "config.json").read_text())["index"]["faiss"]
    config = Config().updated({"index": {"faiss": faiss, "dtype": "float32"}}, "test")
    build_index(write_jsonl(out.parent / f"{out.name}.jsonl", rows), out, config)
    return out


def results(folder: Path, queries: list[str], mode: str) -> list[list[tuple[str, float]]]:
    searcher = Searcher(folder)
    try:
        return [[(h.id, round(h.score, 4)) for h in searcher.search(q, 5, mode)]
                for q in queries]
    finally:
        searcher.close()


def run_cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "searchagent", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_add_replace_delete_compact_equal_a_fresh_build(index_dir, pool, tmp_path, capsys):
    new = pool[BASE:]
    replaced = {**pool[3], "text": "Zanzibar quokkas juggle marmalade at dawn."}
    write_jsonl(tmp_path / "add.jsonl", new + [replaced])
    assert main(["index", "add", str(index_dir), str(tmp_path / "add.jsonl")]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["generation"] == 1 and added["inserted"] == EXTRA and added["replaced"] == 1
    gone = [pool[5]["id"], new[7]["id"], "no-such-id"]
    assert main(["index", "delete", str(index_dir), "--ids", *gone]) == 0
    deleted = json.loads(capsys.readouterr().out)
    assert deleted["generation"] == 2 and deleted["missing_ids"] == ["no-such-id"]
    assert main(["index", "delete", str(index_dir), "--ids", "no-such-id", pool[5]["id"]]) == 1
    printed = capsys.readouterr()               # already gone: no new generation, exit 1
    nothing = json.loads(printed.out)
    assert "none of the 2 id(s) is in the index" in printed.err
    assert (nothing["generation"], nothing["deleted_ids"]) == (2, 0)
    assert nothing["missing_ids"] == ["no-such-id", pool[5]["id"]]

    live = [r for r in pool[:BASE] + new if r["id"] not in gone and r["id"] != replaced["id"]]
    live.append(replaced)
    expected = fresh_build(live, tmp_path / "fresh", index_dir)
    queries = ["Zanzibar quokkas marmalade", pool[5]["title"], new[7]["title"], new[20]["text"],
               pool[30]["title"] + " history"]
    # BM25 statistics stay exact: same ids and scores as a build over the live passages
    assert results(index_dir, queries, "bm25") == results(expected, queries, "bm25")
    dense = results(index_dir, queries, "dense")
    assert dense[0][0][0] == replaced["id"]
    assert all(pool[5]["id"] not in [i for i, _ in hits] for hits in dense)
    assert dense[3][0][0] == new[20]["id"]
    np.testing.assert_allclose([s for _, s in dense[3]],
                               [s for _, s in results(expected, queries, "dense")[3]], atol=1e-3)

    assert sorted(p.name for p in (index_dir / "bm25").glob("gen-*.json")) == \
        ["gen-1.json", "gen-2.json"]
    assert main(["index", "compact", str(index_dir)]) == 0
    compacted = json.loads(capsys.readouterr().out)
    assert compacted["generation"] == 3
    # the CLI drops what only older generations read: BM25 keeps generation 3's files alone
    assert "bm25/gen-1.json" in compacted["removed"] and "bm25/postings.npz" in compacted["removed"]
    listed = {rel.split("/")[1] for rel in json.loads((index_dir / "manifest.json").read_text())
              ["files"] if rel.startswith("bm25/")}
    assert {p.name for p in (index_dir / "bm25").iterdir()} == listed | {"gen-3.json"}
    assert [p.name for p in (index_dir / "dense").glob("deleted-*.npy")] == ["deleted-3.npy"]
    verify_index(index_dir, "full")
    assert results(index_dir, queries, "bm25") == results(expected, queries, "bm25")
    assert main(["index", "info", str(index_dir)]) == 0
    info = capsys.readouterr().out
    assert "generation: 3" in info and f"live {len(live)}" in info
    manifest = json.loads((index_dir / "manifest.json").read_text())
    rows = manifest["counts"]["rows"]
    assert f"deleted {rows - len(live)}" in info          # the compaction purged their text
    on_disk = sum((index_dir / rel).stat().st_size for rel in manifest["files"])
    assert f"({on_disk / 1e6:.1f} MB)" in info            # SPANN's growing postings counted
    vector_index = manifest["components"]["dense"]["index"]
    if vector_index["kind"] == "spann":                  # not the build's figure any more
        assert "dense/spann/spann.json" in manifest["files"]   # still checked on open
        assert vector_index["bytes_on_disk"] == sum(
            (index_dir / rel).stat().st_size for rel in manifest["files"]
            if rel.startswith("dense/spann/"))
    write_jsonl(tmp_path / "more.jsonl", [{"id": "more-1", "title": "Kerguelen",
                                           "text": "Penguins collect shiny pebbles."}])
    assert main(["index", "add", str(index_dir), str(tmp_path / "more.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["deleted_total"] == rows - len(live)


def test_a_searcher_keeps_its_generation_while_the_next_commits(index_dir, pool):
    from retrievers.live_searcher import LiveSearcher

    live = LiveSearcher(index_dir)
    try:
        with live.using() as before:          # a search running across the update
            old = [h.id for h in before.search(pool[10]["title"], 5, "hybrid")]
            live.delete([pool[10]["id"]])
            assert [h.id for h in before.search(pool[10]["title"], 5, "hybrid")] == old
        assert pool[10]["id"] not in [h.id for h in live.search(pool[10]["title"], 5, "hybrid")]
        assert live.counts() == {"generation": 1, "live": BASE - 1, "deleted": 1}
    finally:
        live.close()


def test_a_server_compacts_every_n_updates(index_dir, pool):
    """A server with updates on never compacted (and ``index compact`` cannot run beside
    it): a soak test's 446 updates left 5,281 files and made each update 3x slower."""
    from retrievers.live_searcher import LiveSearcher

    config = Config().updated({"server": {"compact_every": 3}}, "test")
    live = LiveSearcher(index_dir, config)
    try:
        results = [live.add([Passage(**{k: p[k] for k in ("id", "title", "text")})])
                   for p in pool[BASE:BASE + 7]]
        assert ["compacted" in r for r in results] == [False, False, True] * 2 + [False]
        assert results[2]["compacted"]["generation"] == 4 and \
            results[5]["compacted"]["generation"] == 8
        assert results[5]["compacted"]["files_removed"] > 0
        assert live.counts()["generation"] == 9
        assert len(list((index_dir / "bm25").glob("gen-*.json"))) <= 4
        assert [h.id for h in live.search(pool[BASE + 6]["title"], 1, "bm25")] == \
            [pool[BASE + 6]["id"]]
    finally:
        live.close()


def test_a_failed_periodic_compaction_leaves_the_update_served(index_dir, pool, monkeypatch):
    """The update commits before the compaction: a compaction that failed (a full disk)
    raised out of it, so its client got an error for a committed update and the server
    went on searching the generation before, for this and every later update."""
    from index.living import LivingIndex
    from retrievers.live_searcher import LiveSearcher

    def disk_full(self, drop_old=False):
        raise OSError(28, "No space left on device")

    config = Config().updated({"server": {"compact_every": 2}}, "test")
    live = LiveSearcher(index_dir, config)
    add = [Passage(**{k: p[k] for k in ("id", "title", "text")}) for p in pool[BASE:BASE + 4]]
    try:
        live.add(add[:1])
        with monkeypatch.context() as patch:
            patch.setattr(LivingIndex, "compact", disk_full)
            failed = live.add(add[1:2])
        assert "No space left" in failed["compacted"]["error"] and failed["generation"] == 2
        assert live.counts()["generation"] == 2                  # the update is served
        assert [h.id for h in live.search(add[1].title, 1, "bm25")] == [add[1].id]
        assert "compacted" not in live.add(add[2:3])            # not retried at once
        assert live.add(add[3:4])["compacted"]["generation"] == 5
    finally:
        live.close()


def test_a_funnel_search_reads_one_generation_and_replaced_searchers_close_when_idle(
        index_dir, pool):
    """A server's multi-hop funnel read BM25, the query vector and the vector index one by
    one from whatever generation was current: an update committing in between returned a
    replaced passage twice (its old and new rows). And every replaced searcher stayed open
    for 300 s (its vector index in memory, its lease), however many updates came."""
    from index.leases import held_generations
    from retrievers.funnel import FunnelRetriever
    from retrievers.live_searcher import LiveSearcher

    target = pool[10]
    live = LiveSearcher(index_dir)
    try:
        funnel = FunnelRetriever(live, coarse_k=20, shortlist=10)
        encoder = live.encoder
        encode = encoder.encode

        def encode_then_replace(texts, *args, **kwargs):   # the query is encoded between
            encoder.encode = encode                        # the BM25 and vector stages
            live.add([Passage(target["id"], target["title"], target["text"] + " Revised.")])
            return encode(texts, *args, **kwargs)

        encoder.encode = encode_then_replace
        ids = [hit.id for hit in funnel.search(target["title"], 10)]
        assert ids.count(target["id"]) == 1, ids
        assert live.generation == 1 and held_generations(index_dir, 1) == []   # closed
        with live.using() as pinned:
            live.delete([pool[11]["id"]])
            live.delete([pool[12]["id"]])
            assert held_generations(index_dir, 3) == [1]      # pinned; 2 closed at once
            assert pool[11]["id"] in [h.id for h in pinned.search(pool[11]["title"], 5)]
        assert held_generations(index_dir, 3) == []
        revised = [h for h in live.search(target["title"], 5) if h.id == target["id"]]
        assert [h.text.endswith("Revised.") for h in revised] == [True]
    finally:
        live.close()


def test_compact_drop_old_keeps_what_an_open_searcher_reads(index_dir, pool):
    """A Searcher of generation 1 opens its components lazily and reads the text of
    passages deleted later: ``compact(drop_old=True)`` from the API used to delete its
    BM25 / SPANN files and dense mask and purge that text under it (fewer hits, or an
    IndexFormatError). Its lease keeps them until it closes; the next compact drops them."""
    from index.living import LivingIndex

    def hits(searcher, mode):
        return [[(h.id, round(h.score, 4)) for h in searcher.search(q, 5, mode)]
                for q in (pool[10]["title"], pool[BASE + 2]["title"])]

    with LivingIndex(index_dir) as living:
        living.add([Passage(**{k: p[k] for k in ("id", "title", "text")})
                    for p in pool[BASE:BASE + 20]])                       # generation 1
        searched = Searcher(index_dir, docstore=living.docstore)
        lazy = Searcher(index_dir, docstore=living.docstore)              # opens nothing yet
        before = {mode: hits(searched, mode) for mode in ("bm25", "hybrid")}
        assert before["bm25"][0][0][0] == pool[10]["id"]
        living.delete([pool[10]["id"]])                                   # generation 2
        compacted = living.compact(drop_old=True)                         # generation 3
        assert compacted["kept"]["held_generations"] == [1]
        assert "bm25/gen-1.json" not in compacted["removed"]
        for searcher in (searched, lazy):
            assert {mode: hits(searcher, mode) for mode in before} == before
        searched.close()
        lazy.close()
        again = living.compact(drop_old=True)                             # generation 4
        assert "kept" not in again and "dense/deleted-1.npy" in again["removed"]
        assert not living.docstore.rows_for_ids([pool[10]["id"]])        # text purged now
    gone = ["bm25/gen-1.json", "bm25/seg-1", "dense/deleted-3.npy", "dense/spann/gen-1.json",
            "dense/spann/table-1.npy", "dense/spann/gen-3.json"]
    assert [rel for rel in gone if (index_dir / rel).exists()] == []
    assert pool[10]["id"] not in [i for i, _ in results(index_dir, [pool[10]["title"]],
                                                         "bm25")[0]]


STAGES = ["after-journal", "after-docstore", "after-components", "before-commit",
          "after-commit"]


@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_at_any_stage_leaves_a_committed_generation(index_dir, pool, tmp_path, stage):
    faiss = json.loads((index_dir / "config.json").read_text())["index"]["faiss"]
    if faiss == "spann" and stage in STAGES[:2]:
        pytest.skip("killed before any vector component is written: as the Flat index's")
    queries = [pool[BASE + 1]["title"], pool[2]["title"]]
    before = {m: results(index_dir, queries, m) for m in ("bm25", "dense")}
    batch = write_jsonl(tmp_path / "add.jsonl", pool[BASE:BASE + 20])
    proc = subprocess.run([sys.executable, "-m", "searchagent", "index", "add", str(index_dir),
                           str(batch)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", FAULT_ENV: stage})
    assert proc.returncode == -9, proc.stderr
    assert (index_dir / JOURNAL).exists()
    info = subprocess.run([sys.executable, "-m", "searchagent", "index", "info", str(index_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "run: searchagent index recover" in info.stderr, info.stderr
    committed = stage == "after-commit"
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest.get("generation", 0) == (1 if committed else 0)
    # readers open the committed generation as it is, before any recovery
    if not committed:
        assert {m: results(index_dir, queries, m) for m in ("bm25", "dense")} == before
    # the next writer rolls back what was not committed, then works normally
    result = run_cli("index", "add", str(index_dir), str(batch))
    assert not (index_dir / JOURNAL).exists()
    assert result["generation"] == (2 if committed else 1)
    assert result["replaced"] == (20 if committed else 0)
    hits = results(index_dir, queries, "bm25")
    assert hits[0][0][0] == pool[BASE + 1]["id"]
    assert Searcher(index_dir).manifest["counts"]["passages"] == BASE + 20


def test_a_damaged_journal_is_a_clear_error_and_recover_rolls_back(index_dir, pool):
    (index_dir / JOURNAL).write_text('{"generation": 1, "op": "add"')      # torn write
    from index.living import LivingIndex

    with pytest.raises(IndexFormatError, match="damaged journal .*journal.json.*recover"):
        LivingIndex(index_dir)
    result = run_cli("index", "recover", str(index_dir))
    assert result["generation"] == 0 and result["recovered"]["damaged"]
    assert not (index_dir / JOURNAL).exists()


def test_no_update_commits_on_top_of_a_missing_segment(index_dir, pool):
    """A dense segment of an earlier update deleted by hand: later adds, deletes and
    compactions used to commit generations that no search could open."""
    from index.living import LivingIndex

    with LivingIndex(index_dir) as living:
        living.add([Passage(**{k: p[k] for k in ("id", "title", "text")})
                    for p in pool[BASE:BASE + 3]])
    segment = next((index_dir / "dense").glob("add-1*"))
    segment.unlink()
    with pytest.raises(IndexFormatError, match=f"index file missing: .*{segment.name}"):
        LivingIndex(index_dir)
    assert json.loads((index_dir / "manifest.json").read_text())["generation"] == 1


def test_info_and_recover_check_what_search_checks(index_dir, pool, tmp_path, capsys):
    """A byte flipped in SPANN's posting file (append-only, so the manifest lists only its
    size) passed ``index info --verify full`` and ``recover``; search then refused it."""
    write_jsonl(tmp_path / "one.jsonl", pool[BASE:BASE + 1])
    for updated in (False, True):
        copy = tmp_path / f"copy-{updated}"
        shutil.copytree(index_dir, copy)
        if updated:
            assert main(["index", "add", str(copy), str(tmp_path / "one.jsonl")]) == 0
        spann = copy / "dense" / "spann" / "postings.bin"
        damaged = spann if spann.exists() else copy / "dense" / "faiss.index"
        data = bytearray(damaged.read_bytes())
        data[len(data) // 3] ^= 0xFF
        damaged.write_bytes(bytes(data))
        capsys.readouterr()
        assert main(["index", "info", str(copy), "--verify", "full"]) == 2
        assert damaged.name in capsys.readouterr().err
        assert main(["index", "recover", str(copy)]) == 2
        assert "damaged" in capsys.readouterr().err
        assert main(["index", "info", str(copy), "--verify", "size"]) == 0
