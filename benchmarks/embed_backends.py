"""Embedding backends side by side: throughput, agreement with torch fp32, and the CPU ceiling.

    nice -n 19 python benchmarks/embed_backends.py [--passages 500] [--batch-size 32] [--runs 3]
        [--backends torch,onnx,onnx-int8,openvino,openvino-int8] [--cache-dir DIR]
        [--recall-questions 0] [--seed 0]

Passages are the first --passages of searchagent/sample/corpus.jsonl.gz (HotpotQA, shown as
"title\\ntext" like an index does); sentences are the 300 sample questions. Throughput is the
median of --runs timed runs after a warm-up, same batch size for every backend; the runs go
round-robin over the backends so each sees the same (shared, noisy) machine. Agreement:
mean/min cosine of each passage vector to torch fp32's, and overlap@10 of each question's
top-10 passages (exact inner product over the same slice) with torch fp32's.

The ceiling: FLOPs per passage from the model's shape and the real token counts, against a
measured fp32 matmul rate of this CPU (torch, same threads, a [tokens x hidden] @ [hidden x
ffn] product like the network's biggest layers).

Recall (--recall-questions N, default 0 = off): the pooled HotpotQA corpus of
benchmarks/retrieval.py (every context paragraph of its files, de-duplicated by title+text;
bench-out/retrieval/hotpot_pool.jsonl, made if absent) is ~10k passages, too many to embed per
backend on a small CPU. So N questions with supporting titles are drawn (--seed) and the
sub-pool is every pooled passage that one of them shipped (supporting + distractors). Each
backend embeds that sub-pool as an index does ("title\\ntext") and the N questions as queries
(once, untimed); exact inner-product search gives recall@{2,5,10} of the supporting paragraphs,
matched by title as retrieval.py does. A sub-pool of ~10 paragraphs per question is a much
easier haystack than the full pool: compare backends with each other, not with retrieval.py.
``--full-pool`` searches the whole pooled corpus instead (every backend embeds all ~10k
passages: minutes each) and also prints each backend's overlap@10 with torch over it.
Writes bench-out/embed_backends.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import OUT, ROOT, table  # noqa: E402
from retrievers import encoder_backends as eb  # noqa: E402
from retrievers.encoder import Encoder, passage_text  # noqa: E402

SAMPLE = ROOT / "searchagent" / "sample"
RECALL_CUTOFFS = (2, 5, 10)


def load_texts(limit: int) -> tuple[list[str], list[str]]:
    passages = []
    with gzip.open(SAMPLE / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            passages.append(passage_text(row.get("title", ""), row["text"]))
            if len(passages) == limit:
                break
    questions = [json.loads(line)["question"]
                 for line in open(SAMPLE / "questions.jsonl", encoding="utf-8")]
    return passages, questions


def recall_pool(count: int, seed: int, full: bool = False) -> tuple[list[dict], list]:
    """The pooled passages shipped with ``count`` sampled HotpotQA questions (``full``: every
    pooled passage), and the questions."""
    from benchmarks.common import SHARED_DATA
    from benchmarks.retrieval import HOTPOT_FILES
    from eval.loaders import load_dataset
    from eval.pooling import pool_corpus

    paths = [SHARED_DATA / "hotpotqa" / f for f in HOTPOT_FILES]
    corpus = OUT / "retrieval" / "hotpot_pool.jsonl"    # the pool benchmarks/retrieval.py uses
    if not corpus.exists():
        stats = pool_corpus({"hotpotqa": [str(p) for p in paths]}, corpus)
        print(f"pooled {stats['passages']} passages from {stats['paragraphs']} paragraphs")
    examples = {}
    for path in paths:                                   # as retrieval.py picks its questions
        for example in load_dataset("hotpotqa", str(path)):
            examples.setdefault(example.id, example)
    candidates = [e for e in examples.values() if e.supporting_titles]
    chosen = random.Random(seed).sample(candidates, min(count, len(candidates)))
    wanted = {f"hotpotqa/{e.id}" for e in chosen}
    with open(corpus, encoding="utf-8") as handle:
        rows = [row for row in map(json.loads, handle)
                if full or wanted.intersection(row["sources"])]
    return rows, chosen


def recall_at(titles: list[str], query_vectors: np.ndarray, passage_vectors: np.ndarray,
              questions: list) -> dict[int, float]:
    """Mean recall@k of the supporting titles, exact inner-product search over the sub-pool."""
    top = np.argsort(-(query_vectors @ passage_vectors.T), axis=1)[:, :max(RECALL_CUTOFFS)]
    recalls = {k: 0.0 for k in RECALL_CUTOFFS}
    for example, ranked in zip(questions, top):
        gold = set(example.supporting_titles)
        for k in RECALL_CUTOFFS:
            recalls[k] += len(gold & {titles[i] for i in ranked[:k]}) / len(gold)
    return {k: value / len(questions) for k, value in recalls.items()}


def timed(encoder: Encoder, texts: list[str], batch: int) -> tuple[float, np.ndarray]:
    """Texts per second of one run, and its vectors."""
    started = time.perf_counter()
    vectors = encoder.encode(texts, batch)
    return len(texts) / (time.perf_counter() - started), vectors


def flops_per_text(encoder: Encoder, texts: list[str]) -> tuple[float, float]:
    """Forward FLOPs per text (2 per multiply-add) from the real token counts, and mean tokens."""
    config = encoder.model[0].model.config
    hidden, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    limit = encoder.model.max_seq_length
    ids = encoder.model.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    tokens = np.array([len(row) for row in ids])
    linear = 2 * (4 * hidden * hidden + 2 * hidden * ffn)          # Q, K, V, out; FFN up, down
    per_text = layers * (tokens * linear + 2 * 2 * tokens ** 2 * hidden)  # + QK^T and AV
    return float(per_text.mean()), float(tokens.mean())


def matmul_gflops(rows: int, hidden: int, ffn: int, seconds: float = 2.0) -> float:
    """Measured fp32 GFLOP/s of torch matmul with the encoder's shapes and thread count."""
    import torch

    a, b = torch.randn(rows, hidden), torch.randn(hidden, ffn)
    for _ in range(3):
        a @ b
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        a @ b
        rates.append(2 * rows * hidden * ffn / (time.perf_counter() - started) / 1e9)
    return float(np.median(rates))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default=",".join(eb.BACKENDS))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--recall-questions", type=int, default=0,
                        help="HotpotQA questions whose context paragraphs form the recall pool "
                             "(0 = no recall)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed for --recall-questions")
    parser.add_argument("--full-pool", action="store_true",
                        help="search the whole pooled corpus (~10k passages), not the sub-pool")
    args = parser.parse_args()
    import torch

    passages, questions = load_texts(args.passages)
    pool, recall_questions = recall_pool(args.recall_questions, args.seed, args.full_pool) \
        if args.recall_questions > 0 else ([], [])
    encoders, loads = {}, {}
    for backend in dict.fromkeys(["torch", *args.backends.split(",")]):
        if backend and eb.missing_packages(backend):
            print(f"{backend}: skipped, needs {', '.join(eb.missing_packages(backend))}")
        elif backend:
            started = time.perf_counter()
            encoders[backend] = Encoder(backend=backend, device="cpu", cache_dir=args.cache_dir)
            loads[backend] = time.perf_counter() - started
            encoders[backend].encode(passages[:args.batch_size] + questions[:args.batch_size],
                                     args.batch_size)                       # warm-up
    fpp, mean_tokens = flops_per_text(encoders["torch"], passages)
    config = encoders["torch"].model[0].model.config
    shape = (args.batch_size * int(mean_tokens), config.hidden_size, config.intermediate_size)
    # Round-robin runs: every backend sees the same (shared, noisy) machine in each round.
    rates = {name: {"passages": [], "sentences": []} for name in encoders}
    vectors, peaks = {}, []
    for run in range(args.runs):
        peaks.append(matmul_gflops(*shape, seconds=1.0))
        for name, encoder in encoders.items():
            rate, passage_vectors = timed(encoder, passages, args.batch_size)
            rates[name]["passages"].append(rate)
            rate, question_vectors = timed(encoder, questions, args.batch_size)
            rates[name]["sentences"].append(rate)
            vectors.setdefault(name, (passage_vectors, question_vectors))
        print(f"run {run + 1}: " + ", ".join(f"{n} {r['passages'][-1]:.1f}/{r['sentences'][-1]:.1f}"
                                             for n, r in rates.items()), flush=True)
    peak = float(np.median(peaks))
    recalls, pool_top = {}, {}
    if pool:        # once per backend, untimed: an index's passages and the questions as queries
        pool_texts = [passage_text(row["title"], row["text"]) for row in pool]
        query_texts = [e.question for e in recall_questions]
        for name, encoder in encoders.items():
            started = time.perf_counter()
            pool_vectors = encoder.encode(pool_texts, args.batch_size)
            query_vectors = encoder.encode(query_texts, args.batch_size)
            recalls[name] = recall_at([row["title"] for row in pool], query_vectors,
                                      pool_vectors, recall_questions)
            pool_top[name] = np.argsort(-(query_vectors @ pool_vectors.T), axis=1)[:, :10]
            overlap = np.mean([len(set(a) & set(b)) / 10
                               for a, b in zip(pool_top[name], pool_top["torch"])])
            print(f"recall {name}: " + ", ".join(f"@{k} {v:.3f}" for k, v in recalls[name].items())
                  + f", overlap@10 with torch over the pool {overlap:.3f}"
                  + f" ({time.perf_counter() - started:.0f} s)", flush=True)
    ref_passages, ref_queries = vectors["torch"]
    ref_top = np.argsort(-(ref_queries @ ref_passages.T), axis=1)[:, :10]
    results, rows = {}, []
    for name, (passage_vectors, question_vectors) in vectors.items():
        cosines = np.sum(passage_vectors * ref_passages, axis=1)
        top = np.argsort(-(question_vectors @ passage_vectors.T), axis=1)[:, :10]
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top)]))
        passage_rate = float(np.median(rates[name]["passages"]))
        results[name] = {
            "passages_per_s": passage_rate,
            "sentences_per_s": float(np.median(rates[name]["sentences"])),
            "runs": rates[name], "mean_cosine": float(cosines.mean()),
            "min_cosine": float(cosines.min()),
            "query_mean_cosine": float(np.sum(question_vectors * ref_queries, axis=1).mean()),
            "overlap_at_10": overlap, "load_s": loads[name], "gflops": passage_rate * fpp / 1e9,
            "model_file": encoders[name].model_file}
        r = results[name]
        rows.append([name, r["passages_per_s"], r["sentences_per_s"], r["mean_cosine"],
                     r["min_cosine"], overlap, r["gflops"], f"{100 * r['gflops'] / peak:.0f}%"])
        if pool:
            r["recall"] = {str(k): v for k, v in recalls[name].items()}
            rows[-1] += [recalls[name][k] for k in RECALL_CUTOFFS]
    print(f"\n{len(passages)} passages (mean {mean_tokens:.0f} tokens), {len(questions)} questions,"
          f" batch {args.batch_size}, median of {args.runs} round-robin runs, "
          f"{torch.get_num_threads()} threads")
    if pool:
        print(f"recall: {len(recall_questions)} HotpotQA questions (seed {args.seed}), "
              + (f"the whole pooled corpus ({len(pool)} paragraphs)" if args.full_pool else
                 f"pool of their {len(pool)} context paragraphs") + ", exact inner product")
    print(table(["backend", "passages/s", "sentences/s", "mean cos", "min cos", "overlap@10",
                 "GFLOP/s", "of fp32 matmul"]
                + [f"recall@{k}" for k in RECALL_CUTOFFS if pool], rows))
    print(f"\nFLOPs per passage: {fpp / 1e9:.3f} GFLOP; fp32 matmul {shape[0]}x{shape[1]}x{shape[2]}:"
          f" {peak:.1f} GFLOP/s (runs: {', '.join(f'{p:.0f}' for p in peaks)}) -> fp32 ceiling"
          f" ~{peak * 1e9 / fpp:.0f} passages/s; int8 kernels can go past it")
    OUT.mkdir(exist_ok=True)
    report = {"passages": len(passages), "questions": len(questions), "batch_size": args.batch_size,
              "runs": args.runs, "mean_tokens": mean_tokens, "flops_per_passage": fpp,
              "matmul_gflops_fp32": peak, "matmul_runs": peaks, "threads": torch.get_num_threads(),
              "recall_questions": len(recall_questions), "recall_pool": len(pool),
              "seed": args.seed, "results": results}
    (OUT / "embed_backends.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
