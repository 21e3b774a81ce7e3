"""The head index of an updated SPANN folder (index/spann/heads.py): searches return the
nearest live heads only, also where dead heads cluster around the queries."""

from __future__ import annotations

import numpy as np
import pytest

from index.spann.heads import HeadIndex

DIM = 16


def exact_live(heads, dead, queries, m):
    sqd = ((queries[:, None, :] - heads[None, :, :]) ** 2).sum(axis=2)
    sqd[:, dead] = np.inf
    return np.argsort(sqd, axis=1)[:, :m]


@pytest.mark.parametrize("kind", ["hnsw", "flat"])
def test_search_skips_dead_heads_clustered_around_the_queries(kind):
    rng = np.random.default_rng(0)
    heads = rng.standard_normal((600, DIM)).astype(np.float32)
    queries = heads[:5] + 0.01 * rng.standard_normal((5, DIM)).astype(np.float32)
    index = HeadIndex(heads, None, kind)
    near = exact_live(heads, np.zeros(600, bool), queries, 60)
    index.kill(np.unique(near[:, :40]))               # most heads near every query die
    added = index.add(heads[:5] + 0.5)                # a split's new heads
    dead = index.dead.copy()
    assert dead[np.unique(near[:, :40])].all() and not dead[added].any()

    sqd, ids = index.search(queries, 20, ef=400)
    truth = exact_live(index.heads, dead, queries, 20)
    assert (ids >= 0).all() and not dead[ids].any()
    assert np.all(np.diff(sqd, axis=1) >= 0)
    assert np.mean([len(set(a) & set(b)) / 20 for a, b in zip(ids, truth)]) >= 0.95


@pytest.mark.parametrize("kind", ["hnsw", "flat"])
def test_fewer_live_heads_than_asked_pads(kind):
    heads = np.random.default_rng(1).standard_normal((50, DIM)).astype(np.float32)
    index = HeadIndex(heads, None, kind)
    index.kill(np.arange(3, 50))
    sqd, ids = index.search(heads[:2], 8)
    assert sorted(ids[0, :3]) == [0, 1, 2] and (ids[:, 3:] == -1).all()
    assert np.isinf(sqd[:, 3:]).all() and np.isfinite(sqd[:, :3]).all()
