"""Where LIRE's recall goes after the churn run: the true neighbours each index misses.

    .venv/bin/python -m benchmarks.churn_misses --out bench-out/churn --rounds 20

Rebuilds ``benchmarks/churn.py``'s live set and last queries (same seeds), then for (a)
LIRE at the last round and (c) the rebuild prints, over every query's true top 10: the
copies (valid posting entries) per vector, the share whose exact nearest live head does not
hold them, and for the missed ones the same plus whether any posting holding them is among
the query's ``max_postings`` nearest heads. Synthetic set only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.ann_data import Mixture, synthetic
from benchmarks.churn import K, add_run_args, churn_round, exact_top, round_draw, search_params
from index.faiss_index import import_faiss
from index.spann import SpannIndex
from index.spann.opening import load_snapshot
from index.spann.postings import ROW_MASK, widen
from index.spann.store import PostingStore, valid_mask


def live_set(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, live mask, queries) of churn.py's last round."""
    base = np.load(synthetic(args.cache, args.n)[0], mmap_mode="r")
    n, dim = base.shape
    per = int(round(args.churn * n))
    mixture = Mixture(max(10, n // 1000), dim, 0)
    vectors = np.empty((n + per * args.rounds, dim), np.float32)
    vectors[:n] = base
    live = np.zeros(len(vectors), bool)
    live[:n] = True
    rng = np.random.default_rng(7)
    for r in range(1, args.rounds + 1):
        churn_round(rng, live, vectors, n, per, r, mixture, args.drift)
    queries = round_draw(mixture, args.rounds, args.drift, args.queries, "queries")
    return vectors, live, queries


def holders(folder: Path, generation: int | None, rows_of) -> tuple[dict, object]:
    """{row: heads holding a valid entry of it}, and the loaded snapshot."""
    snap = load_snapshot(folder, generation, "size")
    dim, dtype = int(snap.meta["dim"]), snap.meta["params"]["dtype"]
    store = PostingStore(snap.postings, widen(snap.table), dim, dtype, snap.end, snap.base_end)
    held: dict[int, list[int]] = {}
    for p in np.flatnonzero(~snap.dead):
        ids = store.ids[p]
        if snap.versions is not None:
            ids = ids[valid_mask(ids, snap.versions)]
        for row in (ids & ROW_MASK).tolist():
            held.setdefault(row if rows_of is None else int(rows_of[row]), []).append(int(p))
    store.close()
    return held, snap


def misses(name, folder, generation, rows_of, vectors, queries, truth, params) -> None:
    held, snap = holders(folder, generation, rows_of)
    live_heads = np.flatnonzero(~snap.dead)
    flat = import_faiss().IndexFlatL2(vectors.shape[1])
    flat.add(np.ascontiguousarray(snap.heads[live_heads], dtype=np.float32))
    wanted = np.unique(truth.ravel())
    nearest = dict(zip(wanted.tolist(),
                       live_heads[flat.search(vectors[wanted], 1)[1][:, 0]].tolist()))
    copies, away, missed = [], [], []
    with SpannIndex.open(folder, generation=generation, verify="size") as index:
        for query, top in zip(queries, truth):
            probe = index.heads.search(query[None], params["max_postings"],
                                       params["ef_search"])[1][0]
            ids = index.search(query[None], K, params=params)[0][0]
            found = set((ids if rows_of is None else rows_of[np.maximum(ids, 0)]).tolist())
            for v in top.tolist():
                heads = held.get(v, [])
                copies.append(len(heads))
                away.append(nearest[v] not in heads)
                if v not in found:
                    missed.append((len(heads), away[-1], bool(np.isin(heads, probe).any())))
    copies, away, missed = np.array(copies), np.array(away), np.array(missed).reshape(-1, 3)
    print(f"| {name} | {1 - len(missed) / len(copies):.4f} | {copies.mean():.2f} | "
          f"{away.mean():.3f} | {len(missed)} | {missed[:, 0].mean():.2f} | "
          f"{(missed[:, 0] == 1).mean():.2f} | {missed[:, 1].mean():.2f} | "
          f"{1 - missed[:, 2].mean():.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(parser)
    parser.add_argument("--cache", type=Path, default=Path("bench-out/ann"))
    args = parser.parse_args()
    vectors, live, queries = live_set(args)
    live_rows = np.flatnonzero(live)
    truth = exact_top(live_rows, vectors, queries)
    print("| index | recall@10 | copies / true neighbour | not at its nearest head | missed "
          "| copies / missed | missed with 1 copy | missed, not at nearest head | missed, "
          "no holder among the probed heads |")
    print("|---" * 9 + "|")
    misses("(a) LIRE", args.out / "lire", args.rounds, None, vectors, queries, truth,
           search_params(args))
    misses("(c) rebuild", args.out / "rebuild", None, live_rows, vectors, queries, truth,
           search_params(args))


if __name__ == "__main__":
    main()
