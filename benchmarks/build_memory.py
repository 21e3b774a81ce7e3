"""Peak memory of the index build stages: the in-memory BM25 build vs the streaming one.

    python benchmarks/build_memory.py [--sizes 100000,1000000] [--dense-sizes 2000,6000]
                                      [--new-sizes 3000000] [--out results.json]

Corpora are bm25_speed's synthetic ones (Zipf words, 30-90 a passage), written as JSONL to
bench-out/build_memory/. Every stage runs in a fresh child process that reports its wall
seconds, its RSS before the stage (interpreter + imports) and its peak RSS (VmHWM):

- docstore, old: ``write_docstore(read_corpus(...))`` (duplicate ids by a set in memory);
  new: ``index.corpus.load_corpus`` (duplicates by one DuckDB query after the load); both
  with today's ``write_docstore`` (DuckDB capped at ``BUILD_MEMORY_LIMIT``);
- bm25, old: ``BM25Index.build(...).save(...)`` reading the doc store with one ORDER BY (as
  before); new: ``retrievers.bm25_build`` (the build's ``_build_bm25``) reading it range by
  range with DuckDB's buffer pool capped (``BUILD_READ_MEMORY_LIMIT``);
- embed (``--dense-sizes``): ``index.build._embed`` with the bundled embedder, which streams
  into a memory-mapped .npy, at two sizes to show that it stays flat.

Writes bench-out/build_memory/results.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import OUT, table  # noqa: E402

FOLDER = OUT / "build_memory"
MB = 1024       # /proc status values are in kB


def write_corpus(path: Path, n: int) -> Path:
    if path.is_file():
        return path
    from benchmarks.bm25_speed import synthetic_corpus

    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as out:
        for i, words in enumerate(synthetic_corpus(n)):
            out.write(json.dumps({"id": f"p{i}", "title": "", "text": " ".join(words)}) + "\n")
    partial.rename(path)
    return path


def proc_status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def child(mode: str, corpus: Path, work: Path) -> dict:
    """Run one stage in this (fresh) process; the numbers go to stdout as JSON."""
    from index.build import _embed, build_encoder
    from index.corpus import load_corpus, read_corpus
    from retrievers.bm25 import BM25Index
    from retrievers.bm25_build import build_bm25_files
    from retrievers.docstore import BUILD_READ_MEMORY_LIMIT, DocStore, write_docstore
    from retrievers.tokenize import tokenize
    from searchagent.config import IndexConfig

    db = work / "docs.duckdb"
    before = proc_status("VmRSS")
    start = time.perf_counter()
    if mode.startswith("docstore"):
        if mode == "docstore-old":
            count = write_docstore(db, read_corpus(corpus))
        else:
            count = load_corpus(corpus, db)
        extra = {"passages": count}
    else:
        store = DocStore(db, memory_limit=None if mode == "bm25-old" else BUILD_READ_MEMORY_LIMIT)
        texts = old_iter_texts(store) if mode == "bm25-old" else store.iter_texts()
        tokens = (tokenize(f"{title} {text}") for _, title, text in texts)
        if mode == "bm25-old":
            index = BM25Index.build(tokens, total=store.size)
            index.save(work / "bm25-old")
            extra = {"postings": int(len(index.indices))}
        elif mode == "bm25-new":
            extra = {"postings": build_bm25_files(tokens, work / "bm25-new",
                                                  total=store.size)["postings"]}
        else:
            _embed(store, work / "dense" / "embeddings.npy", IndexConfig(),
                   build_encoder(IndexConfig(), work))
            extra = {}
        store.close()
    return {"mode": mode, "seconds": time.perf_counter() - start, "rss_before_mb":
            before / MB, "peak_rss_mb": proc_status("VmHWM") / MB, **extra}


def old_iter_texts(store, batch: int = 10_000):
    """``DocStore.iter_texts`` before the streaming build: one ORDER BY over the table."""
    cursor = store._con.cursor()
    cursor.execute("SELECT row, title, text FROM passages ORDER BY row")
    while chunk := cursor.fetchmany(batch):
        yield from chunk


def run_child(mode: str, corpus: Path, work: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", mode, "--corpus", str(corpus),
                           "--work", str(work)], stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result, flush=True)
    return result


def measure(size: int, pipelines: dict[str, list[str]]) -> list[dict]:
    """Each pipeline's stages, in order, on one work folder; the BM25 outputs compared."""
    corpus = write_corpus(FOLDER / f"corpus-{size}.jsonl", size)
    results = []
    for name, modes in pipelines.items():
        work = FOLDER / f"work-{size}-{name}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        results += [{"passages": size, **run_child(mode, corpus, work)} for mode in modes]
    old, new = FOLDER / f"work-{size}-old" / "bm25-old", FOLDER / f"work-{size}-new" / "bm25-new"
    if old.is_dir() and new.is_dir():
        same = digests(old) == digests(new)
        print(f"{size:,} passages: streaming BM25 files identical to the in-memory build: "
              f"{same}", flush=True)
        for result in results:
            result["bm25_identical"] = same
    for name in pipelines:
        left = sorted(p.name for p in (FOLDER / f"work-{size}-{name}").iterdir())
        print(f"work-{size}-{name} holds {left}", flush=True)    # no temporary files left
        shutil.rmtree(FOLDER / f"work-{size}-{name}", ignore_errors=True)
    return results


def digests(folder: Path) -> dict[str, str]:
    """sha256 of each postings.npz member and of the JSON files."""
    import hashlib
    import zipfile

    found = {}
    with zipfile.ZipFile(folder / "postings.npz") as archive:
        for member in archive.namelist():
            digest = hashlib.sha256()
            with archive.open(member) as handle:
                while block := handle.read(1 << 24):
                    digest.update(block)
            found[member] = digest.hexdigest()
    for name in ("vocab.json", "params.json"):
        found[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dense-sizes", default="2000,6000")
    parser.add_argument("--new-sizes", default="", help="sizes for the new pipeline only")
    parser.add_argument("--out", default="results.json", help="file in bench-out/build_memory")
    parser.add_argument("--child")
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.corpus, args.work)))
        return
    FOLDER.mkdir(parents=True, exist_ok=True)
    results = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        results += measure(size, {"old": ["docstore-old", "bm25-old"],
                                  "new": ["docstore-new", "bm25-new"]})
    for size in [int(s) for s in args.new_sizes.split(",") if s]:
        results += measure(size, {"new": ["docstore-new", "bm25-new"]})
    for size in [int(s) for s in args.dense_sizes.split(",") if s]:
        results += measure(size, {"dense": ["docstore-new", "embed"]})
    (FOLDER / args.out).write_text(json.dumps(results, indent=1))
    rows = [[f"{r['passages']:,}", r["mode"], r["seconds"], r["rss_before_mb"],
             r["peak_rss_mb"], r["peak_rss_mb"] - r["rss_before_mb"]] for r in results]
    print()
    print(table(["passages", "stage", "wall s", "RSS before MB", "peak RSS MB",
                 "peak - before MB"], rows))


if __name__ == "__main__":
    main()
