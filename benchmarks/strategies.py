"""The three arms on HotpotQA over a pooled corpus: EM, F1, supporting-passage recall,
retrieval calls, tokens and seconds per question, with the default model.

    python benchmarks/strategies.py --index bench-out/hotpotqa-pooled-index -n 100
    python benchmarks/strategies.py --index ... -n 50 --strategies multi \
        --hop-queries question,step,question+step,bridge

The pooled corpus (every context paragraph of the RPT dev + train and IRCoT
dev_subsampled files, de-duplicated by title + text) is made with ``eval.pooling`` and
indexed with ``searchagent index build`` (see BENCHMARKS.md). Questions are the first n of
the RPT ``dev.jsonl``. Per-question rows go to ``bench-out/strategies/*.jsonl`` and a
rerun resumes from them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import OUT, SHARED_DATA, table  # noqa: E402
from eval.loaders import load_dataset  # noqa: E402
from eval.metrics import exact_match, f1_score, passage_recall  # noqa: E402
from retrievers.searcher import Searcher  # noqa: E402
from searchagent.config import load_config  # noqa: E402
from searchagent.generators.factory import make_generator  # noqa: E402
from searchagent.strategies.factory import make_strategy  # noqa: E402

DEV = SHARED_DATA / "hotpotqa" / "megagonlabs__RPT" / "dev.jsonl"


def run_system(label: str, strategy, examples, out: Path, summarize_only: bool = False
               ) -> list[dict]:
    """Answer every example (resuming from ``out``) and return the per-question rows."""
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[row["id"]] = row
    if summarize_only:
        return [done[e.id] for e in examples if e.id in done]
    with out.open("a", encoding="utf-8") as handle:
        for example in tqdm(examples, desc=label, unit="q"):
            if example.id in done:
                continue
            answer = strategy.run(example.question, {"session": example.id})
            titles = [p["title"] for p in answer.passages]
            row = {"id": example.id, "answer": answer.answer, "gold": example.answers,
                   "em": exact_match(answer.answer, example.answers),
                   "f1": f1_score(answer.answer, example.answers),
                   "recall": passage_recall(titles, example.supporting_titles),
                   "passages": len(titles), "retrieval_calls": answer.retrieval_calls,
                   "hops": answer.hops, "prompt_tokens": answer.prompt_tokens,
                   "completion_tokens": answer.completion_tokens,
                   "cached_tokens": sum(s.detail.get("cached_tokens", 0) for s in answer.trace),
                   "seconds": answer.seconds, "confidence": answer.confidence}
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            done[example.id] = row
    return [done[e.id] for e in examples]


def summary(label: str, rows: list[dict]) -> list:
    mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
    recall = [r["recall"] for r in rows if r["recall"] == r["recall"]]
    return [label, len(rows), 100 * mean("em"), 100 * mean("f1"),
            100 * statistics.fmean(recall) if recall else float("nan"), mean("passages"),
            mean("retrieval_calls"), mean("hops"), mean("prompt_tokens"),
            mean("completion_tokens"), mean("cached_tokens"),
            statistics.median(r["seconds"] for r in rows), mean("seconds")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default=str(OUT / "hotpotqa-pooled-index"))
    parser.add_argument("--questions-file", default=str(DEV))
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--strategies", default="parametric,single,multi")
    parser.add_argument("--hop-queries", default="", help="multi only: compare these "
                        "next-hop query modes (question,step,question+step,bridge)")
    parser.add_argument("--config")
    parser.add_argument("--tag", default="", help="suffix for the per-question files")
    parser.add_argument("--summarize-only", action="store_true", help="no new questions: "
                        "summarize the rows already in the per-question files")
    parser.add_argument("--retrieval-only", action="store_true", help="no generator: "
                        "single retrieves once, multi runs every hop with queries built "
                        "without reasoning steps (recall and retrieval cost only)")
    args = parser.parse_args()

    config = load_config(args.config)
    examples = load_dataset("hotpotqa", args.questions_file)[:args.n]
    searcher = Searcher(args.index, config)
    generator = (None if args.retrieval_only or args.summarize_only
                 else make_generator(config.generator))
    folder = OUT / "strategies"
    folder.mkdir(parents=True, exist_ok=True)
    systems = []
    for name in [s for s in args.strategies.split(",") if s]:
        modes = [m for m in args.hop_queries.split(",") if m] if name == "multi" else []
        for mode in modes or [None]:
            cfg = config if mode is None else config.updated({"agent": {"hop_query": mode}},
                                                             "--hop-queries")
            label = name if mode is None else f"multi[{mode}]"
            label += " (retrieval only)" if args.retrieval_only else ""
            systems.append((label, make_strategy(name, searcher, generator, cfg)))
    results = []
    for label, strategy in systems:
        stem = label.replace("[", "_").replace("]", "").replace(" (retrieval only)", "-ro")
        out = folder / f"{stem}{args.tag}-{args.n}.jsonl"
        rows = run_system(label, strategy, examples, out, args.summarize_only)
        if rows:
            results.append(summary(label, rows))
    print(f"\nfirst {len(examples)} questions (rows: n) from {args.questions_file}; index {args.index}; "
          f"generator {config.generator.backend}:{config.generator.model}\n")
    print(table(["system", "n", "EM", "F1", "support recall %", "passages", "retrieval calls",
                 "hops", "prompt tok", "completion tok", "KV-reused tok", "median s",
                 "mean s"], results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
