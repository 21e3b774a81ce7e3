"""``searchagent search INDEX_DIR "query"``."""

from __future__ import annotations

import json
import time

from searchagent.config import load_config


def register(sub) -> None:
    search = sub.add_parser("search", help="retrieve passages for a query")
    search.add_argument("index_dir", help="an index folder")
    search.add_argument("query", help="the query text")
    search.add_argument("-k", type=int, default=10, help="hits to return (default 10)")
    search.add_argument("--mode", choices=["bm25", "dense", "hybrid"],
                        help="retriever (retrieval.mode, default hybrid: RRF of what the "
                        "index has)")
    search.add_argument("--windows-per-doc", type=int, metavar="N", help="an index built "
                        "with --chunk-words: at most N windows of one document "
                        "(retrieval.windows_per_doc, default 1; 0 keeps all)")
    search.add_argument("--json", action="store_true", help="one JSON object per hit")
    search.set_defaults(func=run_search)


def run_search(args) -> int:
    from retrievers.searcher import Searcher

    config = load_config(args.config, cli={"retrieval": {
        "mode": args.mode, "windows_per_doc": args.windows_per_doc}})
    searcher = Searcher(args.index_dir, config)
    start = time.perf_counter()
    hits = searcher.search(args.query, args.k, config.retrieval.mode)
    seconds = time.perf_counter() - start
    for rank, hit in enumerate(hits, start=1):
        if args.json:
            print(json.dumps({"rank": rank, "id": hit.id, "score": hit.score,
                              "title": hit.title, "text": hit.text}))
        else:
            print(f"{rank:>3}. {hit.score:8.4f}  [{hit.id}] {hit.title}: {hit.text[:100]}")
    if not args.json:
        print(f"({len(hits)} hits, {config.retrieval.mode}, {seconds * 1000:.1f} ms, including "
              "loading what the search needs: `searchagent serve` keeps it loaded)")
        if not hits and config.retrieval.mode == "bm25":
            print(_why_no_bm25_hit(args.query))
    return 0


def _why_no_bm25_hit(query: str) -> str:
    from retrievers.tokenize import tokenize

    if not tokenize(query):
        return ("BM25 found nothing to match: the query has only stopwords, punctuation or "
                "characters it does not index (try --mode dense or hybrid)")
    return ("no passage contains any of the query's words (BM25 matches words exactly; "
            "try --mode dense or hybrid)")
