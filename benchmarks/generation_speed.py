"""Generation speed on the same prompts: llama.cpp vs transformers (same SmolLM2 GGUF).

    python benchmarks/generation_speed.py [--repeats 3] [--new-tokens 48] [--batch 4] [--threads 1]

Two prompts, both greedy: the prompt-processing prompt is the single-retrieval reading
prompt over five bundled sample passages (~1,150 tokens) with one generated token; the
decoding prompt is a short request for a long story, generating ``--new-tokens`` tokens.
Rows per backend: prompt processing from a cold context (llama.cpp also with the prompt's
KV prefix reused), decoding one request, and decoding a batch of ``--batch`` requests
(throughput = all generated tokens / wall time).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import table  # noqa: E402
from searchagent import prompts  # noqa: E402
from searchagent.generators.base import GenRequest  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "searchagent" / "sample"


def sample_prompt() -> list[dict]:
    with open(SAMPLE / "questions.jsonl", encoding="utf-8") as handle:
        question = json.loads(handle.readline())
    with gzip.open(SAMPLE / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        passages = [json.loads(next(handle)) for _ in range(5)]
    return prompts.reading_messages(question["question"],
                                    [(p["title"], p["text"]) for p in passages])


def measure(label: str, generator, requests: list[GenRequest], repeats: int,
            before=None) -> list:
    walls, results = [], []
    for _ in range(repeats):
        if before:
            before()
        start = time.perf_counter()
        results = generator.generate(requests)
        walls.append(time.perf_counter() - start)
    wall = statistics.median(walls)
    completion = sum(r.completion_tokens for r in results)
    computed = sum(r.prompt_tokens - r.cached_tokens for r in results)
    return [label, len(requests), results[0].prompt_tokens, results[0].cached_tokens,
            completion, 1000 * wall, computed / wall, completion / wall]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", default="llama_cpp,transformers")
    args = parser.parse_args()
    read = [GenRequest(messages=sample_prompt(), max_new_tokens=1)]
    story = [GenRequest(messages=[{"role": "system", "content": "You are a storyteller."},
                                  {"role": "user", "content": "Write a long story about a "
                                   "lighthouse keeper and a storm."}],
                        max_new_tokens=args.new_tokens)]
    rows = []
    if "llama_cpp" in args.backends:
        from searchagent.generators.llama_cpp import LlamaCppGenerator

        llama = LlamaCppGenerator(threads=args.threads)
        llama.generate(story)                                # warm-up
        rows.append(measure("llama.cpp: prompt, cold", llama, read, args.repeats,
                            before=lambda: llama.llm.reset()))
        rows.append(measure("llama.cpp: prompt, KV prefix reused", llama, read, args.repeats))
        rows.append(measure("llama.cpp: decode, 1 request", llama, story, args.repeats,
                            before=lambda: llama.llm.reset()))
        rows.append(measure(f"llama.cpp: decode, {args.batch} requests (sequential)", llama,
                            story * args.batch, 1, before=lambda: llama.llm.reset()))
        del llama
    if "transformers" in args.backends:
        from searchagent.generators.hf_transformers import TransformersGenerator

        hf = TransformersGenerator(threads=args.threads, batch_size=args.batch)
        hf.generate(story)
        rows.append(measure(f"transformers ({hf.device}): prompt", hf, read, args.repeats))
        rows.append(measure(f"transformers ({hf.device}): decode, 1 request", hf, story,
                            args.repeats))
        rows.append(measure(f"transformers ({hf.device}): decode, batch of {args.batch}", hf,
                            story * args.batch, 1))
    print(table(["backend: phase", "requests", "prompt tok", "cached tok", "generated tok",
                 "median ms", "prompt tok/s", "generated tok/s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
