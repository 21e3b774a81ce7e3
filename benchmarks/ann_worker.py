"""Measure one built system in a fresh process (so resident memory is its own).

``python -m benchmarks.ann_worker SYSTEM FOLDER BASE.npy QUERIES.npy GT.npy COLD_QUERIES``
prints one JSON object: resident memory before/after loading and after searching, and
per setting recall@10, single-thread latency p50/p99 (warm), QPS with 2 threads, and
cold-cache latency for the disk-based systems.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.ann_systems import COLD_SETTINGS, SETTINGS, Loaded

K = 10


def rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


def latency_pass(loaded: Loaded, queries, setting, cold=False):
    found = np.full((len(queries), K), -1, dtype=np.int64)
    times, extras = [], []
    for i in range(len(queries)):
        if cold:
            loaded.make_cold()
        start = time.perf_counter()
        ids, extra = loaded.search(queries[i:i + 1], K, setting, cold=cold)
        times.append(time.perf_counter() - start)
        found[i] = ids[0]
        extras.append(extra)
    return found, np.array(times) * 1000, extras


def qps_two_threads(loaded: Loaded, queries, setting) -> float:
    halves = [queries[0::2], queries[1::2]]

    def work(part):
        for i in range(len(part)):
            loaded.search(part[i:i + 1], K, setting)

    threads = [threading.Thread(target=work, args=(h,)) for h in halves]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(queries) / (time.perf_counter() - start)


def summarize_extra(extras: list[dict]) -> dict:
    if not extras or not extras[0]:
        return {}
    keys = ("postings_read", "bytes_read", "io_seconds", "compute_seconds", "head_seconds")
    out = {f"mean_{k}": float(np.mean([e[k] for e in extras])) for k in keys}
    out["cold_method"] = extras[0].get("cold_method", "")
    return out


def main(system, folder, base_path, query_path, gt_path, cold_queries) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    queries, truth = np.load(query_path), np.load(gt_path)[:, :K]
    before = rss_bytes()
    start = time.perf_counter()
    loaded = Loaded(system, Path(folder), Path(base_path))
    load_seconds = time.perf_counter() - start
    after_load = rss_bytes()
    rows = []
    settings = SETTINGS[system]
    if system in COLD_SETTINGS:
        loaded.search(queries, K, settings[-1])      # warm the page cache (untimed)
    for setting in settings:
        found, ms, extras = latency_pass(loaded, queries, setting)
        mode = "warm-pread" if setting.get("read") == "pread" else "warm"
        rows.append({"setting": setting, "mode": mode, "recall": recall(found, truth),
                     "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                     "qps_2threads": qps_two_threads(loaded, queries, setting),
                     **summarize_extra(extras)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    after_search = rss_bytes()
    for setting in COLD_SETTINGS.get(system, []):
        sub = queries[:cold_queries]
        found, ms, extras = latency_pass(loaded, sub, setting, cold=True)
        rows.append({"setting": setting, "mode": "cold", "recall": recall(found, truth[:len(sub)]),
                     "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                     "cold_method": loaded.make_cold() if system != "spann" else "",
                     **summarize_extra(extras)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"system": system, "rss_load_bytes": after_load - before,
            "rss_after_search_bytes": after_search - before,
            "own_memory_bytes": loaded.memory_bytes(), "load_seconds": load_seconds,
            "rows": rows}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(*args[:5], int(args[5]))))
