"""SPANN updates reuse disk space (index/spann/store.py ``reuse``) only where no reader can
still look (index/spann/leases.py): same search results as appending, a smaller file, a
reader of an older generation (in this process or another) keeps its bytes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.spann import SpannIndex, SpannUpdater, build_spann
from index.spann.generations import committed
from index.spann.leases import Lease, held_below
from searchagent.errors import IndexFormatError
from tests.test_spann import PARAMS, mixture

BASE, PER_ROUND, K = 3000, 300, 10
WIDE = {"max_postings": 64, "eps_search": 1.0}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("space") / "built"
    vectors = np.concatenate([mixture(BASE, 1)] + [mixture(PER_ROUND, 10 + r) for r in range(8)])
    build_spann(vectors[:BASE], folder, PARAMS, progress=False)
    return folder, vectors


def churn(updater: SpannUpdater, vectors, rounds: range) -> None:
    """Per round: delete PER_ROUND live rows, insert the next PER_ROUND, commit, reclaim."""
    rng = np.random.default_rng(rounds.start)
    for r in rounds:
        first = BASE + r * PER_ROUND
        alive = np.flatnonzero(updater.versions[:first] < 127)
        updater.delete(rng.choice(alive, PER_ROUND, replace=False))
        updater.insert(np.arange(first, first + PER_ROUND), vectors[first:first + PER_ROUND])
        updater.commit()
        updater.reclaim()


def search(folder, queries, generation=None):
    with SpannIndex.open(folder, generation=generation, verify="full") as index:
        return index.search(queries, K, params=WIDE)[:2]


def test_reused_space_gives_the_same_index_in_a_smaller_file(built, tmp_path):
    source, vectors = built
    reused, appended = tmp_path / "reused", tmp_path / "appended"
    shutil.copytree(source, reused)
    shutil.copytree(source, appended)
    for folder, reuse in ((reused, True), (appended, False)):
        with SpannUpdater(folder, reuse_space=reuse) as updater:
            churn(updater, vectors, range(8))
    queries = mixture(40, 2)
    got, want = search(reused, queries), search(appended, queries)     # crcs verified
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
    size = {f: (f / "postings.bin").stat().st_size for f in (reused, appended)}
    assert size[reused] < 0.8 * size[appended]
    # only the newest generation's files are left; the build's sha256 no longer vouches
    # for the region it wrote (blocks there were reused): every posting has its crc
    assert committed(reused) == [8] and not (reused / "table.npy").exists()
    assert committed(appended) == list(range(1, 9))
    gen8 = SpannUpdater(reused).meta
    assert gen8["postings"]["base"] is None
    with pytest.raises(IndexFormatError, match="generation 3 not found"):
        SpannIndex.open(reused, generation=3)


def churned_copy(built, tmp_path, rounds: int) -> Path:
    """A copy of the built folder after ``rounds`` rounds of churn."""
    folder = tmp_path / "spann"
    shutil.copytree(built[0], folder)
    with SpannUpdater(folder) as updater:
        churn(updater, built[1], range(rounds))
    return folder


def test_a_leased_generation_keeps_its_bytes(built, tmp_path):
    folder, vectors = churned_copy(built, tmp_path, 2), built[1]
    queries = mixture(40, 3)
    reader = SpannIndex.open(folder, generation=2)
    before = reader.search(queries, K, params=WIDE)[:2]
    with SpannUpdater(folder) as updater:            # the reader holds 2: gaps of 2 are free
        churn(updater, vectors, range(2, 4))         # ... then 3's and 4's are not
        assert held_below(folder, 4) == [2] and committed(folder) == [2, 3, 4]
    again = reader.search(queries, K, params=WIDE)[:2]
    np.testing.assert_array_equal(again[0], before[0])
    np.testing.assert_array_equal(again[1], before[1])
    # every posting of generation 2 still passes its crc
    np.testing.assert_array_equal(search(folder, queries, generation=2)[0], before[0])
    reader.close()
    with SpannUpdater(folder) as updater:            # nobody holds 2 or 3 any more
        assert committed(folder) == [4] and len(updater.store.free)
        churn(updater, vectors, range(4, 6))
    search(folder, queries)


def test_a_lease_in_another_process_blocks_reuse(built, tmp_path):
    folder, vectors = churned_copy(built, tmp_path, 1), built[1]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from index.spann import SpannIndex; "
         f"index = SpannIndex.open({str(folder)!r}); print(index.generation, flush=True); "
         "sys.stdin.read()"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "1"
        with SpannUpdater(folder) as updater:
            churn(updater, vectors, range(1, 3))
            assert held_below(folder, 3) == [1] and committed(folder) == [1, 2, 3]
    finally:
        holder.communicate("", timeout=60)
    assert held_below(folder, 3) == []               # its lease went with the process
    with SpannUpdater(folder):
        assert committed(folder) == [3]


def test_a_removed_lease_file_is_not_trusted(tmp_path):
    first = Lease(tmp_path, 5)
    assert held_below(tmp_path, 6) == [5]
    first.release()
    assert held_below(tmp_path, 6) == [] and not (tmp_path / "leases" / "gen-5.lock").exists()
    again = Lease(tmp_path, 5)                       # a fresh file, locked
    assert held_below(tmp_path, 6) == [5]
    again.release()
