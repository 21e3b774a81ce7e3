"""Does batching several sequences into one llama.cpp decode pay on this CPU?

    .venv/bin/python -m benchmarks.llama_batching --threads 1 --batches 1,2,4,8

The serving scheduler could only beat one-request-at-a-time by a large factor if the
generator did more tokens per second when it works on several sessions at once. This
measures exactly that with llama.cpp's multi-sequence API (one context, ``n_seq_max``
sequences in a unified KV cache, one ``llama_decode`` per step for all of them), on the
default GGUF model: for n sequences, the prefill of n prompts in one batch and n greedy
decode streams stepped together, against the same work done one sequence at a time.
Token ids are drawn at random (the cost of a forward pass does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from searchagent.models import gguf_path


class MultiSequenceContext:
    """A llama.cpp context with ``n_seq`` sequences sharing one KV cache."""

    def __init__(self, model_path: str, n_seq: int, n_ctx: int, threads: int):
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(model_path.encode(),
                                                  L.llama_model_default_params())
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_ctx, 512
        params.n_seq_max, params.kv_unified, params.no_perf = n_seq, True, True
        params.n_threads = params.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, params)
        self.memory = L.llama_get_memory(self.ctx)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(n_ctx, 0, n_seq)
        self.capacity = n_ctx

    def decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One forward pass over (token, position, sequence, wants_logits) items."""
        for lo in range(0, len(items), self.capacity):
            chunk = items[lo:lo + self.capacity]
            self.batch.n_tokens = len(chunk)
            for i, (token, pos, seq, logits) in enumerate(chunk):
                self.batch.token[i], self.batch.pos[i] = token, pos
                self.batch.n_seq_id[i], self.batch.seq_id[i][0] = 1, seq
                self.batch.logits[i] = logits
            if self.L.llama_decode(self.ctx, self.batch) != 0:
                raise RuntimeError("llama_decode failed")

    def argmax(self, output: int, n_outputs: int) -> int:
        """Greedy token from the ``output``-th of the last pass's ``n_outputs`` logits rows."""
        logits = self.L.llama_get_logits_ith(self.ctx, output - n_outputs)
        return int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())

    def clear(self) -> None:
        self.L.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


def run(ctx: MultiSequenceContext, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """Prefill all prompts in one batch, then step every sequence together: (prefill s, decode s)."""
    ctx.clear()
    start = time.perf_counter()
    items = [(t, pos, seq, pos == len(p) - 1) for seq, p in enumerate(prompts)
             for pos, t in enumerate(p)]
    ctx.decode(items)
    prefill = time.perf_counter() - start
    n = len(prompts)
    nxt = [ctx.argmax(i, n) for i in range(n)]
    start = time.perf_counter()
    for step in range(new_tokens):
        ctx.decode([(nxt[seq], len(p) + step, seq, True) for seq, p in enumerate(prompts)])
        nxt = [ctx.argmax(i, n) for i in range(n)]
    return prefill, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--prompt-tokens", type=int, default=400)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    parser.add_argument("--out", default="benchmarks/results/llama_batching.json")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.batches.split(",")]
    n_ctx = max(sizes) * (args.prompt_tokens + args.new_tokens) + 64
    ctx = MultiSequenceContext(gguf_path("default"), max(sizes), n_ctx, args.threads)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(200, 40_000, args.prompt_tokens).tolist() for _ in range(max(sizes))]
    rows = []
    try:
        one = [run(ctx, prompts[:1], args.new_tokens) for _ in range(args.repeats)]
        one_prefill = float(np.median([p for p, _ in one]))
        one_decode = float(np.median([d for _, d in one]))
        for n in sizes:
            timed = [run(ctx, prompts[:n], args.new_tokens) for _ in range(args.repeats)]
            prefill = float(np.median([p for p, _ in timed]))
            decode = float(np.median([d for _, d in timed]))
            rows.append({"sequences": n, "prefill_s": prefill, "decode_s": decode,
                         "prefill_tok_s": n * args.prompt_tokens / prefill,
                         "decode_tok_s": n * args.new_tokens / decode,
                         "speedup_vs_one_at_a_time":
                             n * (one_prefill + one_decode) / (prefill + decode)})
    finally:
        ctx.close()
    print(f"llama.cpp multi-sequence batching, {args.threads} thread(s), prompts of "
          f"{args.prompt_tokens} tokens + {args.new_tokens} new, median of {args.repeats}\n")
    print("| sequences | prefill s | decode s | prefill tok/s | decode tok/s | "
          "speedup vs one at a time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sequences']} | {r['prefill_s']:.2f} | {r['decode_s']:.2f} | "
              f"{r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.0f} | "
              f"{r['speedup_vs_one_at_a_time']:.2f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
